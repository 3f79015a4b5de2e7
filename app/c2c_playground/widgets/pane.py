"""One chat pane: a mode, its own multi-turn conversation, streaming tokens and live timing."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSizePolicy,
                               QTextBrowser, QToolButton, QVBoxLayout, QWidget)

from fusers.engine import Mode, PhaseEvent, TokenEvent

from .. import theme
from .charts import Figures, PhaseBar, PhaseSpan, seconds
from .diff_view import Token

if TYPE_CHECKING:
    from fusers.engine import Answer

# The order modes are offered in: text relay and cache fusion first, as the app compares them, then the rest in
# the engine's order (so a mode the engine gains is offered without a list here to update).
MODES = (Mode.RELAY, Mode.FUSION) + tuple(m for m in Mode if m not in (Mode.RELAY, Mode.FUSION))
# Streamed text reaches the screen at most once a frame: a fast pair streams a token every few
# milliseconds, and each append relays out the text and repaints the pane.
FRAME_MS = 16


class TurnState(StrEnum):
    """Where one turn of a pane stands. A ``StrEnum``: exports write its value."""

    WAITING = "waiting"  # queued behind other panes
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"  # cancelled while running: its partial answer stays in the conversation
    ERROR = "error"
    SKIPPED = "skipped"  # stopped before it started

    @property
    def busy(self) -> bool:
        return self in (TurnState.WAITING, TurnState.RUNNING)

    @property
    def answered(self) -> bool:
        """The turn has an answer the conversation keeps (stopped ones too)."""
        return self in (TurnState.DONE, TurnState.STOPPED)


@dataclass
class Turn:
    """One prompt and this pane's answer to it."""

    prompt: str
    mode: Mode
    state: TurnState = TurnState.WAITING
    hint: str = ""
    answer: str = ""  # as streamed
    hint_tokens: list[Token] = field(default_factory=list)
    answer_tokens: list[Token] = field(default_factory=list)
    phases: list[PhaseSpan] = field(default_factory=list)
    result: "Answer | None" = None
    error: str | None = None
    concurrent: bool = False
    first_token_at: float | None = None  # run-relative seconds
    last_token_at: float | None = None
    clock_offset: float | None = None  # perf_counter() - run-relative time, to extend open phases live

    def now(self) -> float:
        if self.clock_offset is None:
            return 0.0
        if self.result is not None:
            return self.result.timing.total
        return time.perf_counter() - self.clock_offset

    @property
    def finished(self) -> bool:
        return not self.state.busy

    def answer_text(self) -> str:
        """The engine's final text once the run is over, the streamed text until then."""
        return self.result.text if self.result is not None else self.answer


