"""Charts drawn with QPainter: a pane's phase bar and the totals of a run (fuser_plot.py: the per-layer gates).

No QtCharts: these are a few rectangles each, and QtCharts is not in PySide6-Essentials.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple, Sequence

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from fusers.load_meter import BUSY_CORES
from fusers.timing import Phase, Timing

from .. import theme



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


def sharer_order(spans: Sequence[Phase]) -> dict[str, int]:
    """A team's sharers in the order their phases come (a pair's phases name none): each gets its own shade."""
    order: dict[str, int] = {}
    for span in spans:
        if span.sharer and span.sharer not in order:
            order[span.sharer] = len(order)
    return order


def phase_color(span: Phase, order: dict[str, int]) -> QColor:
    """The phase's colour; a team's later sharers' phases darker, so each sharer's prefill and fuse stand apart."""
    color = QColor(theme.PHASE_COLORS.get(span.name, theme.AXIS))
    shade = order.get(span.sharer, 0)
    return color.darker(100 + 35 * shade) if shade else color


def phase_label(span: Phase) -> str:
    """A phase in words, with its sharer where a team's ("prefill A")."""
    if span.sharer:
        return f"{theme.SHARER_PHASE_LABELS.get(span.name, span.name)} {span.sharer}"
    return theme.PHASE_LABELS.get(span.name, span.name)


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
        order = sharer_order(self.spans)
        for span in with_gaps(self.spans):
            end = span.end if span.end is not None else self.now
            x0 = r.left() + r.width() * span.start / total
            x1 = r.left() + r.width() * max(end, span.start) / total
            block = QRectF(x0, r.top(), max(x1 - x0, 1.5), r.height())
            fill = phase_color(span, order)
            if span.end is None:
                fill = fill.lighter(115)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(fill)
            p.drawRect(block)
            label = phase_label(span)
            if fm.horizontalAdvance(label) + 6 < block.width():
                p.setPen(QColor("#ffffff"))
                p.drawText(block, Qt.AlignmentFlag.AlignCenter, label)


class TotalsRow(NamedTuple):
    """One pane's bar: its run's phases (of Repeat runs, the median run's) and figures."""

    label: str
    mode: str
    phases: Sequence[Phase]
    total: float  # of repeats, the median
    ttft: float  # of repeats, the median
    low: float = 0.0  # of repeats, the fastest and the slowest total (the whisker)
    high: float = 0.0
    runs: int = 1
    other_cores: float | None = None  # of repeats, the most any run saw


