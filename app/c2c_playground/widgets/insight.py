"""The tabs under the panes: the run's timing, the token diff of two panes, and the fuser's insight."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QScrollArea, QTabWidget, QToolButton, QWidget

from .charts import TotalsChart
from .fuser_plot import FuserPlot
from .diff_view import DiffView


def _scrolling(chart: QWidget) -> QScrollArea:
    """The chart keeps its height: on a low screen its tab scrolls instead of squeezing it."""
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setWidget(chart)
    return scroll


class InsightTabs(QTabWidget):
    help_requested = Signal(str)  # a topic of widgets.help.TOPICS: what the tab in view shows

    HELP_TOPICS = ("timing", "modes", "fuser")  # per tab, in order

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.totals = TotalsChart()
        self.diff_view = DiffView()
        self.fuser_plot = FuserPlot()
        self.addTab(_scrolling(self.totals), "Timing")
        self.addTab(_scrolling(self.diff_view), "Token diff")  # an error banner above may squeeze the tabs
        self.addTab(_scrolling(self.fuser_plot), "Fuser insight")
        self.setUsesScrollButtons(False)
        self.help_button = QToolButton()
        self.help_button.setObjectName("helpLink")
        self.help_button.setText("?")
        self.help_button.setAutoRaise(True)
        self.help_button.setToolTip("What this chart shows (Help)")
        self.help_button.clicked.connect(lambda: self.help_requested.emit(self.HELP_TOPICS[self.currentIndex()]))
        self.setCornerWidget(self.help_button, Qt.Corner.TopRightCorner)
