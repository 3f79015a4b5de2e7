"""The real server on a free port, called with the official openai client: models, answers equal to the engine's
in every mode, streams, stop strings, every error, a disconnect that cancels, concurrent requests."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import openai
import pytest

from fusers.chat import user
from fusers.engine import Engine, Mode
from fusers.errors import ServeError
from fusers.generation import GenerationSettings
from fusers.serve.server import ApiServer

QUESTION = user("What is the national animal of Mavar?")
MAX_TOKENS = 24


def _engine_answer(demo_pair, mode, settings=None):
    return Engine(demo_pair).answer(mode, QUESTION, settings or GenerationSettings(max_new_tokens=MAX_TOKENS))


def test_models_are_the_answer_modes_of_the_pair(client, demo_pair):
    listed = client.models.list().data
    assert [m.id for m in listed] == [f"demo/{mode.value}" for mode in Mode]
    for model, mode in zip(listed, Mode):
        assert model.mode == mode.value and model.label == mode.label
        assert model.details == demo_pair.describe()
        assert model.receiver == demo_pair.receiver.name and model.sharer == demo_pair.sharer.name
    assert client.models.retrieve("demo/fusion").id == "demo/fusion"


@pytest.mark.parametrize("mode", list(Mode))
def test_a_greedy_completion_equals_the_engines_answer_token_for_token(client, demo_pair, mode):
    expected = _engine_answer(demo_pair, mode)
    got = client.chat.completions.create(model=f"demo/{mode.value}", messages=QUESTION, max_tokens=MAX_TOKENS,
                                         temperature=0)
    choice = got.choices[0]
    assert choice.message.content == expected.text and expected.text
    assert got.stats["token_ids"] == expected.token_ids
    assert choice.finish_reason == {"eos": "stop", "length": "length"}[expected.finish_reason]
    assert got.usage.completion_tokens == len(expected.token_ids)
    assert got.usage.prompt_tokens == expected.timing.tokens_in
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    timing = got.stats["timing"]
    assert 0 < got.stats["time_to_first_token"] == timing["ttft"] <= timing["total"]
    assert [p["name"] for p in timing["phases"]] == [p.name for p in expected.timing.phases]
    assert (got.stats.get("hint") == expected.hint) and (mode.writes_hint == ("hint" in got.stats))


@pytest.mark.parametrize("mode", list(Mode))
def test_a_streams_chunks_concatenate_to_the_same_text(client, demo_pair, mode):
    expected = _engine_answer(demo_pair, mode)
    chunks = list(client.chat.completions.create(model=f"demo/{mode.value}", messages=QUESTION, stream=True,
                                                 max_completion_tokens=MAX_TOKENS, temperature=0,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # streamed, not sent at once
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == {"eos": "stop", "length": "length"}[expected.finish_reason]
    assert last.stats["token_ids"] == expected.token_ids
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(expected.token_ids)
    assert len({c.id for c in chunks}) == 1


def test_the_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": "demo/fusion", "messages": QUESTION, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_sampling_follows_temperature_top_p_and_seed(client, demo_pair):
    settings = GenerationSettings(max_new_tokens=MAX_TOKENS, do_sample=True, temperature=1.5, top_p=0.9, seed=7)
    expected = _engine_answer(demo_pair, Mode.FUSION, settings)
    asked = dict(model="demo/fusion", messages=QUESTION, max_tokens=MAX_TOKENS, temperature=1.5, top_p=0.9, seed=7)
    first, again = (client.chat.completions.create(**asked) for _ in range(2))
    assert first.stats["token_ids"] == again.stats["token_ids"] == expected.token_ids
    assert first.stats["settings"]["do_sample"] and first.stats["settings"]["seed"] == 7
    # the engine's own settings OpenAI has no name for go in the body by their names
    extra = client.chat.completions.create(model="demo/relay", messages=QUESTION, max_tokens=4,
                                           extra_body={"hint_max_new_tokens": 3, "top_k": 5})
    assert extra.stats["hint_tokens"] <= 3 and extra.stats["settings"]["top_k"] == 5


def test_a_stop_string_ends_the_answer_before_it(client, demo_pair):
    full = _engine_answer(demo_pair, Mode.FUSION).text
    assert " is " in full
    got = client.chat.completions.create(model="demo/fusion", messages=QUESTION, max_tokens=MAX_TOKENS, stop=" is ")
    assert got.choices[0].message.content == full[:full.index(" is ")]
    assert got.choices[0].finish_reason == "stop"
    assert got.stats["stop_reason"] == "cancelled"  # the engine stopped at the next token
    assert len(got.stats["token_ids"]) < len(_engine_answer(demo_pair, Mode.FUSION).token_ids)
    streamed = client.chat.completions.create(model="demo/fusion", messages=QUESTION, max_tokens=MAX_TOKENS,
                                              stop=["zzz", " is "], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[:full.index(" is ")]


@pytest.mark.parametrize("asked, param, said", [
    ({"temperature": "hot"}, "temperature", "temperature must be a number"),
    ({"max_tokens": 0}, "max_tokens", "max_tokens must be a positive integer"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens", "max_completion_tokens must be a positive integer"),
    ({"top_p": 2}, "top_p", "top_p must be in (0, 1]"),
    ({"seed": -1}, "seed", "seed must be an integer"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"n": 2}, "n", "n=2 is not supported"),
    ({"logprobs": True}, "logprobs", "not supported"),
    ({"messages": []}, "messages", "messages must be a non-empty list"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "role 'tool'"),
    ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages", "must end with a user message"),
    ({"stream": "yes"}, "stream", "stream must be true or false"),
])
def test_bad_parameters_are_400_naming_the_field(server, asked, param, said):
    body = {"model": "demo/fusion", "messages": QUESTION, **asked}
    response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and said in error["message"] and error["type"] == "invalid_request_error"


def test_the_openai_client_sees_each_error_with_its_status(client, demo_pair):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="demo/telepathy", messages=QUESTION)
    assert unknown.value.status_code == 404 and "demo/fusion" in unknown.value.message
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="demo/receiver", messages=QUESTION, temperature=-1)
    assert bad.value.param == "temperature"
    context = demo_pair.receiver.context_length
    for mode in Mode:
        with pytest.raises(openai.BadRequestError) as long:
            client.chat.completions.create(model=f"demo/{mode.value}", messages=user("owl " * context))
        assert long.value.code == "context_length_exceeded" and f"context holds {context}" in long.value.message
        assert long.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as long_stream:  # before its first token a stream fails as a whole
        list(client.chat.completions.create(model="demo/fusion", messages=user("owl " * context), stream=True))
    assert long_stream.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.get("/nowhere", cast_to=object)
    response = httpx.post(f"{client.base_url}chat/completions", content=b"{not json", timeout=60)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_a_wrong_or_missing_api_key_is_401(demo_pair):
    from openai import OpenAI

    server = ApiServer(Engine(demo_pair), "demo", port=0, api_key="s3cret").start()
    try:
        with OpenAI(base_url=server.url, api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as denied:
                wrong.models.list()
            assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                wrong.chat.completions.create(model="demo/fusion", messages=QUESTION)
        assert httpx.get(f"{server.url}/models").status_code == 401
        with OpenAI(base_url=server.url, api_key="s3cret", max_retries=0) as right:
            assert len(right.models.list().data) == len(Mode)
            assert right.chat.completions.create(model="demo/fusion", messages=QUESTION, max_tokens=4).choices
    finally:
        server.close()
        assert server.join(30)


def test_a_pair_without_a_fuser_has_no_fusion_model(demo_pair):
    from fusers.pair import Pair
    from openai import OpenAI

    server = ApiServer(Engine(Pair(demo_pair.receiver, demo_pair.sharer, None)), port=0).start()
    try:
        with OpenAI(base_url=server.url, api_key="none", max_retries=0) as client:
            ids = [m.id for m in client.models.list().data]
            assert ids == [f"{server.name}/{m.value}" for m in (Mode.RECEIVER, Mode.SHARER, Mode.RELAY)]
            for mode in ("fusion", "hybrid"):
                with pytest.raises(openai.NotFoundError, match="needs a fuser"):
                    client.chat.completions.create(model=f"{server.name}/{mode}", messages=QUESTION)
    finally:
        server.close()
        assert server.join(30)


def test_a_client_that_disconnects_mid_stream_cancels_its_answer(server, served, demo_pair):
    before = len(served.answers)
    body = {"model": "demo/fusion", "messages": QUESTION, "max_tokens": 5000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=120) as response:
        contents = []
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                contents.append(line)
            if len(contents) >= 3:
                break  # leaving the block closes the connection mid-stream
    model, answer = served.wait_for(before + 1)[before]
    assert model == "demo/fusion" and answer.finish_reason == "cancelled"
    assert 3 <= len(answer.token_ids) < demo_pair.receiver.context_length - answer.timing.tokens_in


def test_a_client_that_gives_up_on_an_answer_cancels_it(server, served, demo_pair):
    before = len(served.answers)
    body = {"model": "demo/receiver", "messages": QUESTION, "max_tokens": 5000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/chat/completions", json=body, timeout=httpx.Timeout(60, read=0.2))
    model, answer = served.wait_for(before + 1)[before]
    assert model == "demo/receiver" and answer.finish_reason == "cancelled"
    assert len(answer.token_ids) < demo_pair.receiver.context_length - answer.timing.tokens_in


def test_concurrent_requests_are_queued_and_both_complete(client, demo_pair, served):
    modes = [Mode.FUSION, Mode.RELAY, Mode.SHARER]
    expected = {mode: _engine_answer(demo_pair, mode).text for mode in modes}
    got: dict[Mode, str] = {}

    def ask(mode: Mode) -> None:
        reply = client.chat.completions.create(model=f"demo/{mode.value}", messages=QUESTION,
                                               max_tokens=MAX_TOKENS)
        got[mode] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(mode,)) for mode in modes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert got == expected


def test_another_host_needs_an_api_key_and_a_taken_port_is_named(demo_pair):
    with pytest.raises(ServeError, match="give an API key"):
        ApiServer(Engine(demo_pair), "demo", host="0.0.0.0", port=0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"127.0.0.1:{port}.*--port"):
            ApiServer(Engine(demo_pair), "demo", port=port)


def test_stopping_the_server_ends_a_running_stream_with_an_error(demo_pair):
    server = ApiServer(Engine(demo_pair), "demo", port=0).start()
    body = {"model": "demo/fusion", "messages": QUESTION, "max_tokens": 5000, "ignore_eos": True, "stream": True}
    events = []
    try:
        with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line:
                    events.append(line)
                if len(events) == 3:
                    server.close()  # from another thread than the server's, as the app's Stop does
    finally:
        server.close()
        assert server.join(30)
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][len("data: "):])["error"]
    assert "server is stopping" in error["message"] and error["code"] == "unavailable"
    assert not any('"finish_reason":"length"' in e for e in events)  # not mistaken for an answer that ran out


def test_a_team_serves_every_sharers_own_modes_and_answers_as_the_engine():
    """The team showcase served: one model per mode of fusers.team.mode_names (fusion:A, sharer:B, ...), named
    after the team folder, each answering as the engine answers that mode."""
    from openai import OpenAI

    from fusers.demo.team import team_root
    from fusers.pair import Placement, load_pair
    from fusers.team import mode_names

    team = load_pair(None, None, team_root(), defaults=Placement("cpu"))
    server = ApiServer(Engine(team), port=0).start()
    question = user("What language do people speak in Mavar, and who founded Mavar?")
    try:
        assert server.name == "team"
        with OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as client:
            listed = {m.id: m for m in client.models.list().data}
            assert list(listed) == [f"team/{m}" for m in mode_names(team)]
            assert {"team/fusion:A", "team/fusion:B", "team/sharer:B"} <= set(listed)
            assert listed["team/fusion"].sharers == ["A", "B"] and listed["team/fusion:B"].sharers == ["B"]
            assert list(listed["team/fusion:B"].fusers) == ["B"] and listed["team/receiver"].sharers == []
            for mode in ("fusion:A", "fusion", "relay"):
                expected = Engine(team).answer(mode, question, GenerationSettings(max_new_tokens=MAX_TOKENS))
                got = client.chat.completions.create(model=f"team/{mode}", messages=question,
                                                     max_tokens=MAX_TOKENS, temperature=0)
                assert got.stats["token_ids"] == expected.token_ids and got.stats["mode"] == mode, mode
                assert got.choices[0].message.content == expected.text
    finally:
        server.close()
        assert server.join(30)
        team.close()
