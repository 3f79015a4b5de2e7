"""The run controller: loads the pair, runs the panes' conversations, and aligns two answers. No widgets here.

The window asks (:meth:`RunController.load`, :meth:`send`, :meth:`rerun`, :meth:`stop`, :meth:`compare`) and
shows what the signals say; the controller never imports the window. Signals are emitted on the Qt thread.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from PySide6.QtCore import QObject, QTimer, Signal

from fusers.diff import DiffOp, DiffSummary, align, summarize
from fusers.engine import Answer, Mode, TokenEvent, draw_seed
from fusers.errors import C2CError, describe
from fusers.generation import GenerationSettings
from fusers.pair import LoadProgress

from . import bridge
from .conversation import Conversation, Token, Turn
from .session import BrokenInstall, LoadRequest, ModelSession

log = logging.getLogger(__name__)

NOTHING_TO_COMPARE = "Send a prompt to compare two panes."

Cleared = list[tuple[Conversation, list[Turn]]]  # conversations a clear emptied, with the turns they held


@dataclass(frozen=True)
class AnswerDiff:
    """Two answers aligned token by token (A's and B's tokens as they were when aligned)."""

    ops: list[DiffOp]
    summary: DiffSummary
    a: list[Token]
    b: list[Token]
    streaming: bool  # either answer still streams


def _answerer(turn: Turn) -> str:
    """The model whose tokens make a turn's answer: the receiver, or a sharer alone (a team's, by name)."""
    named = turn.took_part() if turn.mode is Mode.SHARER else None
    return turn.mode.answered_by + (f":{named[0]}" if named else "")


class RunController(QObject):
    pair_changing = Signal()  # a load or an unload begins: whatever serves the old pair lets go of it
    loading_changed = Signal(bool)
    load_progress = Signal(LoadProgress)
    load_failed = Signal(Exception)  # Cancelled, session.BrokenInstall, or what the engine or a library raised
    pair_changed = Signal(object)  # the Loaded pair, or None
    busy_changed = Signal()  # a run or a load began or ended
    conversation_changed = Signal(Conversation)  # its last turn changed state, or it lost turns
    streamed = Signal(Conversation, object)  # a TokenEvent or PhaseEvent, recorded into its running turn
    answered = Signal(Conversation, Answer)  # its turn's run ended with this answer (stopped ones too)
    turn_failed = Signal(Conversation, str)  # its turn's run failed: the message says why, in plain words
    run_finished = Signal(bool)  # every turn of a send or a re-run has ended; whether they ran concurrently
    diff_ready = Signal(AnswerDiff)
    diff_message = Signal(str)  # no alignment to show, and why

    def __init__(self, session: ModelSession | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session or ModelSession()
        self._cancel: threading.Event | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._load_task: asyncio.Task[bool] | None = None
        self._compared: tuple[Conversation | None, Conversation | None] = (None, None)
        self._diff_job: bridge.BackgroundJob | None = None
        self._diff_worker = bridge.Worker("c2c-diff")  # every alignment on one thread: none waits for a thread to start
        self._diff_dirty = False
        self._diff_timer = QTimer(self)  # tokens stream faster than alignments are worth making: coalesced
        self._diff_timer.setSingleShot(True)
        self._diff_timer.setInterval(120)
        self._diff_timer.timeout.connect(self._align)

    @property
    def running(self) -> bool:
        return self._run_task is not None and not self._run_task.done()

    @property
    def load_task(self) -> asyncio.Task[bool] | None:
        """The last load's task (done or not): whether it loaded."""
        return self._load_task

    @property
    def loading(self) -> bool:
        return self._load_task is not None and not self._load_task.done()

    # -- the pair -------------------------------------------------------------------------------------------
    def load(self, request: LoadRequest) -> asyncio.Task[bool] | None:
        """Load a pair in place of the current one; the task says whether it loaded (None: busy, not started)."""
        if self.loading or self.running:
            return None
        self._load_task = bridge.spawn(self._load(request))
        self._load_task.add_done_callback(self._busy_ended)
        return self._load_task

    async def _load(self, request: LoadRequest) -> bool:
        self.pair_changing.emit()
        self.loading_changed.emit(True)
        try:
            loaded = await self.session.load(request, self.load_progress.emit)
        except Exception as exc:  # engine errors and anything the libraries raise: said, and the app goes on
            if not isinstance(exc, (C2CError, BrokenInstall)):  # unexpected: one line, the traceback with --debug
                log.error("loading the pair failed: %s (c2c-playground --debug shows the traceback)", describe(exc),
                          exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
            self.pair_changed.emit(None)
            self.load_failed.emit(exc)
            return False
        finally:
            self.loading_changed.emit(False)
        self.pair_changed.emit(loaded)
        return True

    def cancel_load(self) -> bool:
        """Cancel the load under way, if any (it then fails with Cancelled)."""
        if self.loading:
            self.session.cancel_load()
            return True
        return False

    def unload(self) -> asyncio.Task[None] | None:
        if self.running or self.loading or self.session.loaded is None:
            return None
        return bridge.spawn(self._unload())

    async def _unload(self) -> None:
        self.pair_changing.emit()
        await self.session.unload()
        self.pair_changed.emit(None)

    def _busy_ended(self, task: asyncio.Task[Any]) -> None:
        self.busy_changed.emit()

    # -- runs -------------------------------------------------------------------------------------------------
    def send(self, prompt: str, targets: Sequence[tuple[Conversation, Mode | str]], settings: GenerationSettings,
             concurrent: bool, repeats: int = 1) -> asyncio.Task[None] | None:
        """Each conversation answers ``prompt`` in its mode, after its own history; None if busy. ``repeats`` > 1
        answers it that many times (a timing comparison): each turn keeps its last answer and every run's timing.
        A mode may name a team's sharers (``fusion:A``)."""
        if self.running or self.loading:
            return None
        return self._start([(c, c.begin(prompt, mode)) for c, mode in targets], settings, concurrent, repeats)

    def rerun(self, conversation: Conversation, mode: Mode | str, settings: GenerationSettings,
              concurrent: bool) -> asyncio.Task[None] | None:
        """Answer the conversation's last prompt again, in ``mode``, in place of its last answer."""
        if self.running or self.loading:
            return None
        prompt = conversation.drop_last()
        if prompt is None:
            return None
        return self._start([(conversation, conversation.begin(prompt, mode))], settings, concurrent)

    def _start(self, jobs: list[tuple[Conversation, list[dict[str, str]]]], settings: GenerationSettings,
               concurrent: bool, repeats: int = 1) -> asyncio.Task[None]:
        for conversation, _ in jobs:
            self.conversation_changed.emit(conversation)
        self._cancel = threading.Event()
        settings = draw_seed(settings)  # once for every pane of this send: they sample alike, the export repeats it
        # What exists now (the pair's hundreds of thousands of objects, the window) outlives the run: kept out of
        # the collector's sight until it ends, so a full collection while answers stream (the diff's alignments
        # start them) walks only the run's objects; walking them all held the GIL, so the Qt thread, 300 ms.
        gc.freeze()
        self._run_task = bridge.spawn(self._run_all(jobs, settings, concurrent, self._cancel, max(int(repeats), 1)))
        self.busy_changed.emit()
        return self._run_task

    async def _run_all(self, jobs: list[tuple[Conversation, list[dict[str, str]]]], settings: GenerationSettings,
                       concurrent: bool, cancel: threading.Event, repeats: int = 1) -> None:
        try:
            for repeat in range(repeats):
                if repeat:  # the panes take turns within each repeat: a busy spell of the machine hits them alike
                    if cancel.is_set():
                        break
                    jobs = [(c, m) for c, m in jobs if c.again()]
                    for conversation, _ in jobs:
                        self.conversation_changed.emit(conversation)
                if concurrent:
                    tasks = [bridge.loop().create_task(self._run_turn(c, m, settings, cancel, True)) for c, m in jobs]
                    for task in tasks:
                        await task
                else:
                    for conversation, messages in jobs:
                        await self._run_turn(conversation, messages, settings, cancel, False)
        finally:
            gc.unfreeze()
            self._run_task = None
            self.busy_changed.emit()
            self.diff_soon()
            self.run_finished.emit(concurrent)

    async def _run_turn(self, conversation: Conversation, messages: list[dict[str, str]],
                        settings: GenerationSettings, cancel: threading.Event, concurrent: bool) -> None:
        if cancel.is_set():
            conversation.skip()
            self.conversation_changed.emit(conversation)
            return
        conversation.start(concurrent)
        self.conversation_changed.emit(conversation)
        mode = conversation.current.asked
        try:
            answer = await self.session.answer(mode, messages, settings, cancel=cancel, concurrent=concurrent,
                                               on_event=bridge.on_qt_thread(functools.partial(self.record,
                                                                                              conversation)))
        except Exception as exc:  # the engine's typed errors, and anything torch raises: readable, app goes on
            if not isinstance(exc, C2CError):
                log.error("a %s run failed", mode, exc_info=exc)
            message = describe(exc)
            conversation.fail(message)
            self.conversation_changed.emit(conversation)
            self.turn_failed.emit(conversation, message)
            return
        conversation.finish(answer)
        self.conversation_changed.emit(conversation)
        self.answered.emit(conversation, answer)
        self.diff_soon()

    def record(self, conversation: Conversation, event: Any) -> None:
        """A run's TokenEvent or PhaseEvent, delivered on the Qt thread in the order the engine made them."""
        if conversation.record(event):
            self.streamed.emit(conversation, event)
            if isinstance(event, TokenEvent) and event.part == "answer":
                self.diff_soon()

    def stop(self) -> bool:
        """Cancel the run: running turns stop at their next decoder layer, waiting ones never start. Whether one
        was running."""
        if self._cancel is not None:
            self._cancel.set()
        return self.running

    def clear(self, conversations: Sequence[Conversation]) -> Cleared:
        """Start these conversations afresh (not while a run goes); returns what they held, for :meth:`restore`."""
        if self.running:
            return []
        cleared = [(conversation, conversation.clear()) for conversation in conversations]
        for conversation, _ in cleared:
            self.conversation_changed.emit(conversation)
        self.diff_soon()
        return [(c, turns) for c, turns in cleared if turns]

    def restore(self, cleared: Cleared) -> bool:
        """Undo a :meth:`clear`: the conversations hold their turns again (not while a run goes)."""
        if self.running:
            return False
        for conversation, turns in cleared:
            conversation.restore(turns)
            self.conversation_changed.emit(conversation)
        self.diff_soon()
        return True

    # -- the token diff ---------------------------------------------------------------------------------------
    def compare(self, a: Conversation | None, b: Conversation | None) -> None:
        """Align these two conversations' last answers, now and whenever they change (None: nothing chosen)."""
        self._compared = (a, b)
        self.diff_soon()

    def diff_soon(self) -> None:
        """Answers changed: align them again soon (coalesced, off the Qt thread)."""
        self._diff_dirty = True
        if not self._diff_timer.isActive():
            self._diff_timer.start()

    def _align(self) -> None:
        if self._diff_job is not None and self._diff_job.running:
            return  # the job's end looks at the dirty flag again
        self._diff_dirty = False
        a, b = self._compared
        if a is None or b is None:
            return
        ta, tb = a.current, b.current
        if ta is None or tb is None:
            self.diff_message.emit(NOTHING_TO_COMPARE)
            return
        if a is b:
            self.diff_message.emit("Choose two different panes to compare.")
            return
        a_tokens, b_tokens = list(ta.answer_tokens), list(tb.answer_tokens)  # copies: the turns grow meanwhile
        by_id = _answerer(ta) == _answerer(tb)  # one tokenizer: compare ids; else compare texts
        streaming = not (ta.finished and tb.finished)

        def work(progress: Any, cancel: Any) -> AnswerDiff:  # on the worker: all that grows with the answers
            ops = align([t.key if by_id else t.text for t in a_tokens], [t.key if by_id else t.text for t in b_tokens])
            return AnswerDiff(ops, summarize(ops), a_tokens, b_tokens, streaming)

        self._diff_job = bridge.BackgroundJob(work, on_done=self._aligned, on_error=self._align_failed,
                                              worker=self._diff_worker).start()

    def _aligned(self, diff: AnswerDiff) -> None:
        self.diff_ready.emit(diff)
        self._align_ended()

    def _align_failed(self, exc: BaseException) -> None:
        self.diff_message.emit(f"Could not align the answers: {describe(exc)}")
        self._align_ended()

    def _align_ended(self) -> None:
        if self._diff_dirty and not self._diff_timer.isActive():
            self._diff_timer.start()

    def diff_idle(self) -> bool:
        return not self._diff_dirty and not self._diff_timer.isActive() and not (
            self._diff_job is not None and self._diff_job.running)

    def shutdown(self) -> None:
        """The window is closing: cancel what runs, and let no background job call back."""
        self.stop()
        self.cancel_load()
        self._diff_timer.stop()
        if self._diff_job is not None:
            self._diff_job.abandon()  # nor keep the window alive from its thread, where Python could free it
            self._diff_job = None
        self._diff_worker.shutdown()
        self.session.shutdown()
