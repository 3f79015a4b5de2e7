"""The run controller without widgets: a real tiny pair, loaded, run, stopped and diffed through its signals."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from c2c_playground.controller import AnswerDiff, RunController
from c2c_playground.conversation import Conversation, TurnState
from c2c_playground.session import LoadRequest
from fusers.diff import align
from fusers.engine import Engine, Mode, TokenEvent
from fusers.errors import C2CError, Cancelled
from fusers.generation import GenerationSettings
from playground_helpers import ModelProbe, run

PROMPT = "What is the capital of France?"
GREEDY = GenerationSettings(max_new_tokens=6, hint_max_new_tokens=3)


def request(dirs: Any, fuser: Any = "published") -> LoadRequest:
    place = {"device": "cpu", "dtype": "float32"}
    return LoadRequest.from_form({"receiver": {"source": str(dirs.receiver), **place},
                                  "sharer": {"source": str(dirs.sharer), **place},
                                  "fuser": str(dirs.published if fuser == "published" else fuser or "")})


class Seen:
    """Every signal the controller emits, in order, with what each turn's state was when it came."""

    def __init__(self, controller: RunController) -> None:
        self.log: list[tuple[Any, ...]] = []
        controller.conversation_changed.connect(
            lambda c: self.log.append(("changed", c, c.current.state if c.current else None)))
        controller.streamed.connect(lambda c, e: self.log.append(("streamed", c, e)))
        controller.answered.connect(lambda c, a: self.log.append(("answered", c, a)))
        controller.turn_failed.connect(lambda c, m: self.log.append(("failed", c, m)))
        controller.run_finished.connect(lambda concurrent: self.log.append(("finished", concurrent)))
        controller.pair_changed.connect(lambda loaded: self.log.append(("pair", loaded)))
        controller.load_failed.connect(lambda exc: self.log.append(("load_failed", exc)))
        controller.diff_ready.connect(lambda d: self.log.append(("diff", d)))
        controller.diff_message.connect(lambda m: self.log.append(("diff_message", m)))

    def of(self, kind: str, conversation: Conversation | None = None) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == kind and (conversation is None or e[1] is conversation)]


@pytest.fixture
def controller(loop, qtbot):
    made = RunController()
    yield made
    made.shutdown()


@pytest.fixture
def loaded(controller, loop, tiny_dirs):
    assert run(loop, controller.load(request(tiny_dirs)))
    return controller


def test_a_send_runs_each_conversation_in_its_mode_and_says_each_step(loaded, loop, tiny_pair, qtbot):
    controller, seen = loaded, Seen(loaded)
    relay, fusion = Conversation(), Conversation()
    with qtbot.waitSignal(controller.run_finished, timeout=60_000) as finished:
        task = controller.send(PROMPT, [(relay, Mode.RELAY), (fusion, Mode.FUSION)], GREEDY, False)
        assert controller.running and controller.send("again", [(relay, Mode.RELAY)], GREEDY, False) is None
    assert finished.args == [False] and task.done() and not controller.running
    for conversation, mode in ((relay, Mode.RELAY), (fusion, Mode.FUSION)):
        expected = Engine(tiny_pair).answer(mode, [{"role": "user", "content": PROMPT}], GREEDY)
        turn = conversation.current
        assert turn.state is TurnState.DONE and turn.mode is mode and turn.answer == expected.text
        assert [t.key for t in turn.answer_tokens] == expected.token_ids
        # the turn went waiting, running, done; its events streamed in between, then its answer
        states = [e[2] for e in seen.of("changed", conversation)]
        assert states == [TurnState.WAITING, TurnState.RUNNING, TurnState.DONE]
        streamed = [e[2] for e in seen.of("streamed", conversation)]
        assert "".join(e.text for e in streamed if isinstance(e, TokenEvent) and e.part == "answer") == expected.text
        assert [a[2] for a in seen.of("answered", conversation)] == [turn.result]
        assert turn.result.fusion is not None if mode.needs_fuser else turn.result.fusion is None
    # one after another: every event of the first pane before any of the second
    order = [e[1] for e in seen.log if e[0] == "streamed"]
    assert order == sorted(order, key=lambda c: c is fusion)
    assert seen.log[-1] == ("finished", False)


