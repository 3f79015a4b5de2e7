"""OpenAI's request format into the engine's terms, without a server: what each field becomes."""

from __future__ import annotations

import re

import pytest

from fusers.engine import Mode
from fusers.generation import GenerationSettings
from fusers.serve.api import EXTRA_SETTINGS, ApiError, StopFilter, parse_chat

MODES = [m.value for m in Mode]  # as fusers.team.mode_names lists a pair's
DEFAULTS = GenerationSettings(max_new_tokens=100)


def parse(**body):
    return parse_chat({"model": "p/fusion", "messages": [{"role": "user", "content": "Hi"}], **body}, "p", MODES,
                      DEFAULTS)


def test_openai_names_map_onto_the_engines_settings():
    assert parse().settings == DEFAULTS  # nothing given: the server's defaults
    assert parse(max_tokens=7).settings.max_new_tokens == 7
    assert parse(max_tokens=7, max_completion_tokens=9).settings.max_new_tokens == 9  # the newer name wins
    sampled = parse(temperature=0.5, top_p=0.5, seed=3).settings
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.seed) == (True, 0.5, 0.5, 3)
    assert parse(temperature=0).settings.do_sample is False
    assert parse(top_k=4, hint_max_new_tokens=5, thinking=True).settings.top_k == 4
    assert set(EXTRA_SETTINGS) == {"top_k", "hint_max_new_tokens", "ignore_eos", "thinking"}


def test_messages_take_text_parts_and_the_developer_role():
    request = parse(messages=[{"role": "developer", "content": "Be brief."},
                              {"role": "user", "content": [{"type": "text", "text": "Hel"},
                                                           {"type": "text", "text": "lo"}]}])
    assert request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    with pytest.raises(ApiError, match="only text parts") as image:
        parse(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert image.value.status == 400 and image.value.param == "messages"


def test_the_model_names_a_mode_of_this_pair():
    assert parse(model="p/relay").mode == "relay"
    for wrong in ("q/relay", "p/Relay", "relay"):
        with pytest.raises(ApiError) as unknown:
            parse(model=wrong)
        assert unknown.value.status == 404 and unknown.value.code == "model_not_found"
    with pytest.raises(ApiError) as missing:
        parse_chat({"messages": []}, "p", MODES, DEFAULTS)
    assert missing.value.status == 400 and missing.value.param == "model"


def test_harmless_values_of_unsupported_parameters_pass():
    parse(n=1, logprobs=False, frequency_penalty=0, presence_penalty=0.0, tools=[], tool_choice="none",
          response_format={"type": "text"}, user="me", metadata={"a": "b"})
    with pytest.raises(ApiError) as penalty:
        parse(presence_penalty=0.5)
    assert penalty.value.param == "presence_penalty"


@pytest.mark.parametrize("deltas, stops, sent, flushed, hit", [
    (["The owl", " is", " wise"], [" is"], ["The owl", "", ""], "", True),
    (["a\n", "\nb"], ["\n\n"], ["a", ""], "", True),  # the stop string spans two tokens: held, never sent
    (["a\n", "b"], ["\n\n"], ["a", "\nb"], "", False),  # held, then let through
    (["a\n"], ["\n\n"], ["a"], "\n", False),  # held to the end: no stop string came, so it is answer
    (["abc"], [], ["abc"], "", False),
])
def test_the_stop_filter_holds_back_what_may_begin_a_stop_string(deltas, stops, sent, flushed, hit):
    stop = StopFilter(stops)
    assert [stop.push(d) for d in deltas] == sent
    assert stop.flush() == flushed and stop.hit is hit
    assert "".join(sent) + flushed == stop.cut("".join(deltas))


def test_a_mode_that_needs_a_fuser_says_so_when_the_pair_has_none():
    no_fuser = ["receiver", "sharer", "relay"]
    for mode, label in (("fusion", "cache fusion"), ("hybrid", "relay + fusion")):
        with pytest.raises(ApiError, match=re.escape(f"{label} needs a fuser, and this pair has none")) as unknown:
            parse_chat({"model": f"p/{mode}", "messages": [{"role": "user", "content": "Hi"}]}, "p", no_fuser,
                       DEFAULTS)
        assert unknown.value.status == 404
    with pytest.raises(ApiError) as relay_missing:  # a mode that needs none is simply not served
        parse_chat({"model": "p/relay", "messages": [{"role": "user", "content": "Hi"}]}, "p", ["receiver"],
                   DEFAULTS)
    assert "needs a fuser" not in str(relay_missing.value.message)


def test_a_teams_model_names_a_sharer_subset():
    team = MODES + ["sharer:A", "fusion:A", "fusion:B"]
    assert parse_chat({"model": "t/fusion:A", "messages": [{"role": "user", "content": "Hi"}]}, "t", team,
                      DEFAULTS).mode == "fusion:A"
    with pytest.raises(ApiError, match=r"'t/fusion:C' does not exist.*t/fusion:A, t/fusion:B") as unknown:
        parse_chat({"model": "t/fusion:C", "messages": [{"role": "user", "content": "Hi"}]}, "t", team, DEFAULTS)
    assert unknown.value.status == 404 and "needs a fuser" not in unknown.value.message
