"""What the window remembers between runs (settings, panes, pair form, layout), and its first size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

if TYPE_CHECKING:
    from .window import MainWindow


def restore(window: "MainWindow") -> None:
    """The saved settings, pair form and layout (the window makes its panes in the saved modes first)."""
    settings = window.settings
    window.generation.set_settings(settings.generation())
    window.generation.set_concurrent(settings.concurrent())
    window.pair_panel.set_form(settings.pair_form())
    geometry = settings.blob("geometry")
    if geometry is None or not window.restoreGeometry(geometry):
        fit_to_screen(window)
    elif QGuiApplication.platformName() != "offscreen" and \
            not window.screen().availableGeometry().contains(window.frameGeometry()):
        fit_to_screen(window)  # saved on a bigger screen than this one
    state = settings.blob("state")
    if state is None or not window.restoreState(state):
        # the set-up dock as narrow as its content allows: the room goes to the panes (four fit 1366 pixels)
        window.resizeDocks([window.setup_dock], [window.setup_dock.minimumSizeHint().width()],
                           Qt.Orientation.Horizontal)
    for key, splitter in (("panes", window.pane_splitter), ("main", window.main_splitter)):
        sizes = settings.sizes(key)
        if sizes and len(sizes) == splitter.count():
            splitter.setSizes(sizes)
    if settings.sizes("main") is None:
        window.main_splitter.setSizes([560, 300])


def fit_to_screen(window: "MainWindow") -> None:
    """Size the window to the screen it opens on (1440x900 at most), centred, its frame inside the screen."""
    if QGuiApplication.platformName() == "offscreen":
        window.resize(1440, 900)  # its 800x600 screen is no real one: headless screenshots keep this size
        return
    area = window.screen().availableGeometry()
    # the window manager's frame is not known before the first show: leave room for a typical one
    width = max(min(1440, area.width() - 16), window.minimumSizeHint().width())
    height = max(min(900, area.height() - 40), window.minimumSizeHint().height())
    window.resize(min(width, area.width()), min(height, area.height()))
    window.move(area.x() + max((area.width() - window.width()) // 2, 0),
                area.y() + max((area.height() - window.height() - 32) // 2, 0))


def save(window: "MainWindow") -> None:
    settings = window.settings
    settings.set_generation(window.generation.settings())
    settings.set_concurrent(window.generation.concurrent())
    settings.set_pane_modes([p.key for p in window.panes])
    settings.set_pair_form(window.pair_panel.form())
    settings.set_blob("geometry", window.saveGeometry())
    settings.set_blob("state", window.saveState())
    settings.set_sizes("panes", window.pane_splitter.sizes())
    settings.set_sizes("main", window.main_splitter.sizes())
    settings.sync()
