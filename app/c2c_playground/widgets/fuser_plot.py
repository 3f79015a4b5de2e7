"""The fuser insight chart: per receiver layer, the mean fusion weights and whether each gate is open; a team's
fusion draws each sharer's fuser beside the others (its own bars and its own rows of gates)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QWidget

from .. import theme
from .charts import _small_font

if TYPE_CHECKING:
    from fusers.fuser import LayerFusion  # imports torch: kept out of the app's first paint

KEY_COLOR, VALUE_COLOR, OPEN_COLOR = theme.ACCENT, "#8a5cd1", "#2f9e6e"
GATE_ROW = 14


def by_sharer(points: Sequence["LayerFusion"]) -> dict[str, dict[int, "LayerFusion"]]:
    """Each sharer's fuser's layers (a pair's under ""), in the order the sharers come, by receiver layer."""
    out: dict[str, dict[int, "LayerFusion"]] = {}
    for pt in points:
        out.setdefault(pt.sharer, {})[pt.receiver_layer] = pt
    return out


def shade(color: str, index: int) -> QColor:
    """A team's later sharers' bars darker: each sharer's stand apart."""
    return QColor(color).darker(100 + 45 * index) if index else QColor(color)


class FuserPlot(QWidget):
    """Per receiver layer: the mean fusion weight applied (key and value bars) and whether each gate is open; one
    pair of bars and two rows of gates per sharer of a team."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.points: list[LayerFusion] = []
        self.title = "Fuser insight"
        self.empty = "Run a cache fusion pane: the fuser's gates and weights on the last prompt appear here."
        self.setMinimumHeight(200)

    def set_points(self, points: Sequence["LayerFusion"], title: str) -> None:
        self.points, self.title = list(points), title
        self.setMinimumHeight(200 + (len(self.gate_labels()) - 2) * GATE_ROW)  # a team's gate rows: room for each
        self.update()

    def clear(self, message: str | None = None) -> None:
        self.points = []
        self.setMinimumHeight(200)
        if message:
            self.empty = message
        self.update()

    def gate_labels(self) -> list[str]:
        """The gate rows' names, top to bottom: K and V, each sharer's of a team."""
        return [f"{name} {kv} gate".strip() for name in by_sharer(self.points) for kv in ("K", "V")]

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
        groups = by_sharer(self.points)
        names = list(groups)
        team = names != [""]
        layers = sorted({layer for group in groups.values() for layer in group})
        labels = self.gate_labels()
        left = max(56, max(fm.horizontalAdvance(label) for label in labels) + 12)
        right, top = 16, 52
        gate_rows = len(labels) * GATE_ROW + 8
        bottom_space = 22 + gate_rows + 26
        h = max(self.height() - top - bottom_space, 40)
        w = max(self.width() - left - right, 40)
        peak = max(max(pt.key_weight, pt.value_weight) for pt in self.points)
        ymax = next((cap for cap in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0) if peak <= cap), 1.0)
        # legend: the bars' colours (a team's: each sharer's shade), then the gates'
        p.setFont(small)
        lx = left
        for i, name in enumerate(names):
            for label, color in (("key", KEY_COLOR), ("value", VALUE_COLOR)):
                text = f"{name} {label}" if team else f"mean {label} fusion weight"
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(shade(color, i))
                p.drawRect(QRectF(lx, 32, 10, 10))
                p.setPen(QColor(theme.MUTED))
                p.drawText(QRectF(lx + 14, 29, 200, 16), Qt.AlignmentFlag.AlignVCenter, text)
                lx += 14 + fm.horizontalAdvance(text) + 18
        for filled, label in ((True, "gate open"), (False, "gate closed")):
            box = QRectF(lx, 32, 10, 10)
            p.setPen(QPen(QColor(OPEN_COLOR if filled else theme.AXIS), 1.2))
            p.setBrush(QColor(OPEN_COLOR) if filled else Qt.BrushStyle.NoBrush)
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
        n = len(layers)
        slot = w / n
        bars = 2 * len(names)
        bar_w = max(min(slot * 0.72 / bars, 18), 1.0)
        label_every = max(1, math.ceil(fm.horizontalAdvance("00") * 1.8 / slot))
        gate_top = top + h + 22
        p.setPen(QColor(theme.MUTED))
        for row, label in enumerate(labels):
            p.drawText(QRectF(0, gate_top - 1 + row * GATE_ROW, left - 6, 14),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        size = min(10.0, max(slot * 0.6, 4.0))
        for i, layer in enumerate(layers):
            cx = left + slot * (i + 0.5)
            x = cx - bar_w * bars / 2
            for g, name in enumerate(names):
                pt = groups[name].get(layer)
                for kv, color in enumerate((KEY_COLOR, VALUE_COLOR)):
                    value = 0.0 if pt is None else (pt.key_weight, pt.value_weight)[kv]
                    bh = h * min(value, ymax) / ymax
                    p.setPen(Qt.PenStyle.NoPen)
                    p.setBrush(shade(color, g))
                    p.drawRect(QRectF(x, top + h - bh, bar_w, bh))
                    x += bar_w
                    if pt is None:  # this sharer's fuser has no projector at this layer: no gate to draw
                        continue
                    is_open = (pt.key_gate_open, pt.value_gate_open)[kv]
                    box = QRectF(cx - size / 2, gate_top + (2 * g + kv) * GATE_ROW + (12 - size) / 2, size, size)
                    p.setPen(QPen(QColor(OPEN_COLOR if is_open else theme.AXIS), 1.2))
                    p.setBrush(QColor(OPEN_COLOR) if is_open else Qt.BrushStyle.NoBrush)
                    p.drawRect(box)
            if i % label_every == 0:
                p.setPen(QColor(theme.MUTED))
                p.drawText(QRectF(cx - 20, top + h + 3, 40, 16), Qt.AlignmentFlag.AlignHCenter, str(layer))
        p.setPen(QPen(QColor(theme.AXIS), 1))
        p.drawLine(int(left), int(top + h), int(left + w), int(top + h))
        p.setPen(QColor(theme.MUTED))
        p.drawText(QRectF(left, gate_top + gate_rows - 6, w, 16), Qt.AlignmentFlag.AlignHCenter, self.summary())

    def summary(self) -> str:
        """Under the layer axis: how many layers take each sharer's cache."""
        counts = {name: (sum(pt.key_gate_open or pt.value_gate_open for pt in group.values()), len(group))
                  for name, group in by_sharer(self.points).items()}
        if list(counts) == [""]:
            opened, n = counts[""]
            return f"receiver layer  \u2014  {opened} of {n} layers take the sharer's cache"
        return "receiver layer  \u2014  layers that take each sharer's cache: " + ", ".join(
            f"{name} {opened} of {n}" for name, (opened, n) in counts.items())
