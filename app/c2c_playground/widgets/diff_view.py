"""The token diff: two panes' answers aligned token by token, drawn as columns (A above B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget)

from fusers.diff import DELETE, EQUAL, INSERT, REPLACE, DiffOp, DiffSummary

from .. import theme


@dataclass(frozen=True)
class Token:
    key: Hashable  # what is compared: the id when both answers share a tokenizer, else the text
    text: str


KIND_BG = {EQUAL: theme.EQUAL_BG, REPLACE: theme.CHANGED_BG, DELETE: theme.DELETED_BG, INSERT: theme.INSERTED_BG}


class AlignmentCanvas(QWidget):
    """Columns of aligned tokens that wrap to the width; the first divergence is outlined."""

    GUTTER = 26
    PAD = 4

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.ops: list[DiffOp] = []
        self.a: list[Token] = []
        self.b: list[Token] = []
        self.first: DiffOp | None = None
        self.mono = QFont("DejaVu Sans Mono")
        self.mono.setStyleHint(QFont.StyleHint.Monospace)
        self.mono.setPointSizeF(max(self.font().pointSizeF() - 0.5, 7.0))
        # An update lays out every token several times (height for width, size hint, resize, paint), and a
        # live diff updates while answers stream: token widths are measured once per text (the font never
        # changes), a layout once per width and alignment.
        self._widths: dict[str, int] = {}
        self._layouts: dict[int, list[tuple[float, float, float, DiffOp]]] = {}
        sp = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)

    def set_alignment(self, ops: Sequence[DiffOp], a: Sequence[Token], b: Sequence[Token], first: DiffOp | None) -> None:
        self.ops, self.a, self.b, self.first = list(ops), list(a), list(b), first
        self._layouts.clear()
        self.updateGeometry()
        self.setMinimumHeight(self.heightForWidth(max(self.width(), 200)))
        self.update()

    def _text_width(self, fm: QFontMetrics, text: str) -> int:
        width = self._widths.get(text)
        if width is None:
            width = self._widths[text] = fm.horizontalAdvance(theme.visible_token(text))
        return width

    def _cells(self, width: int) -> list[tuple[float, float, float, DiffOp]]:
        """(x, y, width, op) of each column, two lines high; plain numbers, the paint makes rects of those shown."""
        cached = self._layouts.get(width)
        if cached is not None:
            return cached
        fm = QFontMetrics(self.mono)
        line = fm.height() + 4
        row_h = 2 * line + 8
        x, y = float(self.GUTTER), 4.0
        out = []
        for op in self.ops:
            wa = self._text_width(fm, self.a[op.a].text) if op.a is not None else 0
            wb = self._text_width(fm, self.b[op.b].text) if op.b is not None else 0
            w = max(wa, wb, 10) + 2 * self.PAD
            if x + w > width - 4 and x > self.GUTTER:
                x, y = float(self.GUTTER), y + row_h
            out.append((x, y, w, op))
            x += w + 3
        if len(self._layouts) >= 4:  # a window being resized asks for width after width
            self._layouts.clear()
        self._layouts[width] = out
        return out

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        cells = self._cells(width)
        fm = QFontMetrics(self.mono)
        if not cells:
            return 3 * fm.height()
        return int(cells[-1][1] + 2 * (fm.height() + 4) + 12)

    def sizeHint(self) -> QSize:
        return QSize(400, self.heightForWidth(400))

    def resizeEvent(self, event) -> None:  # noqa: N802
        self.setMinimumHeight(self.heightForWidth(self.width()))
        super().resizeEvent(event)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#ffffff"))
        p.setFont(self.mono)
        fm = QFontMetrics(self.mono)
        line = fm.height() + 4
        cells = self._cells(self.width())
        if not cells:
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, "No tokens to compare yet.")
            return
        last_row_y = None
        shown = event.rect()  # a long diff in its scroll area: only the rows in view are drawn
        for x, y, w, op in cells:
            if y + 2 * line < shown.top() - 4 or y > shown.bottom() + 4:
                continue
            rect = QRectF(x, y, w, 2 * line)
            if rect.top() != last_row_y:
                last_row_y = rect.top()
                p.setFont(self.mono)
                p.setPen(QColor(theme.MUTED))
                p.drawText(QRectF(2, rect.top(), self.GUTTER - 6, line), Qt.AlignmentFlag.AlignCenter, "A")
                p.drawText(QRectF(2, rect.top() + line, self.GUTTER - 6, line), Qt.AlignmentFlag.AlignCenter, "B")
            top = QRectF(rect.left(), rect.top(), rect.width(), line - 1)
            bottom = QRectF(rect.left(), rect.top() + line, rect.width(), line - 1)
            bg = QColor(KIND_BG[op.kind])
            for half, present, tok in ((top, op.a is not None, self.a[op.a] if op.a is not None else None),
                                       (bottom, op.b is not None, self.b[op.b] if op.b is not None else None)):
                if present:
                    p.setPen(Qt.PenStyle.NoPen)
                    p.setBrush(bg if op.kind != EQUAL else QColor("#f4f6f9"))
                    p.drawRoundedRect(half, 3, 3)
                    p.setPen(QColor(theme.TEXT if op.kind != EQUAL else "#3a4657"))
                    font = QFont(self.mono)
                    font.setStrikeOut(op.kind == DELETE)
                    p.setFont(font)
                    p.drawText(half, Qt.AlignmentFlag.AlignCenter, theme.visible_token(tok.text))
                else:  # a gap: this side has no token here
                    p.setPen(QPen(QColor(theme.AXIS), 1, Qt.PenStyle.DashLine))
                    p.setBrush(Qt.BrushStyle.NoBrush)
                    p.drawRoundedRect(half.adjusted(1, 1, -1, -1), 3, 3)
            if op is self.first:
                p.setPen(QPen(QColor("#b42318"), 2))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRoundedRect(rect.adjusted(-2, -2, 2, 2), 4, 4)


class DiffView(QWidget):
    """Pick two panes; see their answers aligned, and where they first part, in plain words."""

    panes_chosen = Signal(int, int)  # pane indices (0-based)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.a_combo, self.b_combo = QComboBox(), QComboBox()
        for combo in (self.a_combo, self.b_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            combo.currentIndexChanged.connect(self._chosen)
        self.divergence = QLabel("Send a prompt to compare two panes.")
        self.divergence.setObjectName("divergence")
        self.divergence.setWordWrap(True)
        self.divergence.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.counts = QLabel("")
        self.counts.setObjectName("sectionNote")
        legend = QLabel(
            f"<span style='background:{theme.CHANGED_BG}'>&nbsp;changed&nbsp;</span>&nbsp; "
            f"<span style='background:{theme.DELETED_BG}'>&nbsp;<s>only in A</s>&nbsp;</span>&nbsp; "
            f"<span style='background:{theme.INSERTED_BG}'>&nbsp;only in B&nbsp;</span>&nbsp; "
            "<span style='color:#b42318'>\u25a2 first divergence</span>&nbsp;&nbsp; "
            "\u00b7 space &nbsp;\u21b5 line break &nbsp;\u2205 part of a character")
        legend.setObjectName("sectionNote")
        legend.setWordWrap(True)  # a narrow window wraps the legend rather than widening the window
        self.canvas = AlignmentCanvas()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.canvas)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll = scroll

        top = QHBoxLayout()
        top.addWidget(QLabel("Compare"))
        top.addWidget(self.a_combo)
        top.addWidget(QLabel("(A) with"))
        top.addWidget(self.b_combo)
        top.addWidget(QLabel("(B)"))
        top.addSpacing(12)
        top.addWidget(legend, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(top)
        layout.addWidget(self.divergence)
        layout.addWidget(self.counts)
        layout.addWidget(scroll, 1)
        self._filling = False

    def set_panes(self, labels: Sequence[str], a: int = 0, b: int = 1) -> None:
        """Offer these panes; keep the current choice when it still exists."""
        old_a, old_b = self.a_combo.currentIndex(), self.b_combo.currentIndex()
        self._filling = True
        for combo in (self.a_combo, self.b_combo):
            combo.clear()
            combo.addItems(list(labels))
        n = len(labels)
        a = old_a if 0 <= old_a < n else a
        b = old_b if 0 <= old_b < n and old_b != a else (b if b < n and b != a else (a + 1) % max(n, 1))
        self.a_combo.setCurrentIndex(min(a, n - 1))
        self.b_combo.setCurrentIndex(min(b, n - 1))
        self._filling = False
        self._chosen()

    def chosen(self) -> tuple[int, int]:
        return self.a_combo.currentIndex(), self.b_combo.currentIndex()

    def choose(self, a: int, b: int) -> None:
        self._filling = True
        self.a_combo.setCurrentIndex(a)
        self.b_combo.setCurrentIndex(b)
        self._filling = False
        self._chosen()

    def _chosen(self) -> None:
        if not self._filling:
            self.panes_chosen.emit(*self.chosen())

    def show_alignment(self, ops: Sequence[DiffOp], summary: DiffSummary, a: Sequence[Token], b: Sequence[Token],
                       streaming: bool) -> None:
        self.canvas.set_alignment(ops, a, b, summary.first)
        self.divergence.setText(describe_divergence(summary, a, b, streaming))
        self.counts.setText(f"{len(a)} tokens in A, {len(b)} in B: {summary.equal} same, {summary.changed} changed, "
                            f"{summary.deleted} only in A, {summary.inserted} only in B")

    def show_message(self, text: str) -> None:
        self.canvas.set_alignment([], [], [], None)
        self.divergence.setText(text)
        self.counts.setText("")


def describe_divergence(summary: DiffSummary, a: Sequence[Token], b: Sequence[Token], streaming: bool) -> str:
    """The first divergence in plain words."""
    first = summary.first
    if streaming and (not a or not b) and (a or b):
        return f"{'B' if a else 'A'} has not answered yet; the alignment fills in as it streams."
    if first is None:
        if not a and not b:
            return "Both answers are empty."
        tail = " so far (still streaming)" if streaming else ""
        return f"A and B are identical{tail}: {summary.equal} tokens."

    def quote(tok: Token) -> str:
        return "\u201c" + theme.visible_token(tok.text) + "\u201d"

    position = (first.a if first.a is not None else first.b) + 1
    if first.kind == REPLACE:
        what = f"A has {quote(a[first.a])} where B has {quote(b[first.b])}"
    elif first.kind == DELETE:
        what = f"A goes on with {quote(a[first.a])}; B has nothing there"
        if streaming and first.a == len(b):
            what += " yet"
    else:
        what = f"B goes on with {quote(b[first.b])}; A has nothing there"
        if streaming and first.b == len(a):
            what += " yet"
    agree = f"after {summary_prefix(first)} identical tokens" if summary_prefix(first) else "at the very first token"
    return f"First divergence at token {position}, {agree}: {what}."


def summary_prefix(first: DiffOp) -> int:
    return first.a if first.a is not None else first.b  # equal ops before the first divergence, one per token
