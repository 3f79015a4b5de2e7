"""The five answer modes on tiny real models: equality, streaming, cancel, sampling, errors."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoConfig

from fusers import tiny
from fusers.checkpoint import save_published
from fusers.chat import encode, user
from fusers.engine import Engine, Mode, PhaseEvent, TokenEvent, stream
from fusers.errors import ModeUnavailableError, PromptError, SettingsError
from fusers.generation import GenerationSettings
from fusers.pair import ModelSpec, Pair, load_pair

GREEDY = GenerationSettings(max_new_tokens=12)
QUESTION = user("What is the capital of France?")


def _plain_generate(loaded, messages, n):
    ids = torch.tensor([encode(loaded.tokenizer, messages)])
    out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    return new[:-1] if new and new[-1] in loaded.eos_token_ids else new


@pytest.fixture(scope="module")
def closed_pair(tiny_dirs, tmp_path_factory):
    """The tiny pair with a fuser whose gates are all closed (logits <= 0)."""
    rcfg, scfg = AutoConfig.from_pretrained(tiny_dirs.receiver), AutoConfig.from_pretrained(tiny_dirs.sharer)
    fuser = tiny.random_fuser(rcfg, scfg, receiver=str(tiny_dirs.receiver), sharer=str(tiny_dirs.sharer),
                              gates_open=False)
    path = save_published(fuser, tmp_path_factory.mktemp("closed") / "fuser")
    return load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"), path)


@pytest.mark.parametrize("messages", [
    QUESTION,
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"},
     {"role": "user", "content": "Name a river."}],
])
def test_closed_gates_fusion_equals_receiver_alone_equals_generate(closed_pair, messages):
    engine = Engine(closed_pair)
    fusion = engine.answer(Mode.FUSION, messages, GREEDY)
    alone = engine.answer(Mode.RECEIVER, messages, GREEDY)
    plain = _plain_generate(closed_pair.receiver, messages, GREEDY.max_new_tokens)
    assert fusion.token_ids == alone.token_ids == plain
    assert len(plain) > 0
    assert all(not (f.key_gate_open or f.value_gate_open) for f in fusion.fusion)
    assert all(f.key_weight == 0.0 for f in fusion.fusion)


def test_open_gates_change_the_answer(tiny_pair, closed_pair):
    open_answer = Engine(tiny_pair).answer(Mode.FUSION, QUESTION, GREEDY)
    closed_answer = Engine(closed_pair).answer(Mode.FUSION, QUESTION, GREEDY)
    assert open_answer.token_ids != closed_answer.token_ids
    assert all(f.key_gate_open and 0 < f.key_weight < 1 for f in open_answer.fusion)


def test_closed_gates_hybrid_equals_text_relay(closed_pair):
    """Relay + fusion differs from text relay only by the fused cache: with every gate closed the fuser leaves the
    receiver's cache as it was, so the answer is relay's, token for token, from the same hint and prompt."""
    engine = Engine(closed_pair)
    relay = engine.answer(Mode.RELAY, QUESTION, GREEDY)
    hybrid = engine.answer(Mode.HYBRID, QUESTION, GREEDY)
    assert hybrid.hint == relay.hint and hybrid.hint_token_ids == relay.hint_token_ids and relay.hint
    assert hybrid.token_ids == relay.token_ids and len(relay.token_ids) > 0
    assert hybrid.timing.tokens_in == relay.timing.tokens_in  # the same answer prompt
    assert len(hybrid.fusion) == closed_pair.receiver.shape.layers
    assert all(not (f.key_gate_open or f.value_gate_open) for f in hybrid.fusion)


def test_open_gates_change_the_hybrid_answer_but_not_its_hint(tiny_pair):
    engine = Engine(tiny_pair)
    relay = engine.answer(Mode.RELAY, QUESTION, GREEDY)
    hybrid = engine.answer(Mode.HYBRID, QUESTION, GREEDY)
    assert hybrid.hint_token_ids == relay.hint_token_ids  # the sharer writes the same hint
    assert hybrid.token_ids != relay.token_ids  # the fused cache changes what the receiver says
    assert all(f.key_gate_open and 0 < f.key_weight < 1 for f in hybrid.fusion)


def test_every_mode_streams_its_answer_and_reports_timing(tiny_pair):
    engine = Engine(tiny_pair)
    for mode in Mode:
        events = []
        answer = engine.answer(mode, QUESTION, GREEDY, on_event=events.append)
        tokens = [e for e in events if isinstance(e, TokenEvent) and e.part == "answer"]
        assert [e.token_id for e in tokens] == answer.token_ids
        assert "".join(e.text for e in tokens) == answer.text
        t = answer.timing
        assert t.tokens_out == len(answer.token_ids) > 0 and t.tokens_in > 0
        assert 0 < t.ttft <= t.total and t.decode_tokens_per_s > 0  # the peak: the next test
        phases = [p.name for p in t.phases]
        started = [e.phase for e in events if isinstance(e, PhaseEvent) and e.end is None]
        assert started == phases  # every phase was announced live, in order
        assert all(p.start <= p.end for p in t.phases)
        if mode is Mode.FUSION:
            assert phases == ["tokenize", "sharer_prefill", "receiver_prefill", "fuse", "decode"]
            assert t.sharer_prefill > 0 and t.receiver_prefill > 0 and t.fuse > 0
            assert len(answer.fusion) == tiny_pair.receiver.shape.layers
        if mode is Mode.HYBRID:  # the hint, then both prefills over relay's answer prompt, the fuse, the decode
            assert phases == ["tokenize", "sharer_prefill", "hint", "tokenize", "sharer_prefill", "receiver_prefill",
                              "fuse", "decode"]
            assert t.prefills == "sequential" and t.fuse > 0 and t.receiver_prefill > 0
            assert len(answer.fusion) == tiny_pair.receiver.shape.layers and "fusion" in answer.to_dict()
            # Timing.sharer_prefill sums the hint's prompt and the answer prompt's
            spans = [p.end - p.start for p in t.phases if p.name == "sharer_prefill"]
            assert t.sharer_prefill == pytest.approx(sum(spans))
        if mode.writes_hint:
            hint = [e for e in events if isinstance(e, TokenEvent) and e.part == "hint"]
            assert answer.hint and "".join(e.text for e in hint) == answer.hint
            assert answer.hint_token_ids == [e.token_id for e in hint]
            assert t.hint > 0 and phases[:3] == ["tokenize", "sharer_prefill", "hint"]
            assert t.ttft > t.hint  # the receiver starts only after the hint is written
            assert "hint" in answer.to_dict()
        else:
            assert answer.hint is None and "hint" not in answer.to_dict()


def test_the_peak_memory_is_what_the_run_itself_holds(tiny_pair):
    """A run that holds 96 MiB more at one point reports a peak that much higher; the next run, which does not,
    reports a low peak again (a process-lifetime high-water mark, or a number that is always above 0, fails)."""
    extra = 96 * 2**20
    held: list[torch.Tensor] = []

    def allocate(module, args) -> None:
        if not held:
            held.append(torch.ones(extra // 4))  # written to, so its pages are resident

    engine = Engine(tiny_pair)
    settings = GenerationSettings(max_new_tokens=4)
    before = engine.answer(Mode.RECEIVER, QUESTION, settings).timing.peak_memory_bytes
    handle = tiny_pair.receiver.model.base_model.register_forward_pre_hook(allocate)
    try:
        bigger = engine.answer(Mode.RECEIVER, QUESTION, settings).timing.peak_memory_bytes
    finally:
        handle.remove()
    assert held, "the hook did not run"
    held.clear()  # a block this large is its own mapping: freeing it gives the pages back at once
    after = engine.answer(Mode.RECEIVER, QUESTION, settings).timing.peak_memory_bytes
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    assert bigger >= before + 0.9 * extra, (mib(before), mib(bigger))
    assert after <= bigger - 0.5 * extra, (mib(bigger), mib(after))


def test_relay_puts_the_hint_into_the_receivers_conversation(tiny_pair):
    answer = Engine(tiny_pair).answer(Mode.RELAY, QUESTION, GREEDY)
    with_hint = [
        {"role": "user", "content": "In one clear sentence, describe the most essential background knowledge needed "
                                    "to answer the question:\n\nWhat is the capital of France?\n\nDo NOT directly "
                                    "solve or give answer to the question."},
        {"role": "assistant", "content": answer.hint.strip()},
        {"role": "user", "content": "Based on the background, accurately answer the question:\n\n"
                                    "What is the capital of France?"},
    ]
    assert answer.token_ids == _plain_generate(tiny_pair.receiver, with_hint, GREEDY.max_new_tokens)


def test_cancel_between_tokens(tiny_pair):
    engine = Engine(tiny_pair)
    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, TokenEvent) and len(seen) == 2:
            cancel.set()
        if isinstance(event, TokenEvent):
            seen.append(event)

    for mode in (Mode.FUSION, Mode.RELAY, Mode.HYBRID):  # relay and hybrid: cancelled while the hint streams
        seen: list = []
        cancel.clear()
        answer = engine.answer(mode, QUESTION, GenerationSettings(max_new_tokens=40, ignore_eos=True),
                               on_event=on_event, cancel=cancel)
        assert answer.finish_reason == "cancelled"
        assert len(seen) <= 4
        assert answer.timing.phases[-1].end <= answer.timing.total


def test_stream_iterator_yields_events_then_answer(tiny_pair):
    items = list(stream(Engine(tiny_pair), "fusion", QUESTION, GREEDY))
    answer = items[-1]
    assert answer.mode is Mode.FUSION
    assert "".join(e.text for e in items if isinstance(e, TokenEvent)) == answer.text


def test_sampling_is_seeded_and_differs_from_greedy(tiny_pair):
    engine = Engine(tiny_pair)
    sample = GenerationSettings(max_new_tokens=16, do_sample=True, temperature=1.5, top_p=1.0, top_k=0, seed=3,
                                ignore_eos=True)
    a = engine.answer(Mode.FUSION, QUESTION, sample)
    b = engine.answer(Mode.FUSION, QUESTION, sample)
    c = engine.answer(Mode.FUSION, QUESTION, GenerationSettings(**{**sample.to_dict(), "seed": 4}))
    assert a.token_ids == b.token_ids != c.token_ids
    assert a.finish_reason == "length" and len(a.token_ids) == 16


def test_bad_prompts_are_prompt_errors(tiny_pair):
    engine = Engine(tiny_pair)
    with pytest.raises(PromptError, match="empty"):
        engine.answer(Mode.FUSION, user("   "), GREEDY)
    with pytest.raises(PromptError, match="must end with a user message"):
        engine.answer(Mode.RECEIVER, [{"role": "assistant", "content": "hi"}], GREEDY)
    long_prompt = user("capital " * 1100)  # the tiny receiver holds 1024 positions
    for mode in Mode:
        with pytest.raises(PromptError, match=r"context holds 1024; shorten the prompt"):
            engine.answer(mode, long_prompt, GREEDY)


def test_a_prompt_too_long_for_a_mode_is_refused_before_any_model_runs(tiny_pair):
    """The tiny models hold 1024 positions. Text relay's answer prompt holds the question twice and the hint: a
    question that the receiver alone answers can be too long for relay, which is known before the hint is written."""
    engine = Engine(tiny_pair)
    forwards = []
    hooks = [m.model.register_forward_pre_hook(lambda *_: forwards.append(1)) for m in (tiny_pair.receiver,
                                                                                        tiny_pair.sharer)]
    try:
        n = len(encode(tiny_pair.receiver.tokenizer, user("capital " * 600)))
        assert 600 <= n < 1024 - 12  # fits the receiver alone, with room for its answer
        events = []
        for mode in (Mode.RELAY, Mode.HYBRID):
            with pytest.raises(PromptError) as refused:
                engine.answer(mode, user("capital " * 600), GREEDY, on_event=events.append)
            said = str(refused.value)
            assert said.startswith(f"{mode.label}: the prompt with text relay's instructions is ")
            assert "tokens and the sharer's hint up to 64 more" in said
            assert "but the receiver's context holds 1024; shorten the prompt or clear the conversation, or lower the " \
                   "hint's max new tokens." in said
        assert events == [] and forwards == []  # no phase began, no model ran
        # the hint's room is counted: a prompt whose relay answer prompt fits only with a shorter hint
        short = user("capital " * 200)
        with pytest.raises(PromptError, match=r"Text relay: .* the sharer's hint up to 700 more"):
            engine.answer(Mode.RELAY, short, GenerationSettings(max_new_tokens=4, hint_max_new_tokens=700))
        assert forwards == []
        relay = engine.answer(Mode.RELAY, short, GenerationSettings(max_new_tokens=4, hint_max_new_tokens=8))
        assert relay.token_ids and forwards
        assert engine.answer(Mode.RECEIVER, user("capital " * 600), GREEDY).token_ids  # the long one, alone
    finally:
        for hook in hooks:
            hook.remove()


def test_fusion_and_hybrid_without_a_fuser_are_unavailable(tiny_pair):
    engine = Engine(Pair(tiny_pair.receiver, tiny_pair.sharer, None))
    assert engine.available_modes() == [Mode.RECEIVER, Mode.SHARER, Mode.RELAY]
    assert Engine(tiny_pair).available_modes() == list(Mode)
    with pytest.raises(ModeUnavailableError, match="Cache fusion needs a fuser"):
        engine.answer(Mode.FUSION, QUESTION, GREEDY)
    with pytest.raises(ModeUnavailableError, match=r"Relay \+ fusion needs a fuser: load one"):
        engine.answer(Mode.HYBRID, QUESTION, GREEDY)


def test_generation_settings_are_checked():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=0)
    assert GenerationSettings.from_dict({"max_new_tokens": 5}).max_new_tokens == 5
    with pytest.raises(SettingsError, match="unknown generation settings: unknown"):
        GenerationSettings.from_dict({"max_new_tokens": 5, "unknown": 1})


@pytest.fixture(scope="module")
def eos_pair():
    """A receiver whose every next token is its end-of-sequence token (from its generation config)."""
    from fusers.pair import LoadedModel

    tok = tiny.bpe_tokenizer(400)
    model = tiny.build_model(tiny.tiny_config("qwen3", len(tok), tokenizer=tok), seed=5)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # all logits 0: greedy picks token 0
    model.generation_config.eos_token_id = [tok.eos_token_id, 0]
    loaded = LoadedModel.from_model(model, tok, "receiver", "eos-receiver", torch.device("cpu"), torch.float32)
    return Pair(loaded, loaded, None)


def test_eos_from_the_generation_config_stops_and_ignore_eos_does_not(eos_pair):
    engine = Engine(eos_pair)
    stopped = engine.answer(Mode.RECEIVER, QUESTION, GenerationSettings(max_new_tokens=5))
    assert stopped.token_ids == [] and stopped.finish_reason == "eos"
    ignored = engine.answer(Mode.RECEIVER, QUESTION, GenerationSettings(max_new_tokens=5, ignore_eos=True))
    assert ignored.token_ids == [0] * 5 and ignored.finish_reason == "length"


def test_cancel_interrupts_a_prefill(tiny_pair):
    engine = Engine(tiny_pair)
    for mode, phase in ((Mode.RECEIVER, "receiver_prefill"), (Mode.FUSION, "sharer_prefill"),
                        (Mode.RELAY, "sharer_prefill")):
        cancel = threading.Event()
        events = []

        def on_event(event, phase=phase):
            events.append(event)
            if isinstance(event, PhaseEvent) and event.phase == phase and event.end is None:
                cancel.set()  # Stop pressed while the prompt is being read

        answer = engine.answer(mode, QUESTION, GREEDY, on_event=on_event, cancel=cancel)
        assert answer.finish_reason == "cancelled" and answer.token_ids == [] and answer.hint in (None, "")
        assert not any(isinstance(e, TokenEvent) for e in events)


def test_concurrent_sampled_runs_stay_reproducible(tiny_pair):
    settings = GenerationSettings(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=1.0, top_k=0, seed=11,
                                  ignore_eos=True)
    expected = {m: Engine(tiny_pair).answer(m, QUESTION, settings).token_ids for m in (Mode.FUSION, Mode.RECEIVER)}
    results: dict = {}

    def run(mode):
        results[mode] = Engine(tiny_pair).answer(mode, QUESTION, settings).token_ids

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(m,)) for m in expected]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == expected


def test_a_drawn_seed_is_recorded_and_repeats_the_answer(tiny_pair):
    engine = Engine(tiny_pair)
    first = engine.answer(Mode.FUSION, QUESTION, GenerationSettings(max_new_tokens=10, do_sample=True, seed=None,
                                                                   temperature=1.5, ignore_eos=True))
    seed = first.settings["seed"]
    assert isinstance(seed, int)
    again = engine.answer(Mode.FUSION, QUESTION, GenerationSettings(max_new_tokens=10, do_sample=True, seed=seed,
                                                                   temperature=1.5, ignore_eos=True))
    assert again.token_ids == first.token_ids
