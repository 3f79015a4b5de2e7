"""The token diff: two panes' answers aligned token by token, drawn as columns (A above B)."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import Sequence

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget)

from fusers.diff import DELETE, EQUAL, INSERT, REPLACE, DiffOp, DiffSummary

from .. import theme
from ..conversation import Token


KIND_BG = {EQUAL: theme.EQUAL_BG, REPLACE: theme.CHANGED_BG, DELETE: theme.DELETED_BG, INSERT: theme.INSERTED_BG}


Cell = tuple[float, float, float, DiffOp]  # x, y, width of one column, and its operation


class AlignmentCanvas(QWidget):
    """Columns of aligned tokens that wrap to the width; the first divergence is outlined.

    A live diff updates every few tokens while answers stream, and its cost on the Qt thread must not grow
    with the answers' length: a new alignment keeps the columns of the old one it starts with (the
    alignment of what has streamed rarely changes), lays out only the columns after them, and repaints
    only from the first row that changed; a paint draws only the rows in view, each column a pixmap drawn
    once for what it shows.
    """

    GUTTER = 26
    PAD = 4
    KEPT_COLUMNS = 1000  # drawn columns kept (about 10 KiB each): a few screens' worth

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.ops: list[DiffOp] = []
        self.a: list[Token] = []
        self.b: list[Token] = []
        self.first: DiffOp | None = None
        self.columns_laid_out = 0  # columns placed since the canvas was made, over every width asked for
        self.columns_painted = 0
        self._columns: OrderedDict[tuple[str, str | None, str | None, float], QPixmap] = OrderedDict()
        self.mono = QFont("DejaVu Sans Mono")
        self.mono.setStyleHint(QFont.StyleHint.Monospace)
        self.mono.setPointSizeF(max(self.font().pointSizeF() - 0.5, 7.0))
        self._struck = QFont(self.mono)
        self._struck.setStrikeOut(True)
        fm = QFontMetrics(self.mono)
        self._fm, self._line = fm, fm.height() + 4
        # each text is measured and made visible once (the font never changes); a layout is kept per width
        self._texts: dict[str, tuple[int, str]] = {}
        self._layouts: dict[int, list[Cell]] = {}
        self._widths: list[int] = []  # of each column
        self._fills = {kind: QColor(color) for kind, color in KIND_BG.items()} | {EQUAL: QColor("#f4f6f9")}
        self._inks = {kind: QColor(theme.TEXT) for kind in KIND_BG} | {EQUAL: QColor("#3a4657")}
        self._muted, self._white = QColor(theme.MUTED), QColor("#ffffff")
        self._gap_pen = QPen(QColor(theme.AXIS), 1, Qt.PenStyle.DashLine)
        self._first_pen = QPen(QColor("#b42318"), 2)
        # growing taller (a new row) repaints only the new part; a new width repaints all (resizeEvent)
        self.setAttribute(Qt.WidgetAttribute.WA_StaticContents)
        sp = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)

    def set_alignment(self, ops: Sequence[DiffOp], a: Sequence[Token], b: Sequence[Token], first: DiffOp | None) -> None:
        ops, a, b = list(ops), list(a), list(b)
        kept = unchanged_columns(self.ops, ops, self.a, a, self.b, b)
        before = self._layouts.get(self.width())
        # the row of the last column kept gets the next ones; everything after it may move
        dirty = before[kept - 1][1] if before and 0 < kept <= len(before) else 0.0
        moved = self.first != first  # the outline leaves the old first divergence for the new one
        if moved:
            dirty = min(dirty, self._row_of(self.first))
        self.ops, self.a, self.b, self.first = ops, a, b, first
        for cells in self._layouts.values():
            del cells[kept:]
        # each column's width, whatever the canvas's: measured once per alignment, for the new columns only
        del self._widths[kept:]
        text, pad = self._text, 2 * self.PAD
        self._widths += [max(text(a[i].text)[0] if i is not None else 0, text(b[j].text)[0] if j is not None else 0,
                             10) + pad for _, i, j in ops[kept:]]
        if moved:
            dirty = min(dirty, self._row_of(self.first))
        self.updateGeometry()
        self.setMinimumHeight(self.heightForWidth(max(self.width(), 200)))
        top = max(int(dirty) - 4, 0)
        self.update(0, top, self.width(), max(self.height() - top, 0))

    def _row_of(self, op: DiffOp | None) -> float:
        """The top of ``op``'s row at the current width; infinity when it is not in the alignment."""
        try:
            index = self.ops.index(op)
        except ValueError:
            return float("inf")
        return self._cells(self.width())[index][1]

    def _text(self, text: str) -> tuple[int, str]:
        """(width, visible text) of a token's text."""
        known = self._texts.get(text)
        if known is None:
            shown = theme.visible_token(text)
            known = self._texts[text] = (self._fm.horizontalAdvance(shown), shown)
        return known

    def _cells(self, width: int) -> list[Cell]:
        """(x, y, width, op) of each column, two lines high; plain numbers, the paint makes rects of those shown.

        A layout kept for this width is extended from its last column: set_alignment cut it to the columns
        that did not change.
        """
        cells = self._layouts.get(width)
        if cells is None:
            if len(self._layouts) >= 4:  # a window being resized asks for width after width
                self._layouts.clear()
            cells = self._layouts[width] = []
        if len(cells) == len(self.ops):
            return cells
        done = len(cells)
        row_h = 2 * self._line + 8
        left, limit = float(self.GUTTER), width - 4
        x, y = left, 4.0
        if cells:
            x0, y, w0, _ = cells[-1]
            x = x0 + w0 + 3
        append = cells.append
        for w, op in zip(self._widths[done:], self.ops[done:]):
            if x + w > limit and x > left:
                x, y = left, y + row_h
            append((x, y, w, op))
            x += w + 3
        self.columns_laid_out += len(cells) - done
        return cells

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        cells = self._cells(width)
        if not cells:
            return 3 * self._fm.height()
        return int(cells[-1][1] + 2 * self._line + 12)

    def sizeHint(self) -> QSize:
        # the height at the width it has (its scroll area gives it the viewport's): another width would be
        # another layout to keep up to date on every update
        return QSize(400, self.heightForWidth(max(self.width(), 200)))

    def resizeEvent(self, event) -> None:  # noqa: N802
        self.setMinimumHeight(self.heightForWidth(self.width()))
        if event.oldSize().width() != event.size().width():
            self.update()  # the columns wrap anew
        super().resizeEvent(event)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        shown = event.rect()
        p.fillRect(shown, self._white)
        p.setFont(self.mono)
        line = self._line
        cells = self._cells(self.width())
        if not cells:
            p.setPen(self._muted)
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, "No tokens to compare yet.")
            return
        # a long diff in its scroll area: only the rows in view are drawn (cells are in row order)
        start = bisect.bisect_left(cells, shown.top() - 2 * line - 4, key=_cell_top)
        bottom = shown.bottom() + 4
        center = Qt.AlignmentFlag.AlignCenter
        last_row_y = None
        p.setPen(self._muted)
        for index in range(start, len(cells)):
            x, y, w, op = cells[index]
            if y > bottom:
                break
            if y != last_row_y:
                last_row_y = y
                p.drawText(QRectF(2, y, self.GUTTER - 6, line), center, "A")
                p.drawText(QRectF(2, y + line, self.GUTTER - 6, line), center, "B")
            p.drawPixmap(int(x), int(y), self._column(op, w))
            self.columns_painted += 1
            if op == self.first:
                p.setPen(self._first_pen)
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRoundedRect(QRectF(x - 2, y - 2, w + 4, 2 * line + 4), 4, 4)
                p.setPen(self._muted)

    def _column(self, op: DiffOp, w: float) -> QPixmap:
        """One column drawn (A's token above B's), kept by what it shows: a paint then costs one call per
        column, and a column that moves to another row or back into view is not drawn again."""
        a = self.a[op.a].text if op.a is not None else None
        b = self.b[op.b].text if op.b is not None else None
        line, ratio = self._line, self.devicePixelRatioF()
        key = (op.kind, a, b, ratio)  # another screen's pixel ratio draws it anew
        pixmap = self._columns.get(key)
        if pixmap is not None:
            self._columns.move_to_end(key)
            return pixmap
        pixmap = QPixmap(int(w * ratio), int(2 * line * ratio))
        pixmap.setDevicePixelRatio(ratio)
        pixmap.fill(self._white)
        p = QPainter(pixmap)
        p.setFont(self._struck if op.kind == DELETE else self.mono)
        for top, text in ((0, a), (line, b)):
            half = QRectF(0, top, w, line - 1)
            if text is not None:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(self._fills[op.kind])
                p.drawRoundedRect(half, 3, 3)
                p.setPen(self._inks[op.kind])
                p.drawText(half, Qt.AlignmentFlag.AlignCenter, self._text(text)[1])
            else:  # a gap: this side has no token here
                p.setPen(self._gap_pen)
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRoundedRect(half.adjusted(1, 1, -1, -1), 3, 3)
        p.end()
        self._columns[key] = pixmap
        if len(self._columns) > self.KEPT_COLUMNS:
            self._columns.popitem(last=False)
        return pixmap