class ChatPane(QFrame):
    """Signals carry the pane itself so the window needs no lambdas (and none run on worker threads)."""

    mode_changed = Signal(object, object, object)  # pane, old Mode, new Mode
    rerun_requested = Signal(object)
    remove_requested = Signal(object)
    tokens_changed = Signal(object)

    def __init__(self, number: int, mode: Mode, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("pane")
        self.number = number
        self._mode = Mode(mode)
        self.turns: list[Turn] = []
        self.scale = 0.0

        header = QFrame()
        header.setObjectName("paneHeader")
        self.title = QLabel()
        self.title.setObjectName("paneTitle")
        self.mode_box = QComboBox()
        for m in MODES:
            self.mode_box.addItem(m.label, m.value)
        self.mode_box.setCurrentIndex(MODES.index(self._mode))
        self.mode_box.currentIndexChanged.connect(self._mode_picked)
        # narrow panes (four beside the set-up on a laptop) may squeeze the mode's name, which then elides
        self.mode_box.setMinimumWidth(72)
        self.mode_box.setToolTip("What answers in this pane: text relay, cache fusion, both together, or one model "
                                 "alone")
        self.state_label = QLabel("idle")
        self.state_label.setObjectName("paneState")
        self.remove_button = QToolButton()
        self.remove_button.setText("\u2715")
        self.remove_button.setToolTip("Remove this pane")
        self.remove_button.setAutoRaise(True)
        self.remove_button.clicked.connect(self._remove)
        hl = QHBoxLayout(header)
        hl.setContentsMargins(10, 6, 6, 6)
        hl.addWidget(self.title)
        hl.addWidget(self.mode_box)
        hl.addStretch(1)
        hl.addWidget(self.state_label)
        hl.addWidget(self.remove_button)

        # asked after a mode change: inline, so nothing modal stops the other panes
        self.ask_bar = QFrame()
        self.ask_bar.setObjectName("askBar")
        self.ask_text = QLabel()
        self.ask_text.setWordWrap(True)
        self.rerun_button = QPushButton("Re-run")
        self.rerun_button.setObjectName("primary")
        self.rerun_button.clicked.connect(self._rerun)
        self.keep_button = QPushButton("Not now")
        self.keep_button.clicked.connect(self.ask_bar_hide)
        al = QVBoxLayout(self.ask_bar)
        al.setContentsMargins(8, 6, 8, 6)
        al.setSpacing(4)
        al.addWidget(self.ask_text)
        ask_buttons = QHBoxLayout()
        ask_buttons.addStretch(1)
        ask_buttons.addWidget(self.keep_button)
        ask_buttons.addWidget(self.rerun_button)
        al.addLayout(ask_buttons)
        self.ask_bar.hide()

        self.hint_box = QFrame()
        self.hint_box.setObjectName("hintBox")
        self.hint_toggle = QToolButton()
        self.hint_toggle.setObjectName("hintToggle")
        self.hint_toggle.setCheckable(True)
        self.hint_toggle.setChecked(True)
        self.hint_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.hint_toggle.setArrowType(Qt.ArrowType.DownArrow)
        self.hint_toggle.toggled.connect(self._toggle_hint)
        self.hint_text = QPlainTextEdit()
        self.hint_text.setObjectName("hintText")
        self.hint_text.setReadOnly(True)
        self.hint_text.setMaximumHeight(84)
        self.hint_text.setMinimumHeight(40)  # a low screen shows fewer lines of the hint, and scrolls
        self.hint_text.setPlaceholderText("The sharer's hint streams here before the receiver answers.")
        self.hint_box.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # shrinks when folded
        hb = QVBoxLayout(self.hint_box)
        hb.setContentsMargins(6, 2, 6, 6)
        hb.setSpacing(2)
        hb.addWidget(self.hint_toggle)
        hb.addWidget(self.hint_text)

        self.transcript = QTextBrowser()
        self.transcript.setObjectName("transcript")
        self.transcript.setOpenLinks(False)
        self.transcript.setPlaceholderText("")

        strip = QFrame()
        strip.setObjectName("timingStrip")
        # one line that wraps: narrow panes wrap the figures instead of clipping them; it changes 10 times a
        # second while a run streams, and repaints without laying out the window again
        self.metrics = Figures(["999 ms", "9999.9", "99.99 s", "99999"])
        self.metrics.setObjectName("metric")
        self.figures: dict[str, str] = {}
        self.run_kind = ""
        self.phase_bar = PhaseBar()
        sl = QVBoxLayout(strip)
        sl.setContentsMargins(10, 6, 10, 6)
        sl.setSpacing(4)
        sl.addWidget(self.metrics)
        sl.addWidget(self.phase_bar)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(0)
        layout.addWidget(header)
        inner = QVBoxLayout()
        inner.setContentsMargins(6, 6, 6, 0)
        inner.setSpacing(6)
        inner.addWidget(self.ask_bar)
        inner.addWidget(self.hint_box)
        layout.addLayout(inner)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(strip)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumWidth(200)  # four panes beside the set-up still fit 1280 pixels

        self._ticker = QTimer(self)
        self._ticker.setInterval(100)
        self._ticker.timeout.connect(self._show_metrics)
        self._unshown: dict[str, list[str]] = {"hint": [], "answer": []}  # streamed, not appended yet
        self.text_appends = 0  # appends to the hint and the transcript, each a relayout and a repaint
        self._frame = QTimer(self)
        self._frame.setSingleShot(True)
        self._frame.setInterval(FRAME_MS)
        self._frame.timeout.connect(self.show_streamed)
        self._sync_header()
        self._update_hint_title()
        self._render()
        self._show_metrics()

    # -- mode ---------------------------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode, ask: bool = False) -> None:
        """Change the mode from code (restoring a layout); ``ask`` offers the re-run as a user change would."""
        index = MODES.index(Mode(mode))
        if index == self.mode_box.currentIndex():
            return
        if ask:
            self.mode_box.setCurrentIndex(index)
        else:
            self.mode_box.blockSignals(True)
            self.mode_box.setCurrentIndex(index)
            self.mode_box.blockSignals(False)
            self._mode = Mode(mode)
            self._sync_header()

    def _mode_picked(self, index: int) -> None:
        old, new = self._mode, MODES[index]
        if old == new:
            return
        self._mode = new
        self._sync_header()
        if self.last_prompt() is not None:
            preview = self.last_prompt().replace("\n", " ")
            preview = preview if len(preview) <= 60 else preview[:59] + "\u2026"
            self.ask_text.setText(f"Now {new.label.lower()}. Re-run the last prompt here? \u201c{html.escape(preview)}\u201d")
            self.ask_bar.show()
        self.mode_changed.emit(self, old, new)

    def ask_bar_hide(self) -> None:
        self.ask_bar.hide()

    def _rerun(self) -> None:
        self.ask_bar.hide()
        self.rerun_requested.emit(self)

    def _remove(self) -> None:
        self.remove_requested.emit(self)

    def set_number(self, number: int) -> None:
        self.number = number
        self._sync_header()

    def label(self) -> str:
        return f"{self.number} \u00b7 {self._mode.label}"

    def _sync_header(self) -> None:
        self.title.setText(f"{self.number}")
        color = theme.MODE_COLORS.get(self._mode.value, theme.TEXT)
        self.title.setStyleSheet(f"color: {color};")
        self.hint_box.setVisible(self._mode.writes_hint)

    def _toggle_hint(self, shown: bool) -> None:
        self.hint_text.setVisible(shown)
        self.hint_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def set_busy(self, busy: bool) -> None:
        """While runs go, the mode and the pane itself stay put."""
        self.mode_box.setEnabled(not busy)
        self.remove_button.setEnabled(not busy)
        self.rerun_button.setEnabled(not busy)

    # -- conversation -------------------------------------------------------------------------------------
    def history(self) -> list[dict[str, str]]:
        """The conversation so far, as messages for the engine: every answered turn (stopped ones too)."""
        messages: list[dict[str, str]] = []
        for turn in self.turns:
            if turn.state.answered and turn.answer_text():
                messages += [{"role": "user", "content": turn.prompt},
                             {"role": "assistant", "content": turn.answer_text()}]
        return messages

    def last_prompt(self) -> str | None:
        return self.turns[-1].prompt if self.turns else None

    @property
    def current(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    @property
    def running(self) -> bool:
        return bool(self.turns) and self.turns[-1].state.busy

    def begin_turn(self, prompt: str) -> list[dict[str, str]]:
        """Add a turn waiting to run; returns the messages to answer (history plus the prompt)."""
        messages = self.history() + [{"role": "user", "content": prompt}]
        self.turns.append(Turn(prompt, self._mode))
        self._reset_hint()
        self._show(TurnState.WAITING)
        return messages

    def drop_last_turn(self) -> str | None:
        """Forget the last turn (to re-run its prompt); returns its prompt."""
        if not self.turns:
            return None
        prompt = self.turns.pop().prompt
        self._render()
        return prompt

    def clear(self) -> None:
        self.turns.clear()
        self._reset_hint()
        self._show("idle")
        self.tokens_changed.emit(self)

    # -- a run ----------------------------------------------------------------------------------------------
    def start(self, concurrent: bool) -> None:
        turn = self.turns[-1]
        turn.state, turn.concurrent = TurnState.RUNNING, concurrent
        turn.mode = self._mode
        self.run_kind = "concurrent run" if concurrent else "sequential run"
        self.metrics.setToolTip("Concurrent runs share the machine, so their timings overlap and run slower."
                                if concurrent else "Panes ran one after another: each timing is the pane's own.")
        self._set_state(TurnState.RUNNING)
        self._render()
        self._ticker.start()

    def handle_event(self, event: Any) -> None:
        """A TokenEvent or PhaseEvent from the engine, delivered on the Qt thread."""
        if not self.turns or self.turns[-1].state is not TurnState.RUNNING:
            return
        turn = self.turns[-1]
        if turn.clock_offset is None:
            turn.clock_offset = time.perf_counter() - (event.elapsed if isinstance(event, TokenEvent) else event.start)
        if isinstance(event, PhaseEvent):
            if event.end is None:
                turn.phases.append(PhaseSpan(event.phase, event.start, None))
            else:
                for span in reversed(turn.phases):
                    if span.name == event.phase and span.end is None:
                        span.end = event.end
                        break
                else:
                    turn.phases.append(PhaseSpan(event.phase, event.start, event.end))
            self._show_metrics()
        elif isinstance(event, TokenEvent):
            token = Token(event.token_id, event.text)
            if event.part == "hint":
                turn.hint += event.text
                turn.hint_tokens.append(token)
                self._unshown["hint"].append(event.text)
            else:
                if turn.first_token_at is None:
                    turn.first_token_at = event.elapsed
                turn.last_token_at = event.elapsed
                turn.answer += event.text
                turn.answer_tokens.append(token)
                self._unshown["answer"].append(event.text)
                self.tokens_changed.emit(self)
            if not self._frame.isActive():
                self._frame.start()

    def show_streamed(self) -> None:
        """Append the text streamed since the last frame (the turn holds it already)."""
        self._frame.stop()
        hint, answer = self._unshown["hint"], self._unshown["answer"]
        if hint:
            self._append_hint("".join(hint))
        if answer:
            self._append_answer("".join(answer))
        hint.clear()
        answer.clear()

    def finish(self, answer: "Answer") -> None:
        self.show_streamed()
        turn = self.turns[-1]
        turn.result = answer
        turn.state = TurnState.STOPPED if answer.finish_reason == "cancelled" else TurnState.DONE
        if answer.mode.writes_hint and answer.hint is not None and answer.hint != turn.hint:
            turn.hint = answer.hint
            self.hint_text.setPlainText(theme.printable(answer.hint))
        self._ticker.stop()
        self._show(turn.state)
        self.tokens_changed.emit(self)

    def fail(self, message: str) -> None:
        self.show_streamed()
        turn = self.turns[-1]
        turn.state, turn.error = TurnState.ERROR, message
        self._ticker.stop()
        self._show(TurnState.ERROR)

    def skip(self) -> None:
        """Stopped before it started."""
        turn = self.turns[-1]
        turn.state = TurnState.SKIPPED
        self._set_state(TurnState.STOPPED)
        self._render()

    def show_stopping(self) -> None:
        """Stop was asked for; the run ends at its next decoder layer and then says "stopped"."""
        self.state_label.setText("stopping\u2026")
        self.state_label.setStyleSheet("color: #a15c00;")

    # -- display --------------------------------------------------------------------------------------------
    def _show(self, state: TurnState | str) -> None:
        """Header, transcript and metrics after the last turn (or the pane) changed state."""
        self._set_state(state)
        self._render()
        self._show_metrics()

    def _reset_hint(self) -> None:
        """No hint shown and no question asked: a new turn, or none."""
        self._unshown["hint"].clear()
        self.ask_bar.hide()
        self.hint_text.clear()
        self._update_hint_title()

    def _set_state(self, state: TurnState | str) -> None:
        """The header's label for the last turn's state, or ``"idle"`` for a pane with no turns."""
        self.phase_bar.empty_text = {"waiting": "waiting for its turn", "running": "starting\u2026"}.get(
            state, "phases appear here while a pane runs")
        text = {"waiting": "waiting\u2026", "running": "running\u2026", "done": "done", "stopped": "stopped",
                "error": "error", "idle": "idle", "skipped": "stopped"}.get(state, state)
        color = {"running": theme.ACCENT, "waiting": theme.MUTED, "error": "#b42318", "stopped": "#a15c00"}.get(
            state, theme.MUTED)
        self.state_label.setText(text)
        self.state_label.setStyleSheet(f"color: {color};")
        self.set_busy(isinstance(state, TurnState) and state.busy)

    def _update_hint_title(self) -> None:
        turn = self.current
        n = len(turn.hint_tokens) if turn else 0
        self.hint_toggle.setText(f"Sharer's hint \u00b7 {n} tokens" if n else "Sharer's hint")

    def _append_hint(self, text: str) -> None:
        self.text_appends += 1
        cursor = self.hint_text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(theme.printable(text))
        self._update_hint_title()

    def _append_answer(self, text: str) -> None:
        self.text_appends += 1
        bar = self.transcript.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        cursor = QTextCursor(self.transcript.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(theme.printable(text))
        if at_bottom:
            bar.setValue(bar.maximum())

    def _render(self) -> None:
        """Rebuild the transcript; tokens are then appended at its end as they stream."""
        self._unshown["answer"].clear()  # the rebuild shows all the answer has streamed
        if not self.turns:
            self.transcript.setHtml(
                f"<p style='color:{theme.MUTED}'>Type a prompt below and press Ctrl+Enter. "
                f"This pane answers with <b>{html.escape(self._mode.label.lower())}</b> and keeps its own "
                "conversation.</p>")
            return
        parts = []
        for i, turn in enumerate(self.turns):
            parts.append(f"<p style='margin-top:8px; margin-bottom:2px; color:{theme.MUTED}'><b>You</b></p>")
            parts.append(f"<p style='margin-top:0; margin-bottom:6px; white-space:pre-wrap'>{_html(turn.prompt)}</p>")
            color = theme.MODE_COLORS.get(turn.mode.value, theme.TEXT)
            note = _turn_note(turn)
            parts.append(f"<p style='margin-top:6px; margin-bottom:2px'><b style='color:{color}'>"
                         f"{html.escape(turn.mode.label)}</b>"
                         + (f" <span style='color:{theme.MUTED}'>\u00b7 {html.escape(note)}</span>" if note else "")
                         + "</p>")
            if turn.error is not None:
                parts.append(f"<p style='color:#b42318'>{_html(turn.error)}</p>")
            elif i < len(self.turns) - 1 or turn.finished:
                parts.append(f"<p style='margin-top:0; white-space:pre-wrap'>{_html(turn.answer_text())}</p>")
        html_text = "".join(parts)
        last = self.turns[-1]
        if not last.finished and last.error is None:
            html_text += "<p style='margin-top:0; white-space:pre-wrap'></p>"  # the paragraph tokens stream into
        self.transcript.setHtml(html_text)
        if not last.finished and last.answer:
            self._append_answer(last.answer)
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())

    def set_scale(self, scale: float) -> None:
        """Seconds across the phase bar's width, shared by all panes so their bars compare."""
        self.scale = scale
        self.phase_bar.set_scale(scale)

    def run_length(self) -> float:
        turn = self.current
        if turn is None or turn.clock_offset is None:
            return 0.0
        return turn.now()

    def _show_metrics(self) -> None:
        dash = "\u2013"
        turn = self.current
        if turn is None or turn.state is TurnState.WAITING:
            self._set_figures(dash, dash, dash, dash, "" if turn is None else self.run_kind)
            self.phase_bar.set_spans([], 0.0)
            return
        now = turn.now()
        if turn.result is not None:
            t = turn.result.timing
            self._set_figures(seconds(t.ttft) if t.ttft else dash,
                              f"{t.decode_tokens_per_s:.1f}" if t.decode_tokens_per_s else dash,
                              seconds(t.total), str(t.tokens_out), self.run_kind)
            spans = [PhaseSpan(p.name, p.start, p.end) for p in t.phases]
        else:
            n = len(turn.answer_tokens)
            rate = dash
            if n > 1 and turn.last_token_at and turn.first_token_at is not None \
                    and turn.last_token_at > turn.first_token_at:
                rate = f"{(n - 1) / (turn.last_token_at - turn.first_token_at):.1f}"
            self._set_figures(seconds(turn.first_token_at) if turn.first_token_at is not None else dash, rate,
                              seconds(now), str(n), self.run_kind)
            spans = turn.phases
        self.phase_bar.set_spans(spans, now)

    def _set_figures(self, ttft: str, rate: str, elapsed: str, tokens: str, kind: str) -> None:
        self.figures = {"ttft": ttft, "tok/s": rate, "elapsed": elapsed, "tokens": tokens}
        self.metrics.set_figures([("TTFT", ttft), ("tok/s", rate), ("elapsed", elapsed), ("tokens", tokens)], kind)


def _html(text: str) -> str:
    return html.escape(theme.printable(text)).replace("\n", "<br>")  # the paragraphs keep spaces (pre-wrap)


def _turn_note(turn: Turn) -> str:
    note = {TurnState.WAITING: "waiting for its turn", TurnState.RUNNING: "streaming\u2026",
            TurnState.SKIPPED: "stopped before it started", TurnState.ERROR: "failed"}.get(turn.state)
    if note is not None:
        return note
    result = turn.result
    if result is None:
        return ""
    reason = {"eos": "finished", "length": "hit the token limit", "cancelled": "stopped"}.get(result.finish_reason,
                                                                                             result.finish_reason)
    return f"{result.timing.tokens_out} tokens, {seconds(result.timing.total)}, {reason}"
