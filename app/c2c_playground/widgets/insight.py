"""The tabs under the panes: the run's timing, the token diff of two panes, and the fuser's insight."""

from __future__ import annotations

from PySide6.QtWidgets import QScrollArea, QTabWidget, QWidget

from .charts import FuserPlot, TotalsChart
from .diff_view import DiffView


def _scrolling(chart: QWidget) -> QScrollArea:
    """The chart keeps its height: on a low screen its tab scrolls instead of squeezing it."""
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setWidget(chart)
    return scroll


class InsightTabs(QTabWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.totals = TotalsChart()
        self.diff_view = DiffView()
        self.fuser_plot = FuserPlot()
        self.addTab(_scrolling(self.totals), "Timing")
        self.addTab(self.diff_view, "Token diff")
        self.addTab(_scrolling(self.fuser_plot), "Fuser insight")
        self.setUsesScrollButtons(False)
