"""A pane's hint box: text relay's hint (a team's: each sharer's) as it streams, under a title that folds it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QFrame, QPlainTextEdit, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from .. import theme


class HintBox(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("hintBox")
        self.toggle = QToolButton()
        self.toggle.setObjectName("hintToggle")
        self.toggle.setCheckable(True)
        self.toggle.setChecked(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow)
        self.toggle.toggled.connect(self._fold)
        self.body = QPlainTextEdit()
        self.body.setObjectName("hintText")
        self.body.setReadOnly(True)
        self.body.setMaximumHeight(84)
        self.body.setMinimumHeight(40)  # a low screen shows fewer lines of the hint, and scrolls
        self.body.setPlaceholderText("The sharer's hint streams here before the receiver answers.")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # shrinks when folded
        hb = QVBoxLayout(self)
        hb.setContentsMargins(4, 2, 4, 4)
        hb.setSpacing(2)
        hb.addWidget(self.toggle)
        hb.addWidget(self.body)

    def _fold(self, shown: bool) -> None:
        self.body.setVisible(shown)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def set_title(self, tokens: int, sharers: int) -> None:
        """The title: whose hint (a team's ``sharers``), and how many tokens it has so far."""
        whose = "Sharers' hints" if sharers > 1 else "Sharer's hint"
        self.toggle.setText(f"{whose} \u00b7 {tokens} tokens" if tokens else whose)

    def append(self, text: str) -> None:
        cursor = self.body.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(theme.printable(text))
