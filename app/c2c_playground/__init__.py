"""C2C Playground: text relay and cache fusion between two LLMs, side by side (the desktop app)."""

from __future__ import annotations

from importlib import metadata

from .qt_refcount import keep_singletons_alive

keep_singletons_alive()  # before any Qt call: PySide6 6.12 leaks references to None and True on Python < 3.12

try:
    __version__ = metadata.version("c2c-playground")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
