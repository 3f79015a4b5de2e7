"""Presets say what each pair needs from the start; a pair without a fuser offers no fusion pane; another pair
starts fresh panes, asked first; and a second start shows the last pair as it was."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from c2c_playground.window import MainWindow
from fusers import real_models
from fusers.engine import Mode
from fusers.presets import DEMO_NAME, REAL_NAME, SPECIALIST_NAME
from playground_helpers import fill_pair, run, short_generation


def test_presets_are_listed_at_start_each_with_what_it_needs(window, loop, qtbot):
    panel = window.pair_panel
    qtbot.waitUntil(lambda: bool(panel.presets), timeout=60000)  # no Refresh presets asked
    names = [p.name for p in panel.presets]
    assert names[:3] == [DEMO_NAME, REAL_NAME, SPECIALIST_NAME]
    real = panel.choose_preset(REAL_NAME)
    if real_models.installed():  # this checkout installed them (make real-models): no fuser is what it lacks
        assert real.ready and "No fuser" in panel.preset_note.text()
    else:
        assert "needs the real models" in real.label and real_models.INSTALL_COMMAND in panel.preset_note.text()
        assert window.load_from_form() is None and real_models.INSTALL_COMMAND in window.banner.message()
    assert panel.preset_note.isVisibleTo(window)
    panel.choose_preset(DEMO_NAME)
    assert not panel.preset_note.isVisibleTo(window)  # the demo pair needs nothing


def test_a_pair_without_a_fuser_greys_out_the_fusion_modes_and_moves_their_panes(window, loop, qtbot, tiny_dirs):
    window.add_pane().set_mode(Mode.HYBRID)
    fill_pair(window, tiny_dirs, fuser=None)
    assert run(loop, window.load_from_form()), window.banner.message()
    assert [p.mode for p in window.panes] == [Mode.RELAY, Mode.RECEIVER, Mode.SHARER]  # no two panes alike
    assert "no fuser" in window.notice.message()
    for pane in window.panes:
        model = pane.mode_box.model()
        for i in range(pane.mode_box.count()):
            mode = Mode(pane.mode_box.itemData(i))
            assert model.item(i).isEnabled() is not mode.needs_fuser
            if mode.needs_fuser:
                assert "no fuser" in model.item(i).toolTip()
    assert window.add_pane().mode is Mode.RECEIVER  # every other mode is shown: one again, not a fusion one
    short_generation(window, max_new_tokens=3, hint=3)
    run(loop, window.send("Hello"))
    assert all(p.current.state == "done" for p in window.panes)

    # a pair with a fuser offers them again, and starts the panes afresh once the user agrees
    fill_pair(window, tiny_dirs)
    assert window.load_from_form() is None  # asked first: the panes hold turns
    box = window.load_question
    assert box is not None and "4 turns" in box.text()
    box.button(QMessageBox.StandardButton.Cancel).click()
    qtbot.waitUntil(lambda: window.load_question is None)
    assert all(len(p.turns) == 1 for p in window.panes)  # nothing changed
    assert window.load_from_form() is None
    accept = next(b for b in window.load_question.buttons()
                  if window.load_question.buttonRole(b) == QMessageBox.ButtonRole.AcceptRole)
    accept.click()
    qtbot.waitUntil(lambda: window.load_question is None)
    assert window.loading and all(not p.turns for p in window.panes)
    run(loop, window.controller._load_task)
    assert window.session.loaded.has_fuser
    assert all(p.mode_box.model().item(i).isEnabled() for p in window.panes for i in range(p.mode_box.count()))


def test_a_second_start_shows_the_last_preset_as_it_was(qtbot, loop, app_settings):
    app_settings.set_pair_form({"preset": SPECIALIST_NAME, "receiver": {"source": "r"}, "sharer": {"source": "s"},
                                "fuser": "ignored"})  # edited after the preset was chosen: the user's own pair
    first = MainWindow(app_settings, persist=False)
    qtbot.addWidget(first)
    qtbot.waitUntil(lambda: bool(first.pair_panel.presets), timeout=60000)
    assert first.pair_panel.preset.currentData() == ""
    first.close()

    from fusers.presets import find_preset

    specialist = find_preset(SPECIALIST_NAME)
    app_settings.set_pair_form({"preset": SPECIALIST_NAME, "receiver": {"source": specialist.receiver},
                                "sharer": {"source": specialist.sharer}, "fuser": specialist.fuser})
    second = MainWindow(app_settings, persist=False)
    qtbot.addWidget(second)
    qtbot.waitUntil(lambda: bool(second.pair_panel.presets), timeout=60000)
    assert second.pair_panel.preset.currentData() == SPECIALIST_NAME  # not "Custom" with the pair's fields
    assert second.pair_panel.fuser.text() == specialist.fuser
    second.close()
