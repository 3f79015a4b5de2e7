"""The main window's export, screenshot, Get fusers and Help dialogs: a part of MainWindow (window.py) kept apart
so that the window module holds the view's wiring alone."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QFileDialog, QWidget

from . import export
from .widgets.help import HelpDialog


class WindowDialogs:
    """Mixed into MainWindow: uses its panes, settings panels, banner and presets."""

    def comparison(self) -> dict[str, Any]:
        loaded = self.session.loaded
        return export.comparison(self.panes, self.generation.settings().to_dict(), self.generation.concurrent(),
                                 loaded.lines if loaded else [], self.pair_panel.form())

    def export_comparison(self, path: str) -> str:
        return str(export.write(path, self.comparison()))

    def export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export comparison", "comparison.md",
                                              "Markdown (*.md);;JSON (*.json)")
        if path:
            try:
                written = self.export_comparison(path)
            except OSError as exc:
                self.banner.show_error(f"Could not write {path}: {exc.strerror or exc}")
            else:
                self.statusBar().showMessage(f"Exported to {written}", 5000)

    def save_screenshot(self, path: str) -> bool:
        return self.grab().save(path)

    def screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", "c2c-playground.png", "PNG (*.png)")
        if path and not self.save_screenshot(path):
            self.banner.show_error(f"Could not save the screenshot to {path}.")

    def open_get_fusers(self) -> QWidget | None:
        try:
            from .get_fusers import GetFusersDialog, downloads
        except ImportError as exc:
            self.banner.show_error(f"Downloads are not available in this build ({exc}).")
            return None
        if self.get_fusers_dialog is None:
            self.get_fusers_dialog = GetFusersDialog(self)
            self.get_fusers_dialog.finished.connect(self._get_fusers_closed)
            downloads().pairs_changed.connect(self._get_fusers_closed)  # a finished download is a new preset
        self.get_fusers_dialog.show()
        self.get_fusers_dialog.raise_()
        return self.get_fusers_dialog

    def _get_fusers_closed(self) -> None:
        self.refresh_presets()

    def show_help(self, topic: str = "") -> HelpDialog:
        """The Help page, at ``topic`` (a key of widgets.help.TOPICS)."""
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(self)
        self.help_dialog.show_topic(topic if isinstance(topic, str) else "")  # a menu action passes a bool
        return self.help_dialog
