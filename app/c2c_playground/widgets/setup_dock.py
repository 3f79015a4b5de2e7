"""The set-up dock on the left: the pair to load, then how the panes generate; it scrolls on a low screen."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QScrollArea, QVBoxLayout, QWidget

from .setup import GenerationPanel, PairPanel


class SetupDock(QDockWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Set-up", parent)
        self.setObjectName("setupDock")
        self.pair_panel = PairPanel()
        self.generation = GenerationPanel()
        holder = QWidget()
        lay = QVBoxLayout(holder)
        lay.setContentsMargins(8, 4, 8, 8)
        lay.setSpacing(8)
        lay.addWidget(self.pair_panel)
        lay.addWidget(self.generation)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(holder.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 2)
        self.setWidget(scroll)
        self.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
