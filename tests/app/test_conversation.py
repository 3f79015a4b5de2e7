"""The conversation model without Qt: a real tiny pair's events, recorded as a pane's turns."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from c2c_playground.conversation import Conversation, TurnState
from fusers.engine import Engine, Mode, PhaseEvent, TokenEvent
from fusers.generation import GenerationSettings

PROMPT = "What is the capital of France?"
SETTINGS = GenerationSettings(max_new_tokens=8, hint_max_new_tokens=4)


def answered(engine: Engine, conversation: Conversation, mode: Mode, prompt: str):
    """One turn as the controller runs it: begin, start, each event, finish. Returns the engine's answer and what
    the live tokens/s said just before the finish."""
    messages = conversation.begin(prompt, mode)
    assert conversation.current.state is TurnState.WAITING and conversation.running
    conversation.start(False)
    recorded: list[bool] = []
    answer = engine.answer(mode, messages, SETTINGS, on_event=lambda e: recorded.append(conversation.record(e)))
    assert recorded and all(recorded)
    live_rate = conversation.current.tokens_per_s()
    conversation.finish(answer)
    return answer, live_rate


def test_the_model_imports_no_qt():
    code = ("import sys, c2c_playground.conversation; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'qasync', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", [Mode.RELAY, Mode.HYBRID, Mode.SHARER])
def test_a_turn_records_the_engines_stream_as_the_answer_it_returns(tiny_pair, mode):
    conversation = Conversation()
    answer, live_rate = answered(Engine(tiny_pair), conversation, mode, PROMPT)
    turn = conversation.current
    assert turn.state is TurnState.DONE and turn.mode is mode and not conversation.running
    assert turn.answer == answer.text and turn.answer_text() == answer.text
    assert [t.key for t in turn.answer_tokens] == answer.token_ids
    assert "".join(t.text for t in turn.answer_tokens) == answer.text
    if mode.writes_hint:
        assert turn.hint == answer.hint and [t.key for t in turn.hint_tokens] == answer.hint_token_ids
    else:
        assert turn.hint == "" and not turn.hint_tokens
    # every streamed phase closed, in the engine's order, at the engine's times
    assert [(p.name, p.start, p.end) for p in turn.phases] == [(p.name, p.start, p.end) for p in answer.timing.phases]
    # tokens/s: one measure, the engine's, live and final
    assert len(answer.token_ids) > 1 and live_rate == pytest.approx(answer.timing.decode_tokens_per_s)
    assert turn.tokens_per_s() == answer.timing.decode_tokens_per_s
    assert turn.now() == answer.timing.total


def test_a_second_turn_answers_after_the_history_and_a_rerun_replaces_the_last(tiny_pair):
    engine, conversation = Engine(tiny_pair), Conversation()
    first, _ = answered(engine, conversation, Mode.FUSION, PROMPT)
    assert conversation.history() == [{"role": "user", "content": PROMPT},
                                      {"role": "assistant", "content": first.text}]
    messages = conversation.begin("And of Italy?", Mode.RECEIVER)
    assert messages == conversation.history() + [{"role": "user", "content": "And of Italy?"}]
    assert len(conversation.history()) == 2  # a waiting turn is not history yet
    assert conversation.drop_last() == "And of Italy?" and len(conversation.turns) == 1
    assert conversation.last_prompt() == PROMPT
    conversation.clear()
    assert conversation.current is None and conversation.history() == [] and conversation.drop_last() is None


def test_stopped_skipped_and_failed_turns(tiny_pair):
    conversation = Conversation()
    messages = conversation.begin(PROMPT, Mode.RECEIVER)
    conversation.start(False)
    stop, tokens = threading.Event(), []

    def cancel_after_two(event):  # on the engine's thread: the cancel reaches it before the next token
        conversation.record(event)
        if isinstance(event, TokenEvent):
            tokens.append(event)
            if len(tokens) == 2:
                stop.set()

    answer = Engine(tiny_pair).answer(Mode.RECEIVER, messages, GenerationSettings(max_new_tokens=50, ignore_eos=True),
                                      on_event=cancel_after_two, cancel=stop)
    conversation.finish(answer)
    turn = conversation.current
    assert answer.finish_reason == "cancelled" and turn.state is TurnState.STOPPED
    assert [t.key for t in turn.answer_tokens] == answer.token_ids and len(answer.token_ids) >= 2
    # a stopped answer stays in the conversation; a late event of its run is not recorded
    assert conversation.history()[-1] == {"role": "assistant", "content": answer.text}
    assert not conversation.record(TokenEvent(Mode.RECEIVER, "answer", 1, "late", 9.0))
    assert not conversation.record(PhaseEvent(Mode.RECEIVER, "decode", 9.0, None))

    conversation.begin("skipped", Mode.RECEIVER)
    conversation.skip()
    assert conversation.current.state is TurnState.SKIPPED and not conversation.running
    conversation.begin("failed", Mode.FUSION)
    conversation.start(True)
    conversation.fail("Cache fusion needs a fuser")
    turn = conversation.current
    assert turn.state is TurnState.ERROR and turn.error == "Cache fusion needs a fuser" and turn.concurrent
    assert turn.tokens_per_s() == 0.0 and turn.answer_text() == ""
    assert len(conversation.history()) == 2  # only the stopped turn's exchange: skipped and failed ones add none


def test_an_open_phase_has_no_end_until_its_end_arrives():
    conversation = Conversation()
    conversation.begin(PROMPT, Mode.FUSION)
    conversation.start(False)
    conversation.record(PhaseEvent(Mode.FUSION, "sharer_prefill", 0.0, None))
    conversation.record(PhaseEvent(Mode.FUSION, "receiver_prefill", 0.0, None))
    turn = conversation.current
    assert [(p.name, p.end) for p in turn.phases] == [("sharer_prefill", None), ("receiver_prefill", None)]
    conversation.record(PhaseEvent(Mode.FUSION, "receiver_prefill", 0.0, 0.25))
    assert [(p.name, p.end) for p in turn.phases] == [("sharer_prefill", None), ("receiver_prefill", 0.25)]
    assert turn.now() >= 0.0 and turn.tokens_per_s() == 0.0  # no token yet
    conversation.record(TokenEvent(Mode.FUSION, "answer", 5, "Paris", 0.5))
    assert turn.first_token_at == turn.last_token_at == 0.5 and turn.tokens_per_s() == 0.0  # one token: no rate yet
    conversation.record(TokenEvent(Mode.FUSION, "answer", 6, ".", 0.75))
    assert turn.tokens_per_s() == pytest.approx(4.0)  # one token after the first, in a quarter of a second