def _cell_top(cell: Cell) -> float:
    return cell[1]


def unchanged_columns(old_ops: Sequence[DiffOp], ops: Sequence[DiffOp], old_a: Sequence[Token],
                      a: Sequence[Token], old_b: Sequence[Token], b: Sequence[Token]) -> int:
    """How many leading columns of the old alignment a new one keeps as they were: same operations, on
    the same tokens. While answers stream, their tokens are only appended and the alignment of what had
    streamed rarely changes: this is then nearly all of them, found at C speed."""
    n = min(len(old_ops), len(ops))
    if old_ops[:n] != ops[:n]:
        n = next(i for i, (old, new) in enumerate(zip(old_ops, ops)) if old != new)
    same_a = len(old_a) <= len(a) and old_a == a[:len(old_a)]  # the same Token objects: compared by identity
    same_b = len(old_b) <= len(b) and old_b == b[:len(old_b)]
    if same_a and same_b:
        return n  # the old columns' tokens are all still there
    ta = _common_prefix(old_a, a)
    tb = _common_prefix(old_b, b)
    return next((i for i, op in enumerate(ops[:n])
                 if (op.a is not None and op.a >= ta) or (op.b is not None and op.b >= tb)), n)


def _common_prefix(x: Sequence[Token], y: Sequence[Token]) -> int:
    return next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))


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
