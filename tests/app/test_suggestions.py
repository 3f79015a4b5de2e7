"""Suggested questions start a fresh conversation (the demo pair answers single questions), and the turns they
clear can be brought back."""

from __future__ import annotations

from fusers.demo import WORLD_NAME, demo_root
from fusers.demo.world import World, contains_value
from fusers.engine import Mode
from fusers.presets import DEMO_NAME
from playground_helpers import run, short_generation


def _fact(world: World, question: str):
    return next(f for split in ("a", "b", "c") for f in world.eval_facts(split) if f.question == question)


def test_suggested_questions_in_a_row_each_start_afresh_and_the_demo_answers_each_right(window, loop, tmp_path):
    run(loop, window.refresh_presets())
    window.pair_panel.choose_preset(DEMO_NAME)
    assert run(loop, window.load_from_form()), window.banner.message()
    assert [p.mode for p in window.panes] == [Mode.RELAY, Mode.FUSION]
    short_generation(window, max_new_tokens=24, hint=24)
    world = World.load(demo_root() / WORLD_NAME)

    asked = []
    for number, index in enumerate((0, 2, 1)):  # the receiver's fact, the held-out one, then the sharer's
        before = [list(p.turns) for p in window.panes]
        window.example_buttons[index].click()
        question = window.prompt_box.toPlainText()
        assert all(not p.turns for p in window.panes)  # a fresh conversation: no earlier turn goes with it
        if number:  # the previous answers are not lost: the notice offers them back
            assert "fresh conversation" in window.notice.message() and window.notice.isVisibleTo(window)
        run(loop, window.send_from_box())
        fact = _fact(world, question)
        for pane in window.panes:
            assert len(pane.turns) == 1 and pane.current.state == "done"
            assert contains_value(pane.current.answer_text(), fact.value), (pane.mode, question,
                                                                            pane.current.answer_text())
        asked.append((question, before))
        window.save_screenshot(str(tmp_path / f"suggestion-{number}.png"))

    # Undo brings back the turns the last suggestion cleared (and the prompt box keeps its text)
    window.example_buttons[0].click()
    cleared_question = asked[-1][0]
    window.prompt_box.setPlainText("typed meanwhile")
    window.notice.action_button.click()
    assert [p.last_prompt() for p in (pane.conversation for pane in window.panes)] == [cleared_question] * 2
    assert all(p.current.state == "done" and p.current.answer_text() for p in window.panes)
    assert window.prompt_box.toPlainText() == "typed meanwhile" and not window.notice.isVisibleTo(window)
    assert window.totals.rows and len(window.totals.rows) == 2  # the timing chart shows them again

    # a question the user types continues the conversation, and the pane says so
    run(loop, window.send("And its capital?"))
    assert all(len(p.turns) == 2 for p in window.panes)
    assert "turn 2, after the 1 above" in window.panes[0].transcript.toPlainText()


def test_a_suggestion_into_empty_panes_says_nothing(window, loop):
    run(loop, window.refresh_presets())
    window.pair_panel.choose_preset(DEMO_NAME)
    assert run(loop, window.load_from_form()), window.banner.message()
    window.example_buttons[1].click()
    assert window.prompt_box.toPlainText() and not window.notice.isVisibleTo(window)