def test_one_seed_is_drawn_for_every_pane_of_a_send_and_the_collector_is_frozen_only_while_it_runs(
        loaded, loop, tiny_pair, qtbot):
    controller = loaded
    sampled = GenerationSettings(max_new_tokens=6, hint_max_new_tokens=3, do_sample=True, temperature=1.5, seed=None)
    a, b = Conversation(), Conversation()
    frozen_while_running: list[int] = []
    controller.conversation_changed.connect(
        lambda c: frozen_while_running.append(gc.get_freeze_count()) if c.current.state is TurnState.RUNNING else None)
    assert gc.get_freeze_count() == 0
    run(loop, controller.send(PROMPT, [(a, Mode.FUSION), (b, Mode.FUSION)], sampled, False))
    assert gc.get_freeze_count() == 0
    assert len(frozen_while_running) == 2 and all(n > 0 for n in frozen_while_running)
    seeds = {c.current.result.settings["seed"] for c in (a, b)}
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)
    assert a.current.answer == b.current.answer  # the same seed, the same mode: the same sample
    # and the recorded settings repeat the run
    again = Engine(tiny_pair).answer(Mode.FUSION, [{"role": "user", "content": PROMPT}],
                                     GenerationSettings.from_dict(a.current.result.settings))
    assert again.text == a.current.answer


def test_stop_ends_the_running_turn_and_the_waiting_one_never_starts(loaded, loop, qtbot):
    controller, seen = loaded, Seen(loaded)
    first, second = Conversation(), Conversation()
    layers = controller.session.engine.pair.receiver.shape.layers
    long = GenerationSettings(max_new_tokens=2000, ignore_eos=True)
    with ModelProbe(controller.session.engine.pair, hold_at=3 * layers + 2) as probe:
        task = controller.send(PROMPT, [(first, Mode.RECEIVER), (second, Mode.SHARER)], long, False)
        try:
            qtbot.waitUntil(probe.held.is_set, timeout=60_000)
            assert controller.stop() is True  # it was running
        finally:
            probe.release()
        run(loop, task)
    assert first.current.state is TurnState.STOPPED and first.current.result.finish_reason == "cancelled"
    assert second.current.state is TurnState.SKIPPED and second.current.result is None
    assert [e[2] for e in seen.of("changed", second)] == [TurnState.WAITING, TurnState.SKIPPED]
    assert seen.log[-1] == ("finished", False) and not controller.running and controller.stop() is False


def test_a_failed_turn_says_why_and_the_others_answer(controller, loop, tiny_dirs):
    assert run(loop, controller.load(request(tiny_dirs, fuser=None)))
    seen = Seen(controller)
    relay, fusion = Conversation(), Conversation()
    run(loop, controller.send(PROMPT, [(fusion, Mode.FUSION), (relay, Mode.RELAY)], GREEDY, True))
    assert fusion.current.state is TurnState.ERROR and "Cache fusion needs a fuser" in fusion.current.error
    assert seen.of("failed", fusion) == [("failed", fusion, fusion.current.error)] and not seen.of("answered", fusion)
    assert relay.current.state is TurnState.DONE and relay.current.answer and relay.current.concurrent
    assert seen.log[-1] == ("finished", True)


def test_a_rerun_answers_the_last_prompt_again_in_the_new_mode(loaded, loop, tiny_pair):
    controller, conversation = loaded, Conversation()
    assert controller.rerun(conversation, Mode.RECEIVER, GREEDY, False) is None  # nothing asked yet
    run(loop, controller.send(PROMPT, [(conversation, Mode.FUSION)], GREEDY, False))
    run(loop, controller.rerun(conversation, Mode.RECEIVER, GREEDY, False))
    expected = Engine(tiny_pair).answer(Mode.RECEIVER, [{"role": "user", "content": PROMPT}], GREEDY)
    assert len(conversation.turns) == 1 and conversation.current.mode is Mode.RECEIVER
    assert conversation.current.answer == expected.text


