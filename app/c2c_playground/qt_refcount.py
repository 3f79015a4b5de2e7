"""A guard for a PySide6 bug that ends long sessions on Python 3.10 and 3.11.

PySide6 6.12.0 returns ``None`` from every void method (``QPainter.setPen``, ``QWidget.update``,
``QLabel.setText``...) without a new reference to it. On Python 3.12+ ``None`` is immortal (PEP 683) and
nothing happens; on 3.10 and 3.11 each call takes one reference from ``None``, and after enough painting
(benchmarks/soak.py: about 125 sends) Python aborts with "Fatal Python error: none_dealloc: deallocating
None". ``tests/app/test_qt_refcount.py`` checks the guard, and shows whether the installed PySide6 still
has the bug.
"""

from __future__ import annotations

import sys

_HEADROOM = 1 << 40  # references: a trillion void calls


def keep_none_alive() -> None:
    """Give ``None`` references it cannot run out of, as Python 3.12 does; a no-op on 3.12+."""
    if sys.version_info >= (3, 12) or getattr(sys, "_c2c_none_guarded", False):
        return
    import ctypes

    # CPython: a PyObject starts with its Py_ssize_t reference count, at the address id() gives
    ctypes.c_ssize_t.from_address(id(None)).value += _HEADROOM
    sys._c2c_none_guarded = True  # once per process, whoever imports the app first
