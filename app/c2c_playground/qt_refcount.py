"""A guard for a PySide6 bug that ends long sessions on Python 3.10 and 3.11.

PySide6 6.12.0 returns ``None`` from every void method (``QPainter.setPen``, ``QWidget.update``,
``QLabel.setText``...) without a new reference to it, and ``True`` from every ``Signal.emit`` likewise. On
Python 3.12+ both are immortal (PEP 683) and nothing happens; on 3.10 and 3.11 each call takes one reference
from them, and Python aborts once they run out: "Fatal Python error: none_dealloc: deallocating None" after
enough painting (benchmarks/soak.py: about 125 sends), "bool_dealloc: deallocating True or False" after a few
thousand streamed tokens (each one reaches the Qt thread through qasync's ``call_soon_threadsafe``, a signal;
benchmarks/event_loop.py --tokens 2000). ``tests/app/test_qt_refcount.py`` checks the guard, and shows
whether the installed PySide6 still has the bug.
"""

from __future__ import annotations

import sys

_HEADROOM = 1 << 40  # references: a trillion Qt calls


def keep_singletons_alive() -> None:
    """Give ``None``, ``True`` and ``False`` references they cannot run out of, as Python 3.12 does; a no-op
    on 3.12+."""
    if sys.version_info >= (3, 12) or getattr(sys, "_c2c_singletons_guarded", False):
        return
    import ctypes

    # CPython: a PyObject starts with its Py_ssize_t reference count, at the address id() gives
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += _HEADROOM
    sys._c2c_singletons_guarded = True  # once per process, whoever imports the app first
