"""What the window does around a change of pair: it asks before another pair clears the panes, and offers no
cache fusion where the loaded pair has no fuser."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from fusers.engine import Mode

from .widgets.pane import MODES

if TYPE_CHECKING:
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


def offer_fusion(window: "MainWindow", available: bool) -> None:
    """A pair without a fuser: the modes that need one are greyed out in every pane's menu (the tooltip says why),
    and a pane in one of them answers in a mode the other panes do not show instead."""
    for pane in window.panes:
        pane.set_fusion_available(available, "" if available else NO_FUSER_MODE)
    if available:
        return
    moved = []
    for pane in window.panes:
        if pane.mode.needs_fuser:
            used = {p.mode for p in window.panes}
            pane.set_mode(next((m for m in MODES if not m.needs_fuser and m not in used), Mode.RECEIVER))
            moved.append(f"pane {pane.number} now answers with {pane.mode.label.lower()}")
    if moved:
        window._refresh_diff_choices()
        window.notice.show_notice(f"This pair has no fuser, so no pane can use cache fusion: {', '.join(moved)}.")
