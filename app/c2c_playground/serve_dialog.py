"""Pair ▸ Serve on localhost…: the loaded pair's answer modes as an OpenAI-compatible server on 127.0.0.1.

The server is `c2c serve`'s (:mod:`fusers.serve.server`), started for the pair the window has loaded. It runs in a
thread of its own; its answers run on the models' thread, in turn with the panes' runs, and appear in no pane. An
unload or another load stops it first (:meth:`ModelSession.unload`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from fusers.errors import describe
from fusers.generation import GenerationSettings
from fusers.serve import DEFAULT_PORT

from . import bridge

if TYPE_CHECKING:
    from fusers.engine import Answer

    from .session import ModelSession


class ServeDialog(QDialog):
    """Start and stop the server, and show its address, its models and how many answers it gave."""

    # Emitted on the Qt thread when the server starts or stops: the window shows its address in the status bar.
    serving_changed = Signal()

    def __init__(self, session: "ModelSession", settings: Callable[[], GenerationSettings],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Serve on localhost")
        self.setObjectName("serve")
        self.session = session
        self.settings = settings  # the Generation panel's: what a request that sets nothing gets
        self._answers = 0
        self._served = False  # a server started here and not stopped here: one the pair's change stopped
        self._task: asyncio.Task[Any] | None = None
        self._stopping: bridge.BackgroundJob | None = None

        intro = QLabel("Serve the loaded pair's answer modes to OpenAI-compatible clients (the openai library, "
                       "curl, lm-evaluation-harness) on this machine only. Their answers take turns with the "
                       "panes' and appear in no pane; a request that leaves a setting out gets the Generation "
                       "panel's, as it was at Start. See docs/serve.md.")
        intro.setWordWrap(True)
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setSpecialValueText("any free port")  # 0
        self.port.setValue(DEFAULT_PORT)
        self.port.setToolTip("LM Studio uses 1234, Jan 1337, llama-server 8080, vLLM 8000: pick a free one")
        self.api_key = QLineEdit()
        self.api_key.setPlaceholderText("optional: clients must then send it")
        self.address = QLabel("Not serving.")
        self.address.setObjectName("serve-address")
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.models = QLabel("")
        self.models.setWordWrap(True)
        self.models.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.activity = QLabel("")
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b3261e;")
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.toggle)

        form = QFormLayout()
        form.addRow("Port", self.port)
        form.addRow("API key", self.api_key)
        form.addRow("Address", self.address)
        form.addRow("Models", self.models)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.activity)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.setMinimumWidth(520)
        self.refresh()

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        return self.session.server is not None

    @property
    def url(self) -> str | None:
        return self.session.server.url if self.session.server is not None else None

    def refresh(self) -> None:
        """Show the server's state (also after the pair changed, which stops it)."""
        server = self.session.server
        busy = self._task is not None and not self._task.done()
        self.start_button.setText("Stop" if server is not None else "Start")
        self.start_button.setEnabled(not busy and (server is not None or self.session.engine is not None))
        self.port.setEnabled(server is None and not busy)
        self.api_key.setEnabled(server is None and not busy)
        if server is not None:
            self.address.setText(server.url)
            self.models.setText(", ".join(server.model_ids))
            self.activity.setText(f"{self._answers} answer{'' if self._answers == 1 else 's'} given to API clients.")
        else:
            self.address.setText("Starting\u2026" if busy else "Not serving.")
            self.models.setText("One per answer mode of the loaded pair, once started." if self.session.engine
                                is not None else "Load a pair first.")
            self.activity.setText("")

    # -- actions --------------------------------------------------------------------------------------------
    def toggle(self) -> None:
        if self.serving:
            self.stop()
        else:
            self.start()

    def start(self) -> asyncio.Task[Any] | None:
        if self.serving or (self._task is not None and not self._task.done()) or self.session.engine is None:
            return None
        self.error.setText("")
        self._answers = 0
        self._task = bridge.spawn(self._start(self.port.value(), self.api_key.text().strip()))
        self.refresh()
        return self._task

    async def _start(self, port: int, key: str) -> bool:
        try:
            await self.session.serve(port, key or None, self.settings(),
                                     bridge.on_qt_thread(self._answered, alive=self))
        except Exception as exc:  # a port in use, mostly: said in the dialog, the app goes on
            self.error.setText(describe(exc))
            return False
        else:
            self._served = True
        finally:
            self._task = None
            self.refresh()
            self.serving_changed.emit()
        return True

    def stop(self) -> bridge.BackgroundJob | None:
        """Stop serving; the returned job ends once the server's thread has."""
        server = self.session.stop_serving()
        self._served = False
        self.refresh()
        self.serving_changed.emit()
        if server is None:
            return None
        self._stopping = bridge.BackgroundJob(lambda progress, cancel: server.join(30), name="c2c-serve-stop").start()
        return self._stopping

    def pair_changed(self) -> None:
        """The window loaded or unloaded a pair: a server of the old pair has stopped (session.unload)."""
        if self._served and not self.serving:
            self.error.setText("The pair changed, so the server stopped: start it again to serve the new pair.")
            self._served = False
        self.refresh()
        self.serving_changed.emit()

    def _answered(self, model: str, answer: "Answer") -> None:
        self._answers += 1
        self.refresh()


class ServeControl:
    """The window's part: Pair \u25b8 Serve on localhost\u2026 (after the Pair menu's other actions), the dialog it
    opens, and the server's address in the status bar while it serves."""

    def __init__(self, window: Any) -> None:
        self.window = window
        self.dialog: ServeDialog | None = None
        self.action = QAction("&Serve on localhost\u2026", window)
        self.action.setToolTip("Serve the loaded pair's answer modes as an OpenAI-compatible API on this machine")
        self.action.triggered.connect(self.open)
        window.pair_menu.addSeparator()
        window.pair_menu.addAction(self.action)
        self.label = QLabel("")
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        window.statusBar().addPermanentWidget(self.label)
        window.pair_changed.connect(self.pair_changed)  # a pair loaded or unloaded: Start follows it

    def open(self) -> ServeDialog:
        if self.dialog is None:
            self.dialog = ServeDialog(self.window.session, self.window.generation.settings, self.window)
            self.dialog.serving_changed.connect(self._show)
        self.dialog.refresh()
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def pair_changing(self) -> None:
        """A load or an unload begins: the old pair's server stops first (the session does it too, in its turn)."""
        self.window.session.stop_serving()
        self.pair_changed()

    def pair_changed(self) -> None:
        if self.dialog is not None:
            self.dialog.pair_changed()
        self._show()

    def _show(self) -> None:
        url = self.dialog.url if self.dialog is not None else None
        self.label.setText(f"API: {url}" if url else "")

