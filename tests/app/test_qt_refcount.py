"""The guard against PySide6 taking references from None (found by benchmarks/soak.py: a long session aborted
with "Fatal Python error: none_dealloc")."""

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
