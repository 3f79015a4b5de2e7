"""Charts drawn with QPainter: a pane's phase bar, the totals of a run, and the fuser's per-layer gates.

No QtCharts: these are a few rectangles each, and QtCharts is not in PySide6-Essentials.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from fusers.timing import Phase

from .. import theme

if TYPE_CHECKING:
    from fusers.fuser import LayerFusion  # imports torch: kept out of the app's first paint


def with_gaps(spans: Sequence[Phase], until: float | None = None) -> list[Phase]:
    """``spans`` with each stretch no phase covers (up to ``until``, when given) as a ``between`` span, so a
    chart names it instead of leaving a blank sliver. A phase that still runs has no end."""
    out: list[Phase] = []
    covered = 0.0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start > covered:
            out.append(Phase("between", covered, span.start))
        out.append(span)
        covered = max(covered, span.end if span.end is not None else math.inf)
    if until is not None and until > covered:
        out.append(Phase("between", covered, until))
    return out


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 100:
        return f"{value:.2f} s"
    return f"{value:.0f} s"


def _nice_step(span: float, ticks: int) -> float:
    raw = max(span, 1e-9) / max(ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _small_font(widget: QWidget, delta: float = -1.5) -> QFont:
    font = QFont(widget.font())
    font.setPointSizeF(max(6.5, font.pointSizeF() + delta))
    return font


class Figures(QWidget):
    """A run's live figures ("TTFT 210 ms", "tok/s 41.0", ...) on a line that wraps between figures.

    They change ten times a second per pane while a run streams. A QLabel asks the whole window to lay
    out again on every ``setText`` (about 2 ms of the Qt thread each); this widget only repaints, and
    asks for a layout (:attr:`layout_requests` counts them) only when its height at its width changes.
    Each value keeps room for its widest expected text (``widest``), so the figures neither jiggle nor
    wrap differently as digits come and go.
    """

    SEPARATOR = "   "

    def __init__(self, widest: Sequence[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.widest = list(widest)  # per figure, the widest value expected ("999 ms"); longer ones still fit
        self.cells: list[tuple[str, str]] = []  # (name, value)
        self.note = ""
        self.layout_requests = 0
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)

    def set_figures(self, cells: Sequence[tuple[str, str]], note: str = "") -> None:
        height = self.heightForWidth(self.width())
        self.cells, self.note = list(cells), note
        if self.heightForWidth(self.width()) != height:
            self.layout_requests += 1
            self.updateGeometry()
        self.update()

    def text(self) -> str:
        """What it shows, as plain text."""
        return self.SEPARATOR.join([f"{name} {value}" for name, value in self.cells] + ([self.note] if self.note else []))

    def _bold(self) -> QFont:
        font = QFont(self.font())
        font.setBold(True)
        return font

    def _pieces(self) -> list[tuple[int, int]]:
        """(width of the name and its space, width kept for the value) of each figure, then the note's."""
        plain, bold = self.fontMetrics(), QFontMetrics(self._bold())
        out = []
        for i, (name, value) in enumerate(self.cells):
            room = max(bold.horizontalAdvance(value), bold.horizontalAdvance(self.widest[i]) if i < len(self.widest) else 0)
            out.append((plain.horizontalAdvance(name + " "), room))
        if self.note:
            out.append((plain.horizontalAdvance(self.note), 0))
        return out

    def _rows(self, width: int) -> list[list[int]]:
        """Indexes into :meth:`_pieces`, row by row, wrapped at ``width`` (a piece wider than that gets a row)."""
        gap = self.fontMetrics().horizontalAdvance(self.SEPARATOR)
        rows: list[list[int]] = [[]]
        used = 0
        for i, (name, value) in enumerate(self._pieces()):
            need = name + value + (gap if rows[-1] else 0)
            if rows[-1] and used + need > width:
                rows.append([])
                used, need = 0, name + value
            rows[-1].append(i)
            used += need
        return rows

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt name
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt name
        return len(self._rows(max(width, 1))) * self.fontMetrics().lineSpacing()

    def sizeHint(self) -> QSize:
        pieces = self._pieces()
        gap = self.fontMetrics().horizontalAdvance(self.SEPARATOR)
        return QSize(sum(n + v for n, v in pieces) + gap * max(len(pieces) - 1, 0), self.fontMetrics().lineSpacing())

    def minimumSizeHint(self) -> QSize:
        return QSize(max([n + v for n, v in self._pieces()] + [0]), self.fontMetrics().lineSpacing())

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        pieces, gap = self._pieces(), self.fontMetrics().horizontalAdvance(self.SEPARATOR)
        line, ascent = self.fontMetrics().lineSpacing(), self.fontMetrics().ascent()
        ink, muted, bold = self.palette().color(self.foregroundRole()), QColor(theme.MUTED), self._bold()
        for row_number, row in enumerate(self._rows(max(self.width(), 1))):
            x, y = 0, row_number * line + ascent
            for i in row:
                name_w, value_w = pieces[i]
                if i < len(self.cells):
                    name, value = self.cells[i]
                    p.setFont(self.font())
                    p.setPen(ink)
                    p.drawText(x, y, name)
                    p.setFont(bold)
                    p.drawText(x + name_w, y, value)
                else:
                    p.setFont(self.font())
                    p.setPen(muted)
                    p.drawText(x, y, self.note)
                x += name_w + value_w + gap