def test_the_diff_aligns_ids_of_one_model_and_texts_of_two(loaded, loop, qtbot):
    controller, seen = loaded, Seen(loaded)
    relay, fusion = Conversation(), Conversation()
    controller.compare(relay, fusion)
    qtbot.waitUntil(controller.diff_idle, timeout=60_000)
    assert seen.of("diff_message")[-1] == ("diff_message", "Send a prompt to compare two panes.")
    run(loop, controller.send(PROMPT, [(relay, Mode.RELAY), (fusion, Mode.FUSION)], GREEDY, False))
    qtbot.waitUntil(lambda: controller.diff_idle() and bool(seen.of("diff")), timeout=60_000)
    diff: AnswerDiff = seen.of("diff")[-1][1]
    a, b = relay.current.answer_tokens, fusion.current.answer_tokens
    assert not diff.streaming and diff.a == a and diff.b == b
    assert diff.ops == align([t.key for t in a], [t.key for t in b])  # both answered by the receiver: ids

    # the receiver's answer against the sharer's: two tokenizers in general, so their texts are compared
    seen.log.clear()
    streams = {Mode.RECEIVER: [(1, "Par"), (2, "is")], Mode.SHARER: [(7, "Par"), (8, "is")], Mode.RELAY: [(5, "Par")]}
    made = {}
    for mode, tokens in streams.items():
        made[mode] = conversation = Conversation()
        conversation.begin(PROMPT, mode)
        conversation.start(False)
        for i, (token_id, text) in enumerate(tokens):
            controller.record(conversation, TokenEvent(mode, "answer", token_id, text, 0.1 * i))
    for other, kinds in ((Mode.SHARER, ["equal", "equal"]), (Mode.RELAY, ["replace", "delete"])):
        seen.log.clear()
        controller.compare(made[Mode.RECEIVER], made[other])
        qtbot.waitUntil(lambda: controller.diff_idle() and bool(seen.of("diff")), timeout=60_000)
        diff = seen.of("diff")[-1][1]
        assert [op.kind for op in diff.ops] == kinds and diff.streaming  # by text, then (one model) by id

    controller.compare(fusion, fusion)
    qtbot.waitUntil(lambda: controller.diff_idle() and bool(seen.of("diff_message")), timeout=60_000)
    assert seen.of("diff_message")[-1][1] == "Choose two different panes to compare."
    controller.clear([relay, fusion])
    assert relay.current is None and fusion.current is None


def test_loading_says_what_failed_and_a_cancelled_load_leaves_no_pair(controller, loop, tiny_dirs, tmp_path, qtbot):
    seen = Seen(controller)
    bad = tmp_path / "bad_fuser"
    bad.mkdir()
    (bad / "fuser.json").write_text("{not json")
    assert run(loop, controller.load(request(tiny_dirs, fuser=bad))) is False
    (_, failure), = seen.of("load_failed")
    assert isinstance(failure, C2CError) and ("fuser.json" in str(failure) or str(bad) in str(failure))
    assert seen.of("pair") == [("pair", None)] and controller.session.engine is None

    seen.log.clear()
    busy = threading.Event()
    hold = controller.session.thread.call(busy.wait)  # the models' thread is busy: the load waits its turn
    task = controller.load(request(tiny_dirs))
    try:
        assert controller.load(request(tiny_dirs)) is None  # one load at a time
        qtbot.waitUntil(lambda: controller.session.loading, timeout=60_000)
        assert controller.cancel_load()
    finally:
        busy.set()
    assert run(loop, task) is False and hold.done()
    assert [type(e[1]) for e in seen.of("load_failed")] == [Cancelled] and controller.session.engine is None
    assert seen.of("pair") == [("pair", None)]
