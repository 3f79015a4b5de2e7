"""What the window does around a change of pair: it asks before another pair clears the panes, offers no cache
fusion where the loaded pair has no fuser, offers a team's sharers in every pane, and opens a preset's panes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from fusers.engine import Mode

from .widgets.pane import MODES

if TYPE_CHECKING:
    from fusers.presets import Preset

    from .session import Loaded
    from .window import MainWindow

NO_FUSER_MODE = "The loaded pair has no fuser: this mode needs one (the Fuser box on the left, or a preset with one)."


def ask_before_load(window: "MainWindow", turns: int, answered: Callable[[bool], None]) -> QMessageBox:
    """Ask, without blocking the window, whether to clear the panes' ``turns`` and load; ``answered`` hears yes or
    no. Returns the open question."""
    box = QMessageBox(QMessageBox.Icon.Question, "Load another pair",
                      f"Loading a pair starts every pane afresh: the panes' {turns} turn{'s' if turns > 1 else ''} "
                      "will be cleared.", parent=window)
    box.setInformativeText("Export the comparison first (File \u25b8 Export comparison\u2026) to keep them.")
    box.addButton("Clear and load", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setWindowModality(Qt.WindowModality.WindowModal)

    def finished(result: int) -> None:
        box.deleteLater()
        answered(box.buttonRole(box.clickedButton()) == QMessageBox.ButtonRole.AcceptRole)

    box.finished.connect(finished)
    box.open()
    return box


def lacking(loaded: "Loaded | None") -> str:
    """Who has no fuser, in words ("" when cache fusion is offered): the pair, or the team's sharers without one."""
    if loaded is None or loaded.has_fuser:
        return ""
    if loaded.without_fuser:
        return f"Sharer {', '.join(loaded.without_fuser)} of the loaded team has no fuser"
    return "The loaded pair has no fuser"


def why_no_fusion(loaded: "Loaded | None") -> str:
    """The tooltip of a greyed-out mode that needs a fuser ("" when cache fusion is offered)."""
    if not (who := lacking(loaded)):
        return ""
    if loaded is not None and loaded.without_fuser:
        return f"{who}: this mode needs one for every sharer (the fuser box of its row in the set-up panel)."
    return NO_FUSER_MODE


def offer_fusion(window: "MainWindow", loaded: "Loaded | None") -> None:
    """A pair without a fuser (a team with a sharer without one): the modes that need one are greyed out in every
    pane's menu (the tooltip says why), and a pane in one of them answers in a mode the other panes do not show
    instead."""
    why = why_no_fusion(loaded)
    for pane in window.panes:
        pane.set_fusion_available(not why, why)
    if not why:
        return
    moved = []
    for pane in window.panes:
        if pane.mode.needs_fuser:
            used = {p.mode for p in window.panes}
            pane.set_mode(next((m for m in MODES if not m.needs_fuser and m not in used), Mode.RECEIVER))
            moved.append(f"pane {pane.number} now answers with {pane.mode.label.lower()}")
    if moved:
        window._refresh_diff_choices()
        window.notice.show_notice(f"{lacking(loaded)}, so no pane can use cache fusion: {', '.join(moved)}.")


def show_team(window: "MainWindow", loaded: "Loaded | None") -> None:
    """Every pane offers the loaded team's sharers in its sharer menu (a pair: none). An unload keeps them, so a
    pane's choice survives loading the same team again."""
    if loaded is not None:
        for pane in window.panes:
            pane.set_team(loaded.sharers)
        window._refresh_diff_choices()


def set_pane_modes(window: "MainWindow", modes: Sequence[Mode | str]) -> None:
    """As many panes as ``modes``, each in its mode (``fusion:A`` picks a team's sharers too)."""
    while len(window.panes) < len(modes) and window.add_pane() is not None:
        pass
    while len(window.panes) > len(modes) and not window.running:
        window.remove_pane(window.panes[-1])
    for pane, mode in zip(window.panes, modes):
        pane.set_mode(mode)
    window._refresh_diff_choices()


def preset_picked(window: "MainWindow", preset: "Preset") -> None:
    """A preset that says which panes show its point (the team showcase's) opens them when the user picks it."""
    if preset.panes and not window.running:
        set_pane_modes(window, preset.panes)
