"""The app on a real tiny pair, driven as a user would: panes, streaming, stop, multi-turn, errors, modes, export."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from c2c_playground import theme
from fusers.diff import align
from fusers.engine import Engine, Mode
from fusers.generation import GenerationSettings
from playground_helpers import ModelProbe, fill_pair, run, short_generation

PROMPT = "What is the capital of France?"


def load(window, loop, dirs, fuser="published") -> bool:
    fill_pair(window, dirs, fuser)
    return run(loop, window.load_from_form())


def direct(pair, mode: Mode, messages, settings: GenerationSettings):
    return Engine(pair).answer(mode, messages, settings)


def test_both_panes_stream_the_engines_answers_and_a_second_prompt_continues_each_conversation(
        window, loop, tiny_dirs, tiny_pair, qtbot):
    assert [p.mode for p in window.panes] == [Mode.RELAY, Mode.FUSION]  # the default comparison
    assert load(window, loop, tiny_dirs)
    assert "fuser (published" in window.status_line.text() and "receiver" in window.status_line.text()
    short_generation(window)
    settings = window.generation.settings()

    window.prompt_box.setPlainText(PROMPT)
    qtbot.keyClick(window.prompt_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # Ctrl+Enter sends
    assert window.running and window.prompt_box.toPlainText() == ""
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        pass
    first = [{"role": "user", "content": PROMPT}]
    for pane in window.panes:
        expected = direct(tiny_pair, pane.mode, first, settings)
        turn = pane.current
        assert turn.state == "done"
        assert turn.answer == expected.text  # what streamed in, token by token
        assert [t.key for t in turn.answer_tokens] == expected.token_ids
        assert turn.result.text == expected.text
        assert expected.text and pane.transcript.toPlainText().rstrip().endswith(theme.printable(expected.text))
        assert turn.result.timing.total > 0 and pane.phase_bar.spans
    relay = window.panes[0]
    assert relay.current.hint == direct(tiny_pair, Mode.RELAY, first, settings).hint
    assert relay.hint_box.isVisible() and not window.panes[1].hint_box.isVisible()
    # the totals chart compares both panes, and says how they ran
    assert [row[1] for row in window.totals.rows] == ["relay", "fusion"]
    assert "one after another" in window.totals.note
    # fuser insight: one point per receiver layer of the last prompt
    assert [p.receiver_layer for p in window.fuser_plot.points] == [0, 1, 2]
    assert all(p.key_gate_open for p in window.fuser_plot.points)
    # the token diff of pane 1 against pane 2 is fusers.diff.align of their token ids
    qtbot.waitUntil(window.diff_idle, timeout=60_000)
    assert window.diff_view.canvas.ops == align([t.key for t in relay.current.answer_tokens],
                                                [t.key for t in window.panes[1].current.answer_tokens])
    assert "divergence" in window.diff_view.divergence.text() or "identical" in window.diff_view.divergence.text()

    # a second prompt: each pane answers with its own conversation so far
    second = "And of Italy?"
    task = window.send(second)
    run(loop, task)
    for pane in window.panes:
        history = [{"role": "user", "content": PROMPT},
                   {"role": "assistant", "content": pane.turns[0].answer_text()},
                   {"role": "user", "content": second}]
        expected = direct(tiny_pair, pane.mode, history, settings)
        assert len(pane.turns) == 2
        assert pane.current.answer == expected.text
        assert pane.current.answer_text() == expected.text
    assert len(window.panes[0].conversation.history()) == 4


def test_stop_shows_at_once_and_the_run_ends_within_one_layer(window, loop, tiny_dirs, qtbot):
    assert load(window, loop, tiny_dirs)
    window.panes[0].set_mode(Mode.RECEIVER)
    window.panes[1].set_mode(Mode.SHARER)
    short_generation(window, max_new_tokens=2000, ignore_eos=True)
    layers = window.session.engine.pair.receiver.shape.layers
    # the models' thread is held inside a decoder layer of the receiver's 5th forward (3 or 4 tokens made)
    with ModelProbe(window.session.engine.pair, hold_at=4 * layers + 2) as probe:
        task = window.send(PROMPT)
        try:
            qtbot.waitUntil(probe.held.is_set, timeout=60_000)
            qtbot.keyClick(window, Qt.Key.Key_Escape)  # Esc stops
            # the UI says so while the models' thread is still held
            first, second = window.panes
            assert first.state_label.text() == second.state_label.text() == "stopping\u2026"
            assert not window.stop_button.isEnabled() and window.running and probe.held.is_set()
        finally:
            probe.release()
        run(loop, task)
    assert not window.running
    # the cancel reached the worker at the next layer: nothing ran after the held one
    assert probe.layers_after_release <= 1
    assert first.current.state == "stopped" and first.current.result.finish_reason == "cancelled"
    assert 3 <= len(first.current.result.token_ids) <= probe.forwards_at_hold - 1  # the held forward made none
    assert len(first.current.answer_tokens) == len(first.current.result.token_ids)
    assert second.current.state == "skipped"  # it was waiting its turn: it never started
    assert first.state_label.text() == second.state_label.text() == "stopped"

    short_generation(window, max_new_tokens=4)
    run(loop, window.send("Again"))
    assert all(p.current.state == "done" for p in window.panes)
    assert window.stop_button.isEnabled() is False and window.send_button.isEnabled()


def test_a_bad_fuser_shows_the_banner_and_the_app_goes_on(window, loop, tiny_dirs, tmp_path):
    bad = tmp_path / "bad_fuser"
    bad.mkdir()
    (bad / "fuser.json").write_text("{not json")
    assert not load(window, loop, tiny_dirs, fuser=bad)
    assert window.banner.isVisible()
    message = window.banner.message()
    assert str(bad) in message or "fuser.json" in message
    assert "Traceback" not in message
    assert window.session.engine is None and not window.send_button.isEnabled()

    # without a fuser, cache fusion fails in its pane and says why; text relay still answers
    assert load(window, loop, tiny_dirs, fuser=None)
    assert not window.banner.isVisible()  # a new action starts with a clean banner
    short_generation(window, max_new_tokens=4)
    run(loop, window.send(PROMPT))
    relay, fusion = window.panes
    assert relay.current.state == "done" and relay.current.answer
    assert fusion.current.state == "error"
    assert "Cache fusion needs a fuser" in window.banner.message()

    # with the right fuser, the next run works and the banner clears
    assert load(window, loop, tiny_dirs)
    run(loop, window.send(PROMPT))
    assert not window.banner.isVisible()
    assert all(p.current.state == "done" for p in window.panes)


def test_changing_a_panes_mode_offers_to_rerun_its_last_prompt(window, loop, tiny_dirs, tiny_pair, qtbot):
    assert load(window, loop, tiny_dirs)
    short_generation(window, max_new_tokens=6)
    run(loop, window.send(PROMPT))
    pane = window.panes[1]
    before = pane.current.answer_text()
    pane.mode_box.setCurrentIndex(pane.mode_box.findData("receiver"))  # as the user picks it
    assert pane.mode is Mode.RECEIVER and pane.ask_bar.isVisible()
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        qtbot.mouseClick(pane.rerun_button, Qt.MouseButton.LeftButton)
    assert not pane.ask_bar.isVisible() and len(pane.turns) == 1
    expected = direct(tiny_pair, Mode.RECEIVER, [{"role": "user", "content": PROMPT}], window.generation.settings())
    assert pane.current.mode is Mode.RECEIVER and pane.current.answer == expected.text
    assert before  # pane 2 had answered in cache fusion; it answered again as the receiver
    assert len(window.panes[0].turns) == 1 and window.panes[0].current.state == "done"  # pane 1 did not re-run

    # "Not now" keeps the answer; the next prompt uses the new mode
    window.panes[0].mode_box.setCurrentIndex(window.panes[0].mode_box.findData("sharer"))
    qtbot.mouseClick(window.panes[0].keep_button, Qt.MouseButton.LeftButton)
    assert not window.panes[0].ask_bar.isVisible() and window.panes[0].current.mode is Mode.RELAY


def test_concurrent_runs_give_the_same_answers_and_say_so(window, loop, tiny_dirs, tiny_pair):
    assert load(window, loop, tiny_dirs)
    window.add_pane()
    assert [p.mode for p in window.panes] == [Mode.RELAY, Mode.FUSION, Mode.RECEIVER]
    short_generation(window, max_new_tokens=6)
    window.generation.set_concurrent(True)
    run(loop, window.send(PROMPT))
    settings = window.generation.settings()
    for pane in window.panes:
        assert pane.current.concurrent
        assert pane.current.answer == direct(tiny_pair, pane.mode, [{"role": "user", "content": PROMPT}],
                                             settings).text
    assert "concurrently" in window.totals.note
    assert window.run_mode_label.text() == "Runs: concurrent"


def test_loading_shows_progress_and_can_be_cancelled(window, loop, tiny_dirs, qtbot):
    fill_pair(window, tiny_dirs)
    busy = threading.Event()
    hold = window.session.thread.call(busy.wait)  # the models' thread is busy: the load waits its turn
    task = window.load_from_form()
    try:
        qtbot.waitUntil(lambda: window.session.loading, timeout=60_000)
        assert window.pair_panel.progress_box.isVisible() and not window.pair_panel.load_button.isEnabled()
        qtbot.mouseClick(window.pair_panel.cancel_button, Qt.MouseButton.LeftButton)
        assert not hold.done() and not task.done()  # cancelled before the load could start
    finally:
        busy.set()
    assert run(loop, task) is False
    assert hold.done()
    assert window.session.engine is None and not window.pair_panel.progress_box.isVisible()
    assert "cancelled" in window.pair_panel.progress_text.text().lower()
    assert not window.banner.isVisible()
    assert load(window, loop, tiny_dirs)  # and a load after that works
    assert window.pair_panel.unload_button.isEnabled()
    run(loop, window.unload())
    assert window.session.engine is None and window.status_line.text() == "No pair loaded"


def test_export_writes_json_and_markdown(window, loop, tiny_dirs, tmp_path):
    assert load(window, loop, tiny_dirs)
    short_generation(window, max_new_tokens=5)
    run(loop, window.send(PROMPT))
    data = json.loads(open(window.export_comparison(str(tmp_path / "c.json")), encoding="utf-8").read())
    assert data["prompt"] == PROMPT and data["runs"] == "sequential"
    relay, fusion = data["panes"]
    assert relay["mode"] == "relay" and relay["text"] == window.panes[0].current.answer_text()
    assert relay["hint"] == window.panes[0].current.hint and fusion["hint"] is None
    assert fusion["timing"]["tokens_out"] == len(window.panes[1].current.answer_tokens)
    assert data["settings"]["max_new_tokens"] == 5
    assert data["versions"]["torch"] and data["versions"]["PySide6-Essentials"]
    assert any("fuser" in line for line in data["pair"]["loaded"])
    md = open(window.export_comparison(str(tmp_path / "c.md")), encoding="utf-8").read()
    assert "# C2C Playground comparison" in md and f"> {PROMPT}" in md
    assert "## Pane 1: Text relay" in md and "Sharer's hint:" in md and "| 2 | Cache fusion |" in md


def test_export_records_the_settings_each_run_used_the_drawn_seed_included(window, loop, tiny_dirs, tmp_path):
    assert load(window, loop, tiny_dirs)
    window.generation.set_settings(GenerationSettings(max_new_tokens=6, hint_max_new_tokens=3, do_sample=True,
                                                      temperature=1.5, seed=None))
    run(loop, window.send(PROMPT))
    data = json.loads(open(window.export_comparison(str(tmp_path / "s.json")), encoding="utf-8").read())
    assert data["settings"]["seed"] is None  # the form says "random"...
    fusion = data["panes"][1]["turns"][0]
    assert fusion["state"] == "done" and isinstance(fusion["settings"]["seed"], int)  # ...the run drew one
    # and the recorded settings repeat the run
    again = window.session.engine.answer(Mode.FUSION, [{"role": "user", "content": PROMPT}],
                                         GenerationSettings.from_dict(fusion["settings"]))
    assert again.text == fusion["answer"]


def test_settings_round_trip(qtbot, loop, app_settings, tmp_path):
    from c2c_playground.window import MainWindow

    first = MainWindow(app_settings, persist=True)
    qtbot.addWidget(first)
    first.show()
    chosen = GenerationSettings(max_new_tokens=77, hint_max_new_tokens=9, do_sample=True, temperature=0.55,
                                top_p=0.9, top_k=7, seed=123, thinking=True)
    first.generation.set_settings(chosen)
    first.generation.set_concurrent(True)
    first.add_pane()
    first.panes[2].set_mode(Mode.SHARER)
    first.pair_panel.receiver.source.setText("some/receiver")
    first.pair_panel.sharer.quantize.setCurrentIndex(first.pair_panel.sharer.quantize.findData("4bit"))
    first.pair_panel.fuser.setText("/a/fuser")
    first.resize(1300, 820)
    first.setup_dock.hide()
    geometry = first.saveGeometry()
    first.close()  # saves on close

    second = MainWindow(app_settings, persist=False)
    qtbot.addWidget(second)
    assert second.generation.settings() == chosen
    assert second.generation.concurrent()
    assert [p.mode for p in second.panes] == [Mode.RELAY, Mode.FUSION, Mode.SHARER]
    form = second.pair_panel.form()
    assert form["receiver"]["source"] == "some/receiver" and form["sharer"]["quantize"] == "4bit"
    assert form["fuser"] == "/a/fuser"
    # the layout: geometry (the offscreen screen is smaller than the window, so Qt fits it) and the docks
    assert app_settings.blob("geometry") == geometry
    assert second.setup_dock.isHidden()
    assert app_settings.sizes("panes") and len(app_settings.sizes("panes")) == 3
    assert Path(app_settings.store.fileName()).parent == tmp_path  # never the real home
    assert "max_new_tokens" in (tmp_path / "settings.ini").read_text()


def test_bad_settings_fall_back_to_defaults(app_settings):
    app_settings.store.setValue("generation/settings", '{"max_new_tokens": -3}')
    app_settings.store.setValue("layout/pane_modes", '["relay", "nonsense"]')
    assert app_settings.generation() == GenerationSettings(max_new_tokens=128)
    assert app_settings.pane_modes() == ["relay", "fusion"]


def test_panes_add_and_remove_between_two_and_four(window):
    for _ in range(5):
        window.add_pane()
    assert len(window.panes) == 4 and not window.add_button.isEnabled()
    assert [p.mode for p in window.panes] == [Mode.RELAY, Mode.FUSION, Mode.RECEIVER, Mode.SHARER]
    window.remove_pane(window.panes[1])
    assert [p.number for p in window.panes] == [1, 2, 3]
    window.remove_pane(window.panes[0])
    window.remove_pane(window.panes[0])
    assert len(window.panes) == 2 and not window.panes[0].remove_button.isVisible()
    assert window.diff_view.a_combo.count() == 2


def test_get_fusers_opens_the_download_dialog(window, qtbot):
    from c2c_playground.get_fusers import GetFusersDialog

    assert window.get_fusers_action.isEnabled()
    window.get_fusers_action.trigger()
    dialog = window.get_fusers_dialog
    assert isinstance(dialog, GetFusersDialog) and dialog.isVisible() and dialog.parent() is window
    qtbot.waitUntil(lambda: dialog.listing_done, timeout=60_000)
    with qtbot.waitSignal(dialog.finished):
        dialog.close()
    assert window.open_get_fusers() is dialog  # one dialog, shown again
    dialog.close()


def test_sending_without_a_pair_or_a_prompt_says_what_to_do(window):
    assert window.send(PROMPT) is None
    assert "No pair is loaded" in window.banner.message()
    window.banner.dismiss()
    assert window.send("   ") is None
    assert "empty" in window.banner.message()


@pytest.mark.parametrize("hook", ["sys", "thread"])
def test_unexpected_errors_open_a_crash_dialog_that_copies_details(qtbot, loop, hook):
    import threading

    from PySide6.QtWidgets import QApplication

    from c2c_playground import bridge
    from c2c_playground.crash import CrashHandler

    handler = CrashHandler(post=bridge.on_qt_thread)
    try:
        raise ValueError("the flux capacitor is empty")
    except ValueError as exc:
        error = exc
    if hook == "sys":
        handler._sys_hook(ValueError, error, error.__traceback__)
    else:
        def boom() -> None:
            raise ValueError("the flux capacitor is empty")

        handler.install()
        try:
            thread = threading.Thread(target=boom, name="boom")
            thread.start()
            thread.join()
        finally:
            handler.uninstall()
        qtbot.waitUntil(lambda: len(handler.dialogs) > 0, timeout=60_000)
    dialog = handler.dialogs[-1]
    qtbot.addWidget(dialog)
    assert dialog.isVisible() and not dialog.isModal()
    assert "ValueError: the flux capacitor is empty" in dialog.summary.text()
    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    copied = QApplication.clipboard().text()
    assert "Traceback" in copied and "flux capacitor" in copied and "C2C Playground" in copied
    if hook == "thread":
        assert "Thread: boom" in copied


def test_missing_packages_are_named_in_a_plain_dialog(qtbot):
    from c2c_playground.crash import missing_dependencies, missing_message, show_startup_problem

    assert missing_dependencies() == []
    missing = missing_dependencies({"surely_not_installed_c2c_pkg": "surely-not-installed", "json": "json"})
    assert missing == ["surely-not-installed"]
    box = show_startup_problem(missing_message(missing), block=False)
    qtbot.addWidget(box)
    assert "surely-not-installed" in box.text() and "pip install surely-not-installed" in box.text()
    box.close()


def test_the_cuda_graphs_box_reaches_the_load_and_the_pair_says_how_it_decodes(window, loop, tiny_dirs):
    from c2c_playground.session import LoadRequest

    assert window.pair_panel.cuda_graphs.isChecked()  # on by default: it matters only on a CUDA GPU
    window.pair_panel.cuda_graphs.setChecked(False)
    form = window.pair_panel.form()
    assert form["cuda_graphs"] is False
    fill_pair(window, tiny_dirs)
    assert LoadRequest.from_form(window.pair_panel.form()).cuda_graphs is False
    assert run(loop, window.load_from_form())
    assert "decoding: receiver: transformers' generate, sharer: transformers' generate" in window.status_line.text()
    assert "(turned off)" in window.status_line.text()
    window.pair_panel.set_form({**form, "cuda_graphs": True})
    assert window.pair_panel.cuda_graphs.isChecked()


def test_the_compile_box_follows_the_cuda_graphs_box_and_reaches_the_load(window):
    from c2c_playground.session import LoadRequest

    panel = window.pair_panel
    assert panel.compile.isChecked() and panel.compile.isEnabled()  # compiled by default, where graphs are
    panel.cuda_graphs.setChecked(False)
    assert not panel.compile.isEnabled()  # nothing to compile without CUDA graphs
    panel.cuda_graphs.setChecked(True)
    panel.compile.setChecked(False)
    form = panel.form()
    assert form["compile"] is False
    panel.receiver.put({"source": "r"})
    panel.sharer.put({"source": "s"})
    assert LoadRequest.from_form(panel.form()).compile is False
    panel.set_form({**form, "compile": True})
    assert panel.compile.isChecked()


def test_a_relay_plus_fusion_pane_streams_its_hint_fuses_and_exports(window, loop, tiny_dirs, tiny_pair, qtbot,
                                                                      tmp_path, app_settings):
    """The pane menu offers relay + fusion (every mode of the engine); a pane in it shows the sharer's hint as a
    text relay pane does, the fuser insight as a cache fusion pane does, and the token diff and export take it."""
    pane = window.panes[1]
    assert [pane.mode_box.itemData(i) for i in range(pane.mode_box.count())] == \
        ["relay", "fusion", "receiver", "sharer", "hybrid"]
    assert pane.mode_box.itemText(pane.mode_box.findData("hybrid")) == "Relay + fusion"
    pane.mode_box.setCurrentIndex(pane.mode_box.findData("hybrid"))  # as the user picks it
    assert pane.mode is Mode.HYBRID and pane.hint_box.isVisible()
    assert load(window, loop, tiny_dirs)
    short_generation(window, max_new_tokens=6)
    run(loop, window.send(PROMPT))
    settings = window.generation.settings()
    expected = direct(tiny_pair, Mode.HYBRID, [{"role": "user", "content": PROMPT}], settings)
    relay = direct(tiny_pair, Mode.RELAY, [{"role": "user", "content": PROMPT}], settings)
    turn = pane.current
    assert turn.state == "done" and turn.answer == expected.text and turn.answer
    assert turn.hint == expected.hint == relay.hint and [t.key for t in turn.hint_tokens] == expected.hint_token_ids
    assert pane.hint_text.toPlainText() == theme.printable(expected.hint)
    assert [s.name for s in turn.phases] == [p.name for p in expected.timing.phases]  # streamed live, in order
    # fuser insight: the fused cache of the hint-bearing prompt, one point per receiver layer
    assert [p.receiver_layer for p in window.fuser_plot.points] == [0, 1, 2]
    assert str(expected.timing.tokens_in - 1) in window.fuser_plot.title
    # the token diff against pane 1 (text relay: the same hint and prompt, no fused cache)
    qtbot.waitUntil(window.diff_idle, timeout=60_000)
    assert window.diff_view.canvas.ops == align([t.key for t in window.panes[0].current.answer_tokens],
                                                [t.key for t in turn.answer_tokens])
    assert [row[1] for row in window.totals.rows] == ["relay", "hybrid"]

    data = json.loads(open(window.export_comparison(str(tmp_path / "h.json")), encoding="utf-8").read())
    exported = data["panes"][1]
    assert exported["mode"] == "hybrid" and exported["label"] == "Relay + fusion"
    assert exported["hint"] == expected.hint and exported["text"] == expected.text
    assert [p["name"] for p in exported["timing"]["phases"]] == [p.name for p in expected.timing.phases]
    md = open(window.export_comparison(str(tmp_path / "h.md")), encoding="utf-8").read()
    assert "## Pane 2: Relay + fusion" in md and md.count("Sharer's hint:") == 2

    # the layout is remembered with the new mode, and a saved hybrid pane is valid
    app_settings.set_pane_modes(["relay", "hybrid"])
    assert app_settings.pane_modes() == ["relay", "hybrid"]


def test_the_menus_offer_the_engines_modes_dtypes_and_quantizations(window):
    """Each list the app offers is the engine's declaration: a mode, dtype or quantization the engine gains
    appears in the app without an edit there."""
    from fusers.devices import DTYPES
    from fusers.pair import QUANTIZE

    for pane in window.panes:
        offered = [pane.mode_box.itemData(i) for i in range(pane.mode_box.count())]
        assert sorted(offered) == sorted(m.value for m in Mode) and len(offered) == len(Mode)
        assert [pane.mode_box.itemText(i) for i in range(pane.mode_box.count())] == [Mode(m).label for m in offered]
    for row in (window.pair_panel.receiver, window.pair_panel.sharer):
        assert [row.dtype.itemText(i) for i in range(row.dtype.count())] == list(DTYPES)
        assert [row.quantize.itemData(i) for i in range(row.quantize.count())] == list(QUANTIZE)
