"""The prompt row under the panes: the question box, and the buttons that send, stop, clear and add a pane."""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class PromptBox(QPlainTextEdit):
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(400, 64)


class PromptBar(QWidget):
    """The window connects the buttons; the bar only lays them out beside the box."""

    def __init__(self, max_panes: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.box = PromptBox()
        self.box.setPlaceholderText("Ask something\u2026   Ctrl+Enter sends to every pane, Esc stops.")
        self.box.setMaximumHeight(90)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.send_button.setToolTip("Send the prompt to every pane (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("danger")
        self.stop_button.setToolTip("Stop every running pane (Esc)")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Start every pane's conversation afresh")
        self.add_button = QPushButton("+ Pane")
        self.add_button.setToolTip(f"Add a pane (up to {max_panes})")
        buttons = QVBoxLayout()
        buttons.setSpacing(4)
        for pair in ((self.send_button, self.stop_button), (self.clear_button, self.add_button)):
            row = QHBoxLayout()
            for button in pair:
                row.addWidget(button)
            buttons.addLayout(row)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)  # the window's
        layout.addWidget(self.box, 1)
        layout.addLayout(buttons)