def totals_row(label: str, mode: str, timings: Sequence[Timing]) -> TotalsRow:
    """The bar of a pane that ran ``timings`` (one per repeat): the median run's phases, the spread of totals."""
    ordered = sorted(timings, key=lambda t: t.total)
    middle = ordered[(len(ordered) - 1) // 2]  # a run that happened: its phases add up to its total
    busy = [t.other_cores for t in timings if t.other_cores is not None]
    return TotalsRow(label, mode, middle.phases, statistics.median(t.total for t in timings),
                     statistics.median(t.ttft for t in timings), ordered[0].total, ordered[-1].total, len(timings),
                     max(busy) if busy else None)


def busy_note(rows: Sequence[TotalsRow]) -> str:
    """Said when other processes took the machine during a run: its figures are the machine's as much as the
    method's. "" when none did (or it could not be measured)."""
    busy = [r.other_cores for r in rows if r.other_cores is not None and r.other_cores >= BUSY_CORES]
    if not busy:
        return ""
    return (f"\u26a0 Machine busy: other processes used up to {max(busy):.1f} cores during these runs: the timings "
            "are slower than the methods alone")


class TotalsChart(QWidget):
    """After a run: each pane's total time as a bar stacked by phase, on one scale, with its TTFT marked."""

    ROW = 22
    TOP = 46  # title, note and legend above the bars

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows: list[TotalsRow] = []
        self.note = ""
        self.warning = ""  # busy_note: drawn in place of the note, in the warning colour
        self.setMinimumHeight(120)

    def set_rows(self, rows: Sequence[TotalsRow], note: str) -> None:
        self.rows, self.note = [TotalsRow(*row) for row in rows], note
        self.warning = busy_note(self.rows)
        self.setToolTip(f"{self.warning}. Repeat runs (in the Generation box) shows medians; closing other programs "
                        "helps too." if self.warning else "")
        self.setMinimumHeight(self.TOP + self.ROW * max(len(rows), 2) + 20)
        self.update()

    @staticmethod
    def value_text(row: TotalsRow) -> str:
        """The figures beside a bar."""
        text = f"{seconds(row.total)}   TTFT {seconds(row.ttft)}" if row.ttft else seconds(row.total)
        if row.runs > 1:
            text = f"median {text}   ({seconds(row.low)}\u2013{seconds(row.high)}, {row.runs} runs)"
        if row.other_cores is not None and row.other_cores >= BUSY_CORES:
            text += f"   \u26a0 busy {row.other_cores:.1f}"
        return text

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
        title = "Total time per pane"
        p.drawText(QRectF(12, 4, self.width() - 24, 20), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   title)
        p.setFont(small)
        p.setPen(QColor(theme.WARNING) if self.warning else QColor(theme.MUTED))
        # beside the title, one line less; a busy machine matters more than how the panes ran (each pane says that)
        after = 12 + QFontMetrics(bold).horizontalAdvance(title) + 12
        p.drawText(QRectF(after, 4, self.width() - after - 12, 20), Qt.AlignmentFlag.AlignLeft
                   | Qt.AlignmentFlag.AlignVCenter, QFontMetrics(small).elidedText(
                       self.warning or self.note, Qt.TextElideMode.ElideRight, max(self.width() - after - 12, 20)))
        # legend
        x = 12.0
        y = 24
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
        names = [name for row in self.rows for name in sharer_order(row.phases)]
        if len(set(names)) > 1:  # a team's: each sharer's prefill and fuse in turn, the later ones darker
            x += 6 + sfm.horizontalAdvance("first answer token (TTFT)") + 16
            later, room = list(dict.fromkeys(names))[1:], max(int(self.width() - x - 12), 20)
            p.drawText(QRectF(x, y, room, 16), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       sfm.elidedText(f"darker: sharer {', '.join(later)}", Qt.TextElideMode.ElideRight, room))
        p.setFont(small)
        p.setPen(QColor(theme.MUTED))
        if not self.rows:
            p.drawText(QRectF(self.rect()).adjusted(0, self.TOP - 20, 0, 0), Qt.AlignmentFlag.AlignCenter,
                       "Send a prompt: the panes' totals are compared here when the run ends.")
            return
        label_w = max(fm.horizontalAdvance(row.label) for row in self.rows) + 24
        value_w = max([QFontMetrics(small).horizontalAdvance(self.value_text(row)) for row in self.rows]
                      + [fm.horizontalAdvance("0000 ms  TTFT 0000 ms")]) + 16
        left, top = 12 + label_w, self.TOP
        width = max(self.width() - left - value_w - 12, 40)
        longest = max((max(row.total, row.high) for row in self.rows), default=0.0) or 1e-9
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
        for i, row in enumerate(self.rows):
            label, mode, spans, total, ttft = row[:5]
            y = top + i * self.ROW
            p.setFont(font)
            p.setPen(QColor(theme.MODE_COLORS.get(mode, theme.TEXT)).darker(115))
            p.drawText(QRectF(12, y, label_w - 8, self.ROW), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       label)
            bar = QRectF(left, y + 5, width, self.ROW - 10)
            order = sharer_order(spans)
            for span in with_gaps(spans, total):
                end = span.end if span.end is not None else total
                x0 = bar.left() + bar.width() * span.start / axis_end
                x1 = bar.left() + bar.width() * end / axis_end
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(phase_color(span, order))
                p.drawRect(QRectF(x0, bar.top(), max(x1 - x0, 1.0), bar.height()))
            if ttft > 0:
                x = bar.left() + bar.width() * ttft / axis_end
                p.setPen(QPen(QColor(theme.TEXT), 2))
                p.drawLine(int(x), int(bar.top()) - 3, int(x), int(bar.bottom()) + 3)
            if row.runs > 1:  # the spread of the repeats' totals: fastest to slowest
                x0 = bar.left() + bar.width() * row.low / axis_end
                x1 = bar.left() + bar.width() * row.high / axis_end
                mid = bar.center().y()
                p.setPen(QPen(QColor(theme.TEXT), 1))
                p.drawLine(int(x0), int(mid), int(x1), int(mid))
                for x in (x0, x1):
                    p.drawLine(int(x), int(bar.top()), int(x), int(bar.bottom()))
            p.setFont(small)
            p.setPen(QColor(theme.WARNING) if row.other_cores is not None and row.other_cores >= BUSY_CORES
                     else QColor(theme.TEXT))
            p.drawText(QRectF(left + width + 8, y, value_w, self.ROW),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, self.value_text(row))