class PhaseBar(QWidget):
    """One run's phases as coloured blocks on a time axis. Panes share a scale so lengths compare."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.spans: list[Phase] = []
        self.now = 0.0
        self.scale = 0.0  # seconds across the full width; 0 = this run's own length
        self.empty_text = "phases appear here while a pane runs"
        self.setMinimumHeight(22)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(240, 22)

    def set_spans(self, spans: Sequence[Phase], now: float) -> None:
        self.spans, self.now = list(spans), now
        self.update()

    def set_scale(self, scale: float) -> None:
        if abs(scale - self.scale) > 1e-9:
            self.scale = scale
            self.update()

    def length(self) -> float:
        ends = [s.end if s.end is not None else self.now for s in self.spans]
        return max(ends + [self.now, 0.0])

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(0.5, 3.5, -0.5, -3.5)
        p.setPen(QPen(QColor(theme.GRID)))
        p.setBrush(QColor("#f4f6f9"))
        p.drawRoundedRect(r, 3, 3)
        total = max(self.scale, self.length())
        if total <= 0 or not self.spans:
            p.setPen(QColor(theme.MUTED))
            p.setFont(_small_font(self))
            p.drawText(r, Qt.AlignmentFlag.AlignCenter,  # a narrow pane elides it
                       p.fontMetrics().elidedText(self.empty_text, Qt.TextElideMode.ElideRight, int(r.width()) - 4))
            return
        fm = QFontMetrics(_small_font(self))
        p.setFont(_small_font(self))
        for span in with_gaps(self.spans):
            end = span.end if span.end is not None else self.now
            x0 = r.left() + r.width() * span.start / total
            x1 = r.left() + r.width() * max(end, span.start) / total
            block = QRectF(x0, r.top(), max(x1 - x0, 1.5), r.height())
            fill = QColor(theme.PHASE_COLORS.get(span.name, theme.AXIS))
            if span.end is None:
                fill = fill.lighter(115)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(fill)
            p.drawRect(block)
            label = theme.PHASE_LABELS.get(span.name, span.name)
            if fm.horizontalAdvance(label) + 6 < block.width():
                p.setPen(QColor("#ffffff"))
                p.drawText(block, Qt.AlignmentFlag.AlignCenter, label)


class TotalsChart(QWidget):
    """After a run: each pane's total time as a bar stacked by phase, on one scale, with its TTFT marked."""

    ROW = 26
    TOP = 70  # title, note and legend above the bars

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows: list[tuple[str, str, Sequence[Phase], float, float]] = []  # label, mode, phases, total, ttft
        self.note = ""
        self.setMinimumHeight(120)

    def set_rows(self, rows: list[tuple[str, str, Sequence[Phase], float, float]], note: str) -> None:
        self.rows, self.note = rows, note
        self.setMinimumHeight(self.TOP + self.ROW * max(len(rows), 2) + 26)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#ffffff"))
        font, small = QFont(self.font()), _small_font(self)
        fm = QFontMetrics(font)
        p.setPen(QColor(theme.TEXT))
        bold = QFont(font)
        bold.setBold(True)
        p.setFont(bold)
        p.drawText(QRectF(12, 6, self.width() - 24, 20), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   "Total time per pane")
        p.setFont(small)
        p.setPen(QColor(theme.MUTED))
        p.drawText(QRectF(12, 24, self.width() - 24, 18), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   self.note)
        # legend
        x = 12.0
        y = 44
        p.setFont(small)
        sfm = QFontMetrics(small)
        for name, label in theme.PHASE_LABELS.items():
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(theme.PHASE_COLORS[name]))
            p.drawRect(QRectF(x, y + 3, 10, 10))
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(x + 14, y, 200, 16), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, label)
            x += 14 + sfm.horizontalAdvance(label) + 16
        p.setPen(QPen(QColor(theme.TEXT), 2))
        p.drawLine(int(x), y + 1, int(x), y + 15)
        p.setPen(QColor(theme.MUTED))
        p.drawText(QRectF(x + 6, y, 200, 16), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                   "first answer token (TTFT)")
        p.setFont(small)
        p.setPen(QColor(theme.MUTED))
        if not self.rows:
            p.drawText(QRectF(self.rect()).adjusted(0, self.TOP - 20, 0, 0), Qt.AlignmentFlag.AlignCenter,
                       "Send a prompt: the panes' totals are compared here when the run ends.")
            return
        label_w = max(fm.horizontalAdvance(row[0]) for row in self.rows) + 24
        value_w = fm.horizontalAdvance("0000 ms  TTFT 0000 ms") + 16
        left, top = 12 + label_w, self.TOP
        width = max(self.width() - left - value_w - 12, 40)
        longest = max((row[3] for row in self.rows), default=0.0) or 1e-9
        step = _nice_step(longest, 5)
        axis_end = step * math.ceil(longest / step)
        # grid and axis labels
        p.setFont(small)
        bottom = top + self.ROW * len(self.rows)
        t = 0.0
        while t <= axis_end + 1e-12:
            x = left + width * t / axis_end
            p.setPen(QPen(QColor(theme.GRID), 1))
            p.drawLine(int(x), top - 2, int(x), bottom)
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(x - 40, bottom + 2, 80, 16), Qt.AlignmentFlag.AlignHCenter, seconds(t))
            t += step
        for i, (label, mode, spans, total, ttft) in enumerate(self.rows):
            y = top + i * self.ROW
            p.setFont(font)
            p.setPen(QColor(theme.MODE_COLORS.get(mode, theme.TEXT)).darker(115))
            p.drawText(QRectF(12, y, label_w - 8, self.ROW), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       label)
            bar = QRectF(left, y + 5, width, self.ROW - 10)
            for span in with_gaps(spans, total):
                end = span.end if span.end is not None else total
                x0 = bar.left() + bar.width() * span.start / axis_end
                x1 = bar.left() + bar.width() * end / axis_end
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(theme.PHASE_COLORS.get(span.name, theme.AXIS)))
                p.drawRect(QRectF(x0, bar.top(), max(x1 - x0, 1.0), bar.height()))
            if ttft > 0:
                x = bar.left() + bar.width() * ttft / axis_end
                p.setPen(QPen(QColor(theme.TEXT), 2))
                p.drawLine(int(x), int(bar.top()) - 3, int(x), int(bar.bottom()) + 3)
            p.setFont(small)
            p.setPen(QColor(theme.TEXT))
            p.drawText(QRectF(left + width + 8, y, value_w, self.ROW),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       f"{seconds(total)}   TTFT {seconds(ttft)}" if ttft else seconds(total))


