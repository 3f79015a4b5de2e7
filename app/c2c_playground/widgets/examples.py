"""The loaded pair's example questions: links that wrap onto more lines, and elide when one alone is too wide."""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import (QLabel, QLayout, QLayoutItem, QPushButton, QSizePolicy, QStyle, QStyleOptionButton,
                               QStylePainter, QWidget)


class FlowLayout(QLayout):
    """Items left to right, wrapping to a new line when the width runs out (Qt's flow layout example)."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6):
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._gap = spacing

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt names
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.minimumSize()

    def minimumSize(self) -> QSize:  # noqa: N802
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, line_height = area.x(), area.y(), 0
        for item in self._items:
            if item.isEmpty():
                continue
            hint = item.sizeHint()
            width = max(min(hint.width(), area.width()), item.minimumSize().width())
            if x > area.x() and x + width > area.right() + 1:
                x, y, line_height = area.x(), y + line_height + self._gap, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), QSize(width, hint.height())))
            x += width + self._gap
            line_height = max(line_height, hint.height())
        return y + line_height - rect.y() + m.bottom()


class ExampleLink(QPushButton):
    """A flat link-like button whose text elides (whole text in the tooltip) when the line is too narrow."""

    def __init__(self, text: str, parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setObjectName("example")
        self.setFlat(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(min(160, self.sizeHint().width()), self.sizeHint().height())

    def paintEvent(self, event) -> None:  # noqa: N802
        if self.width() >= self.sizeHint().width():
            super().paintEvent(event)
            return
        option = QStyleOptionButton()
        self.initStyleOption(option)
        padding = self.sizeHint().width() - self.fontMetrics().horizontalAdvance(self.text())
        option.text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                                    max(self.width() - padding, 20))
        QStylePainter(self).drawControl(QStyle.ControlElement.CE_PushButton, option)


class ExamplesRow(QWidget):
    """'Try:' and a link per example question; a click emits the question."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("examples")
        self.flow = FlowLayout(self)
        self.flow.setContentsMargins(2, 0, 2, 0)
        sp = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)
        self.buttons: list[ExampleLink] = []
        self.hide()

    def set_examples(self, examples: Sequence[tuple[str, str]]) -> None:
        """``examples``: (question, what it shows) pairs; none hides the row."""
        while self.flow.count():
            item = self.flow.takeAt(0)
            if item is not None and item.widget() is not None:
                item.widget().deleteLater()
        self.buttons = []
        if examples:
            self.flow.addWidget(QLabel("Try:"))
        for question, note in examples:
            button = ExampleLink(f"{question}  ({note})")
            button.setToolTip(f"Put this question in the prompt box: {question} ({note}).")
            button.clicked.connect(lambda _=False, q=question: self.chosen.emit(q))
            self.flow.addWidget(button)
            self.buttons.append(button)
        self.setVisible(bool(examples))
        self.updateGeometry()
