"""The guard against PySide6 taking references from None (found by benchmarks/soak.py: a long session aborted
with "Fatal Python error: none_dealloc") and from True (found by benchmarks/event_loop.py --tokens 2000:
"bool_dealloc")."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QLabel


def test_none_outlives_any_number_of_void_qt_calls(qapp) -> None:
    import c2c_playground  # noqa: F401 - importing the app installs the guard

    label = QLabel()
    before = sys.getrefcount(None)
    for _ in range(20_000):  # more than None's own references in a fresh interpreter
        label.setText("x")
    lost = before - sys.getrefcount(None)
    assert lost in (0, 20_000), lost  # 0: a fixed PySide6 (or 3.12+); 20000: the bug, which the guard absorbs
    if sys.version_info < (3, 12):
        assert sys.getrefcount(None) > 1 << 39


def test_true_outlives_any_number_of_signal_emits(qapp) -> None:
    import c2c_playground  # noqa: F401 - importing the app installs the guard
    from PySide6.QtCore import QObject, Signal

    class Sender(QObject):
        fired = Signal(object, tuple)  # what qasync's call_soon_threadsafe emits for every streamed token

    sender = Sender()
    sender.fired.connect(lambda callback, args: None)
    before = sys.getrefcount(True)
    for _ in range(20_000):  # more than True's own references in a fresh interpreter
        sender.fired.emit(print, ())
    lost = before - sys.getrefcount(True)
    assert lost in (0, 20_000), lost  # 0: a fixed PySide6 (or 3.12+); 20000: the bug, which the guard absorbs
    if sys.version_info < (3, 12):
        assert sys.getrefcount(True) > 1 << 39 and sys.getrefcount(False) > 1 << 39
