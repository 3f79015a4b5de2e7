"""Four panes beside the set-up fit a 1366x768 laptop (less a title bar): every combo box shows its longest item
whole, the window never has to grow while a run goes, the timing chart needs no scrolling, and an error banner
leaves the panes' heights alone."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox

from c2c_playground.widgets.setup import ElidedComboBox
from fusers.presets import DEMO_NAME, SPECIALIST_NAME
from playground_helpers import run, short_generation

SIZE = (1366, 738)  # 768 less a window manager's title bar


def _text_room(combo: QComboBox) -> int:
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    return combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                        QStyle.SubControl.SC_ComboBoxEditField, combo).width()


def _clipped_combos(window) -> list[str]:
    out = []
    for combo in window.findChildren(QComboBox):
        if not combo.isVisible():
            continue
        if isinstance(combo, ElidedComboBox):  # preset names (50 characters) elide, whole in the list and tooltip
            shown = combo.shown_text()
            if shown != combo.currentText() and not shown.startswith("\u2026"):
                out.append(f"preset box shows {shown!r}")
            continue
        longest = max(range(combo.count()), key=lambda i: combo.fontMetrics().horizontalAdvance(combo.itemText(i)))
        need = combo.fontMetrics().horizontalAdvance(combo.itemText(longest))
        if _text_room(combo) < need:
            out.append(f"{combo.itemText(longest)!r} needs {need} px, its box has {_text_room(combo)}")
    return out


def _widest_while_sending(window, loop, qtbot, send) -> list[int]:
    """At 1366x768, the window's minimum width sampled every 5 ms while ``send()``'s run goes."""
    window.resize(*SIZE)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == SIZE)
    short_generation(window, max_new_tokens=24, hint=24)
    widest: list[int] = []
    sampler = QTimer()
    sampler.timeout.connect(lambda: widest.append(window.minimumSizeHint().width()))
    sampler.start(5)
    run(loop, send())
    sampler.stop()
    return widest


def test_four_panes_fit_1366x768_with_no_clipped_control(window, loop, qtbot, tmp_path):
    run(loop, window.refresh_presets())
    window.pair_panel.choose_preset(DEMO_NAME)
    assert run(loop, window.load_from_form()), window.banner.message()
    while len(window.panes) < 4:
        window.add_pane()
    window.example_buttons[1].click()
    widest = _widest_while_sending(window, loop, qtbot, window.send_from_box)
    assert widest and max(widest) <= SIZE[0], max(widest)  # "waiting...", the hint's title: nothing grows it
    assert (window.width(), window.height()) == SIZE

    for tab in range(window.tabs.count()):  # each tab's combo boxes (the token diff's) while it shows
        window.tabs.setCurrentIndex(tab)
        qtbot.wait(10)
        assert _clipped_combos(window) == []
    window.tabs.setCurrentIndex(0)
    qtbot.wait(10)
    # the timing chart of four panes shows whole, with no scroll bar
    scroll = window.tabs.currentWidget()
    assert window.totals.height() <= scroll.viewport().height() and not scroll.verticalScrollBar().isVisible()
    window.save_screenshot(str(tmp_path / "four-panes-1366.png"))

    heights = [p.height() for p in window.panes]
    assert window.send("") is None and window.banner.isVisible()
    qtbot.wait(10)
    assert [p.height() for p in window.panes] == heights  # the banner takes the charts' room, not the panes'
    for pane in window.panes:
        strip = next(c for c in pane.children() if getattr(c, "objectName", lambda: "")() == "timingStrip")
        assert pane.rect().contains(strip.geometry())  # each pane's figures whole
    window.save_screenshot(str(tmp_path / "four-panes-1366-banner.png"))

    # a preset name longer than the set-up is wide elides from the left: its distinct end and status show
    specialist = window.pair_panel.choose_preset(SPECIALIST_NAME)
    shown = window.pair_panel.preset.shown_text()
    assert shown.startswith("\u2026") and specialist.label.endswith(shown[1:]) and len(shown) > 20, shown


def test_a_team_of_three_sharers_fits_1280x720_and_four_team_panes_fit_1366(window, loop, qtbot, tmp_path):
    """The set-up panel with three sharer rows scrolls within a 1280x720 window beside two panes; the team
    preset's four panes, each with its sharer menu, fit 1366 pixels."""
    from c2c_playground import pair_flow
    from fusers.presets import TEAM_NAME, TEAM_PANES

    run(loop, window.refresh_presets())
    panel = window.pair_panel
    panel.choose_preset(TEAM_NAME)
    assert len(panel.sharers.rows) == 2
    for row in (panel.receiver, *panel.sharers.rows):
        row.device.setCurrentText("cpu")
    assert run(loop, window.load_from_form()), window.banner.message()
    third = panel.sharers.add()
    window.resize(1280, 720)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1280, 720))
    assert window.minimumSizeHint().width() <= 1280 and window.minimumSizeHint().height() <= 720
    assert _clipped_combos(window) == []
    scroll = window.setup_dock.widget()
    scroll.ensureWidgetVisible(third.fuser)
    qtbot.wait(10)
    assert third.fuser.visibleRegion().boundingRect().width() == third.fuser.width()  # scrolled to, whole
    assert panel.load_button.text() == "Load team"
    window.save_screenshot(str(tmp_path / "three-sharers-1280.png"))

    pair_flow.set_pane_modes(window, TEAM_PANES)
    widest = _widest_while_sending(window, loop, qtbot, lambda: window.send(
        "What language do people speak in Mavar, and who founded Mavar?"))
    assert widest and max(widest) <= SIZE[0], max(widest)
    assert all(p.sharer_row.isVisible() for p in window.panes) and _clipped_combos(window) == []
    window.save_screenshot(str(tmp_path / "team-panes-1366.png"))
