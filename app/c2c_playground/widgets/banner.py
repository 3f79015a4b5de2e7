"""The one place engine errors appear: a banner under the panes, never a modal dialog; and a notice beside it."""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget


def _close_button(dismiss: Callable[[], Any]) -> QToolButton:
    close = QToolButton()
    close.setObjectName("bannerClose")
    close.setText("\u2715")
    close.setToolTip("Dismiss")
    close.clicked.connect(dismiss)
    return close


class ErrorBanner(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        icon = QLabel("!")
        icon.setObjectName("bannerIcon")
        icon.setFixedWidth(18)
        icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel()
        self.text.setObjectName("bannerText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = _close_button(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.messages: list[str] = []
        self.hide()

    def show_error(self, message: str) -> None:
        """Show ``message``; errors of one action stack up (each once) until dismissed."""
        message = message.strip() or "Something went wrong."
        if message not in self.messages:
            self.messages.append(message)
        self.messages = self.messages[-4:]
        self.text.setText("\n".join(self.messages))
        self.show()

    def dismiss(self) -> None:
        self.messages = []
        self.text.clear()
        self.hide()

    def message(self) -> str:
        return "\n".join(self.messages)


class NoticeBar(QFrame):
    """Something the app just did for the user, said once, with the button that undoes it (not an error)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("notice")
        self.text = QLabel()
        self.text.setObjectName("noticeText")
        self.text.setWordWrap(True)
        self.action_button = QPushButton()
        self.action_button.clicked.connect(self._act)
        close = _close_button(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.action_button, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignVCenter)
        self._action: Callable[[], Any] | None = None
        self.hide()

    def show_notice(self, message: str, action: str = "", on_action: Callable[[], Any] | None = None) -> None:
        self.text.setText(message)
        self._action = on_action
        self.action_button.setText(action)
        self.action_button.setVisible(bool(action and on_action))
        self.show()

    def _act(self) -> None:
        action = self._action
        self.dismiss()
        if action is not None:
            action()

    def dismiss(self) -> None:
        self._action = None
        self.text.clear()
        self.hide()

    def message(self) -> str:
        return self.text.text()
