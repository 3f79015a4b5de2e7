"""Unexpected errors and broken installs, shown plainly.

- :func:`install_hooks` routes ``sys.excepthook`` and ``threading.excepthook`` to a :class:`CrashDialog`
  (non-modal, with the details and a button that copies them). Engine errors never come here: they
  go to the window's banner.
- :func:`missing_dependencies` and :func:`show_startup_problem` explain a missing package or a broken
  install in a dialog instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QLabel, QMessageBox, QPlainTextEdit,
                               QPushButton, QVBoxLayout, QWidget)

# Packages the app needs beyond Qt; checked without importing them (importing torch takes seconds).
REQUIRED = {
    "qasync": "qasync",
    "torch": "torch",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface-hub",
    "accelerate": "accelerate",
}


def missing_dependencies(modules: dict[str, str] | None = None) -> list[str]:
    """The pip names of required packages that cannot be found."""
    missing = []
    for module, pip_name in (REQUIRED if modules is None else modules).items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(pip_name)
    return missing


def missing_message(missing: list[str]) -> str:
    names = ", ".join(missing)
    return (f"C2C Playground cannot start: {'this package is' if len(missing) == 1 else 'these packages are'} "
            f"missing: {names}.\n\nInstall {'it' if len(missing) == 1 else 'them'} into the Python that runs the "
            f"app, for example:\n\n    {sys.executable} -m pip install {' '.join(missing)}\n\n"
            "or run `make setup` in the project folder.")


def broken_install_message(exc: BaseException) -> str:
    return (f"A library the app needs is installed but does not load:\n\n{type(exc).__name__}: {exc}\n\n"
            "This usually means a broken or mismatched install (for example a torch built for another CUDA or "
            f"Python). Reinstall it into {sys.executable}, for example with `make clean setup`.")


def show_startup_problem(text: str, parent: QWidget | None = None, *, block: bool = True) -> QMessageBox:
    """A plain dialog for a problem the app cannot go on with (missing or broken packages)."""
    box = QMessageBox(QMessageBox.Icon.Critical, "C2C Playground", text, QMessageBox.StandardButton.Close, parent)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setStyleSheet("QLabel { min-width: 440px; }")  # long paths and commands wrap less
    if block:
        box.exec()
    else:
        box.open()
    return box


def details(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, where: str = "") -> str:
    from . import __version__

    lines = [f"C2C Playground {__version__}", f"Python {platform.python_version()} on {platform.platform()}"]
    if where:
        lines.append(f"Thread: {where}")
    lines.append("")
    lines += traceback.format_exception(exc_type, exc, tb)
    return "\n".join(line.rstrip("\n") for line in lines)


class CrashDialog(QDialog):
    """An unexpected error: what happened, the details, and a button that copies them for a bug report."""

    def __init__(self, summary: str, detail_text: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("C2C Playground hit an unexpected error")
        self.setMinimumSize(620, 380)
        intro = QLabel("Something went wrong that the app did not expect. Your panes and settings are kept; "
                       "you can go on working. Please report this with the details below.")
        intro.setWordWrap(True)
        self.summary = QLabel(summary)
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("font-weight: 600; color: #7a1c12;")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QPlainTextEdit(detail_text)
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.details.setFont(mono)
        buttons = QDialogButtonBox()
        self.copy_button = QPushButton("Copy details")
        self.copy_button.clicked.connect(self.copy)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        close = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        close.clicked.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.summary)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)

    def copy(self) -> None:
        QApplication.clipboard().setText(self.details.toPlainText())
        self.copy_button.setText("Copied")


class CrashHandler:
    """Owns the hooks and the dialogs they open (kept referenced so they stay up)."""

    def __init__(self, parent: QWidget | None = None, post: Callable[[Callable[..., Any]], Callable[..., None]] | None
                 = None):
        self.parent = parent
        self.dialogs: list[CrashDialog] = []
        self._post = post
        self._old_sys: Any = None
        self._old_thread: Any = None

    def show(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, where: str = "") -> None:
        summary = f"{exc_type.__name__}: {exc}"
        dialog = CrashDialog(summary, details(exc_type, exc, tb, where), self.parent)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(self._forget)
        self.dialogs.append(dialog)
        dialog.show()

    def _forget(self) -> None:
        self.dialogs = [d for d in self.dialogs if _alive(d)]

    def _sys_hook(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        traceback.print_exception(exc_type, exc, tb)
        self.show(exc_type, exc, tb)

    def _thread_hook(self, args: threading.ExceptHookArgs) -> None:
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback)
        name = args.thread.name if args.thread is not None else "?"
        if self._post is not None and args.exc_value is not None:
            self._post(self.show)(args.exc_type, args.exc_value, args.exc_traceback, name)

    def install(self) -> None:
        self._old_sys, self._old_thread = sys.excepthook, threading.excepthook
        sys.excepthook = self._sys_hook
        threading.excepthook = self._thread_hook

    def uninstall(self) -> None:
        if self._old_sys is not None:
            sys.excepthook, threading.excepthook = self._old_sys, self._old_thread
            self._old_sys = self._old_thread = None


def _alive(widget: QWidget) -> bool:
    try:
        widget.objectName()
        return True
    except RuntimeError:  # the C++ side was deleted
        return False
