"""The demo pair in the app: it is the first preset, it loads, its example questions fill the prompt, and cache
fusion answers what only the sharer knows."""

from __future__ import annotations

from fusers.demo import WORLD_NAME, demo_root, pair_paths
from fusers.demo.world import World, contains_value
from fusers.engine import Mode
from fusers.presets import DEMO_NAME
from playground_helpers import run, short_generation


def test_the_demo_pair_loads_offers_examples_and_fusion_knows_the_sharers_facts(window, loop):
    presets = run(loop, window.refresh_presets())
    assert presets[0].name == DEMO_NAME and presets[0].ready
    assert window.pair_panel.choose_preset(DEMO_NAME) is not None
    assert not window.examples_row.isVisibleTo(window)
    assert run(loop, window.load_from_form()), window.banner.message()

    # one example per split: what the receiver knows, what only the sharer knows, and what the fuser never saw
    assert window.examples_row.isVisibleTo(window) and len(window.example_buttons) == 3
    assert "receiver knows" in window.example_buttons[0].text()
    assert "fuser never saw" in window.example_buttons[2].text()
    window.example_buttons[1].click()
    question = window.prompt_box.toPlainText()
    world = World.load(demo_root() / WORLD_NAME)
    fact = next(f for f in world.eval_facts("b") if f.question == question)

    window.add_pane().set_mode(Mode.RECEIVER)
    panes = {p.mode: p for p in window.panes}
    assert set(panes) == {Mode.RELAY, Mode.FUSION, Mode.RECEIVER}, [p.mode for p in window.panes]
    short_generation(window, max_new_tokens=24, hint=24)
    run(loop, window.send_from_box())
    assert all(p.current.state == "done" for p in window.panes)
    for mode in (Mode.FUSION, Mode.RELAY):
        assert contains_value(panes[mode].current.answer_text(), fact.value), panes[mode].current.answer_text()
    assert not contains_value(panes[Mode.RECEIVER].current.answer_text(), fact.value)

    # unloading hides the examples again
    run(loop, window.unload())
    assert not window.examples_row.isVisibleTo(window)
    assert pair_paths()[0].is_dir()
