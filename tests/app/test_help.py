"""The Help page: it explains every mode and every timing phase the engine declares (so it cannot go stale), and
the window opens it from the Help menu and from the "?" beside the charts, at the chart's topic."""

from __future__ import annotations

from c2c_playground import theme
from c2c_playground.widgets.help import TOPICS, HelpDialog, help_text
from fusers.engine import Mode
from fusers.timing import PHASES


def test_the_help_names_every_mode_and_phase_the_engine_declares(qtbot):
    dialog = HelpDialog()
    qtbot.addWidget(dialog)
    shown = dialog.browser.toPlainText()  # the rendered page, not the Markdown source
    for mode in Mode:
        assert mode.label in shown, mode
    for phase in (*PHASES, "between"):
        assert theme.PHASE_LABELS[phase] in shown, phase
    for words in ("receiver", "sharer", "fuser", "mean key fusion weight", "gate", "held-out"):
        assert words in shown, words
    lines = [line.strip() for line in help_text().splitlines()]
    for heading in TOPICS.values():
        assert f"## {heading}" in lines, heading  # every topic a "?" opens is a heading of the page


def test_the_menu_and_the_chart_links_open_the_help_at_their_topic(window, qtbot):
    window.help_action.trigger()
    dialog = window.help_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.in_view("C2C Playground") and not dialog.in_view(TOPICS["fuser"])
    dialog.close()

    window.tabs.setCurrentIndex(2)  # the Fuser insight tab
    window.tabs.help_button.click()
    assert dialog.isVisible() and dialog.in_view(TOPICS["fuser"]) and not dialog.in_view("C2C Playground")
    window.tabs.setCurrentIndex(0)
    window.tabs.help_button.click()
    assert dialog.in_view(TOPICS["timing"]) and not dialog.in_view(TOPICS["c2c"])
