"""The window's menu bar. Each action calls a window method; the window keeps the actions it enables and disables
(and the Pair menu, where the serve control adds its action)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

if TYPE_CHECKING:
    from .window import MainWindow


def _action(menu: QMenu, text: str, slot: Callable[[], Any], shortcut: Any = None) -> QAction:
    action = QAction(text, menu.parent())
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build(window: "MainWindow") -> None:
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    window.export_action = _action(file_menu, "&Export comparison\u2026", window.export_dialog, "Ctrl+E")
    _action(file_menu, "Save &screenshot\u2026", window.screenshot_dialog)
    file_menu.addSeparator()
    _action(file_menu, "&Quit", window.close, QKeySequence.StandardKey.Quit)

    window.pair_menu = pair_menu = bar.addMenu("&Pair")
    window.load_action = _action(pair_menu, "&Load pair", window.load_from_form)
    window.unload_action = _action(pair_menu, "&Unload", window.unload)
    pair_menu.addSeparator()
    window.get_fusers_action = _action(pair_menu, "&Get fusers\u2026", window.open_get_fusers)
    if importlib.util.find_spec("c2c_playground.get_fusers") is None:
        window.get_fusers_action.setEnabled(False)
        window.get_fusers_action.setToolTip("Downloads are not part of this build yet")
    _action(pair_menu, "&Refresh presets", window.refresh_presets)

    chat_menu = bar.addMenu("&Chat")
    for text, slot, key in (("&Send", window.send_from_box, "Ctrl+Return"), ("S&top", window.stop, "Esc"),
                            ("&Clear conversations", window.clear, None), ("&Add pane", window.add_pane, None)):
        action = _action(chat_menu, text, slot, key)
        if key:
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the window's QShortcuts act

    bar.addMenu("&View").addAction(window.setup_dock.toggleViewAction())
    _action(bar.addMenu("&Help"), "&About C2C Playground", window.about)