class FuserPlot(QWidget):
    """Per receiver layer: the mean fusion weight applied (key and value bars) and whether each gate is open."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.points: list[LayerFusion] = []
        self.title = "Fuser insight"
        self.empty = "Run a cache fusion pane: the fuser's gates and weights on the last prompt appear here."
        self.setMinimumHeight(200)

    def set_points(self, points: Sequence["LayerFusion"], title: str) -> None:
        self.points, self.title = list(points), title
        self.update()

    def clear(self, message: str | None = None) -> None:
        self.points = []
        if message:
            self.empty = message
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#ffffff"))
        small = _small_font(self)
        bold = QFont(self.font())
        bold.setBold(True)
        p.setFont(bold)
        p.setPen(QColor(theme.TEXT))
        p.drawText(QRectF(12, 6, self.width() - 24, 20), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   self.title)
        if not self.points:
            p.setFont(small)
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(self.rect()).adjusted(12, 30, -12, 0), Qt.AlignmentFlag.AlignCenter
                       | Qt.TextFlag.TextWordWrap, self.empty)
            return
        fm = QFontMetrics(small)
        left, right, top = 56, 16, 52
        gate_rows = 2 * 14 + 8
        bottom_space = 22 + gate_rows + 26
        h = max(self.height() - top - bottom_space, 40)
        w = max(self.width() - left - right, 40)
        peak = max(max(pt.key_weight, pt.value_weight) for pt in self.points)
        ymax = 1.0
        for cap in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
            if peak <= cap:
                ymax = cap
                break
        # legend
        p.setFont(small)
        lx = left
        for label, col in (("mean key fusion weight", theme.ACCENT), ("mean value fusion weight", "#8a5cd1")):
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(col))
            p.drawRect(QRectF(lx, 32, 10, 10))
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(lx + 14, 29, 200, 16), Qt.AlignmentFlag.AlignVCenter, label)
            lx += 14 + fm.horizontalAdvance(label) + 18
        for filled, label in ((True, "gate open"), (False, "gate closed")):
            box = QRectF(lx, 32, 10, 10)
            p.setPen(QPen(QColor("#2f9e6e" if filled else theme.AXIS), 1.2))
            p.setBrush(QColor("#2f9e6e") if filled else Qt.BrushStyle.NoBrush)
            p.drawRect(box)
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(lx + 14, 29, 200, 16), Qt.AlignmentFlag.AlignVCenter, label)
            lx += 14 + fm.horizontalAdvance(label) + 18
        # y grid
        for k in range(5):
            v = ymax * k / 4
            y = top + h - h * v / ymax
            p.setPen(QPen(QColor(theme.GRID), 1))
            p.drawLine(int(left), int(y), int(left + w), int(y))
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(0, y - 8, left - 6, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       f"{v:.3g}")
        n = len(self.points)
        slot = w / n
        bar_w = max(min(slot * 0.36, 18), 1.0)
        label_every = max(1, math.ceil(fm.horizontalAdvance("00") * 1.8 / slot))
        gate_top = top + h + 22
        p.setPen(QColor(theme.MUTED))
        p.drawText(QRectF(0, gate_top - 1, left - 6, 14), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                   "K gate")
        p.drawText(QRectF(0, gate_top + 13, left - 6, 14), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                   "V gate")
        for i, pt in enumerate(self.points):
            cx = left + slot * (i + 0.5)
            for offset, value, col in ((-bar_w, pt.key_weight, theme.ACCENT), (0.0, pt.value_weight, "#8a5cd1")):
                bh = h * min(value, ymax) / ymax
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(col))
                p.drawRect(QRectF(cx + offset, top + h - bh, bar_w, bh))
            size = min(10.0, max(slot * 0.6, 4.0))
            for row, is_open in enumerate((pt.key_gate_open, pt.value_gate_open)):
                box = QRectF(cx - size / 2, gate_top + row * 14 + (12 - size) / 2, size, size)
                p.setPen(QPen(QColor("#2f9e6e" if is_open else theme.AXIS), 1.2))
                p.setBrush(QColor("#2f9e6e") if is_open else Qt.BrushStyle.NoBrush)
                p.drawRect(box)
            if i % label_every == 0:
                p.setPen(QColor(theme.MUTED))
                p.drawText(QRectF(cx - 20, top + h + 3, 40, 16), Qt.AlignmentFlag.AlignHCenter, str(pt.receiver_layer))
        p.setPen(QPen(QColor(theme.AXIS), 1))
        p.drawLine(int(left), int(top + h), int(left + w), int(top + h))
        p.setPen(QColor(theme.MUTED))
        opened = sum(pt.key_gate_open or pt.value_gate_open for pt in self.points)
        p.drawText(QRectF(left, gate_top + 30, w, 16), Qt.AlignmentFlag.AlignHCenter,
                   f"receiver layer  \u2014  {opened} of {n} layers take the sharer's cache")
