"""The Help page: ``help.md`` (shipped beside the app's code) rendered in a window of its own, opened at a topic."""

from __future__ import annotations

from importlib.resources import files

from PySide6.QtGui import QTextCursor, QTextDocument
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

# The topics the window's "?" buttons open: headings of help.md (a test checks that each is one).
TOPICS = {"c2c": "What cache-to-cache (C2C) is", "modes": "The modes", "timing": "The timing chart",
          "fuser": "The Fuser insight chart", "wrong": "Why an answer may be wrong"}


def help_text() -> str:
    """The Markdown of the Help page."""
    return files("c2c_playground").joinpath("help.md").read_text(encoding="utf-8")


class HelpDialog(QDialog):
    """Not modal: it stays open beside the panes while the user tries what it explains."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("C2C Playground Help")
        self.setObjectName("help")
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setMarkdown(help_text())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(buttons)
        self.resize(640, 600)

    def show_topic(self, topic: str = "") -> None:
        """Show the page scrolled to the heading of ``topic`` (a key of TOPICS); "" shows its start."""
        self.show()
        self.raise_()
        self.activateWindow()
        cursor = self._find(TOPICS.get(topic, ""))
        top = 0.0
        if cursor is not None:
            top = self.browser.document().documentLayout().blockBoundingRect(cursor.block()).top()
        self.browser.verticalScrollBar().setValue(int(top))  # the heading at the top (the end caps it)

    def _find(self, heading: str) -> QTextCursor | None:
        if not heading:
            return None
        cursor = self.browser.document().find(heading, 0, QTextDocument.FindFlag.FindCaseSensitively)
        return None if cursor.isNull() else cursor

    def in_view(self, text: str) -> bool:
        """Whether ``text`` (a heading) shows in the page's visible part."""
        cursor = self._find(text)
        return cursor is not None and self.browser.viewport().rect().contains(self.browser.cursorRect(cursor))
