"""One chat pane: a mode, its own multi-turn conversation, streaming tokens and live timing."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy,
                               QTextBrowser, QToolButton, QVBoxLayout, QWidget)

from fusers.engine import Mode, PhaseEvent
from fusers.load_meter import BUSY_CORES
from fusers.team import mode_key, parse_mode

from .. import theme
from ..conversation import COMPARED, Conversation, Turn, TurnState, hint_piece
from .charts import Figures, PhaseBar, seconds
from .hint_box import HintBox
from .sharers import SharerLine

# The order modes are offered in: the ones the app compares first, then the rest in the engine's order (so a
# mode the engine gains is offered without a list here to update).
MODES = COMPARED + tuple(m for m in Mode if m not in COMPARED)
# Streamed text reaches the screen at most once a frame: a fast pair streams a token every few
# milliseconds, and each append relays out the text and repaints the pane.
FRAME_MS = 16


class ChatPane(QFrame):
    """Shows one :class:`Conversation` (the run controller fills it) and the mode its next turn takes.

    Signals carry the pane itself so the window needs no lambdas (and none run on worker threads)."""

    mode_changed = Signal(object, object, object)  # pane, old Mode, new Mode
    rerun_requested = Signal(object)
    remove_requested = Signal(object)
    tokens_changed = Signal(object)

    def __init__(self, number: int, mode: Mode | str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("pane")
        self.number = number
        self._mode, sharers = parse_mode(mode)
        self.conversation = Conversation()
        self.scale = 0.0
        self.removable = True
        self._busy = False

        header = QFrame()
        header.setObjectName("paneHeader")
        self.title = QLabel()
        self.title.setObjectName("paneTitle")
        self.mode_box = QComboBox()
        for m in MODES:
            self.mode_box.addItem(m.label, m.value)
        self.mode_box.setCurrentIndex(MODES.index(self._mode))
        self.mode_box.currentIndexChanged.connect(self._mode_picked)
        # every mode's whole name, whichever is chosen: four panes beside the set-up still fit 1366 pixels
        self.mode_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.mode_box.setToolTip("What answers in this pane: text relay, cache fusion, both together, or one model "
                                 "alone")
        # a team's sharers on a line of their own: four panes' headers still fit 1366 pixels
        self.sharer_row = SharerLine()
        self.picker = self.sharer_row.picker  # which of a team's sharers this pane's mode uses
        self.picker.set_chosen(sharers)
        self.picker.picked.connect(self._sharers_picked)
        self._hint_sharer = ""  # whose hint the pane showed last (a team's relay)
        self.state_label = QLabel("idle")
        self.state_label.setObjectName("paneState")
        self.remove_button = QToolButton()
        self.remove_button.setText("\u2715")
        self.remove_button.setToolTip("Remove this pane")
        self.remove_button.setAutoRaise(True)
        self.remove_button.clicked.connect(self._remove)
        hl = QHBoxLayout()
        hl.setSpacing(4)
        hl.addWidget(self.title)
        hl.addWidget(self.mode_box)
        hl.addStretch(1)
        hl.addWidget(self.state_label)
        hl.addWidget(self.remove_button)
        header_rows = QVBoxLayout(header)
        header_rows.setContentsMargins(8, 6, 4, 6)
        header_rows.setSpacing(4)
        header_rows.addLayout(hl)
        header_rows.addWidget(self.sharer_row)

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

        self.hint_box = HintBox()
        self.hint_toggle, self.hint_text = self.hint_box.toggle, self.hint_box.body

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
        inner.setContentsMargins(4, 6, 4, 0)
        inner.setSpacing(6)
        inner.addWidget(self.ask_bar)
        inner.addWidget(self.hint_box)
        layout.addLayout(inner)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(strip)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

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

    @property
    def key(self) -> str:
        """The mode as the engine takes it: ``fusion``, or ``fusion:A`` where it uses some of a team's sharers."""
        return mode_key(self._mode, None if self._mode is Mode.RECEIVER else self.picker.chosen())

    def set_team(self, names: tuple[str, ...]) -> None:
        """The loaded team's sharers (() for a pair): the pane's sharer menu offers them."""
        self.picker.set_team(names)
        self._sync_picker()

    def _sync_picker(self) -> None:
        self.sharer_row.sync(self._mode)

    def _sharers_picked(self) -> None:
        self._sync_header()
        self._offer_rerun()
        self.mode_changed.emit(self, self._mode, self._mode)

    def set_mode(self, mode: Mode | str, ask: bool = False) -> None:
        """Change the mode from code (restoring a layout; ``fusion:A`` picks a team's sharers too); ``ask`` offers
        the re-run as a user change would."""
        mode, sharers = parse_mode(mode)
        self.picker.set_chosen(sharers)
        self._sync_picker()
        index = MODES.index(mode)
        if index == self.mode_box.currentIndex():
            self._sync_header()
            return
        if ask:
            self.mode_box.setCurrentIndex(index)
        else:
            self.mode_box.blockSignals(True)
            self.mode_box.setCurrentIndex(index)
            self.mode_box.blockSignals(False)
            self._mode = mode
            self._sync_picker()
            self._sync_header()

    def set_fusion_available(self, available: bool, why: str = "") -> None:
        """Offer the modes that need a fuser, or grey them out in the menu with ``why`` as their tooltip."""
        model = self.mode_box.model()
        for i, m in enumerate(MODES):
            if m.needs_fuser:
                item = model.item(i)
                item.setEnabled(available)
                item.setToolTip("" if available else why)

    def _mode_picked(self, index: int) -> None:
        old, new = self._mode, MODES[index]
        if old == new:
            return
        self._mode = new
        self._sync_picker()
        self._sync_header()
        self._offer_rerun()
        self.mode_changed.emit(self, old, new)

    def _offer_rerun(self) -> None:
        if self.conversation.last_prompt() is not None:
            preview = self.conversation.last_prompt().replace("\n", " ")
            preview = preview if len(preview) <= 60 else preview[:59] + "\u2026"
            self.ask_text.setText(f"Now {self.mode_text().lower()}. Re-run the last prompt here? "
                                  f"\u201c{html.escape(preview)}\u201d")
            self.ask_bar.show()

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

    def mode_text(self) -> str:
        """The mode in words, with the team's sharers it uses ("Cache fusion · A"; a pair's: the mode alone)."""
        return mode_words(self._mode, self.picker.chosen() or self.picker.team if self.picker.team else None)

    def label(self) -> str:
        return f"{self.number} \u00b7 {self.mode_text()}"

    def _sync_header(self) -> None:
        self.title.setText(f"{self.number}")
        color = theme.MODE_COLORS.get(self._mode.value, theme.TEXT)
        self.title.setStyleSheet(f"color: {color};")
        self.hint_box.setVisible(self._mode.writes_hint)

    def set_busy(self, busy: bool) -> None:
        """While runs go, the mode and the pane itself stay put."""
        self._busy = busy
        self.mode_box.setEnabled(not busy)
        self.picker.setEnabled(not busy)
        # hidden, not greyed: its room goes to "waiting...", so four panes' headers still fit 1366 pixels
        self.remove_button.setVisible(self.removable and not busy)
        self.rerun_button.setEnabled(not busy)

    def set_removable(self, removable: bool) -> None:
        """Whether the window has panes to spare (the pane's remove button shows when it is not busy)."""
        self.removable = removable
        self.remove_button.setVisible(removable and not self._busy)

    # -- conversation -------------------------------------------------------------------------------------
    @property
    def turns(self) -> list[Turn]:
        return self.conversation.turns

    @property
    def current(self) -> Turn | None:
        return self.conversation.current

    @property
    def running(self) -> bool:
        return self.conversation.running

    def show_conversation(self) -> None:
        """The conversation's last turn changed state (or it has no turns now): show where it stands."""
        turn = self.current
        if turn is None:  # cleared
            self._reset_hint()
            self._show("idle")
            self.tokens_changed.emit(self)
        elif turn.state is TurnState.WAITING:  # a new turn
            self._reset_hint()
            self._show(TurnState.WAITING)
        elif turn.state is TurnState.RUNNING:
            self.run_kind = "concurrent run" if turn.concurrent else "sequential run"
            self.metrics.setToolTip("Concurrent runs share the machine, so their timings overlap and run slower."
                                    if turn.concurrent else
                                    "Panes ran one after another: each timing is the pane's own.")
            self._set_state(TurnState.RUNNING)
            self._render()
            self._ticker.start()
        elif turn.state is TurnState.SKIPPED:
            self._set_state(TurnState.STOPPED)
            self._render()
        else:  # done, stopped or failed
            self.show_streamed()
            if turn.result is not None and turn.mode.writes_hint and \
                    self.hint_text.toPlainText() != theme.printable(turn.hint):
                self.hint_text.setPlainText(theme.printable(turn.hint))  # the engine's final hint
            self._ticker.stop()
            self._show(turn.state)
            if turn.state is not TurnState.ERROR:
                self.tokens_changed.emit(self)

    def show_event(self, event: Any) -> None:
        """A TokenEvent or PhaseEvent the running turn has just recorded."""
        if isinstance(event, PhaseEvent):
            self._show_metrics()
            return
        text = event.text
        if event.part == "hint" and event.sharer:  # a team's relay: each sharer's hint on its own line
            text = hint_piece(self.hint_text.toPlainText() or "".join(self._unshown["hint"]), self._hint_sharer,
                              event.sharer, text)
            self._hint_sharer = event.sharer
        self._unshown[event.part].append(text)
        if event.part == "answer":
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
        self._hint_sharer = ""
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
        self.hint_box.set_title(len(turn.hint_tokens) if turn else 0, len(self.picker.chosen() or self.picker.team))

    def _append_hint(self, text: str) -> None:
        self.text_appends += 1
        self.hint_box.append(text)
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
            # a later turn is answered after the ones above it: said, since it can change the answer
            follows = f" \u00b7 turn {i + 1}, after the {i} above" if i else ""
            parts.append(f"<p style='margin-top:8px; margin-bottom:2px; color:{theme.MUTED}'><b>You</b>{follows}</p>")
            parts.append(f"<p style='margin-top:0; margin-bottom:6px; white-space:pre-wrap'>{_html(turn.prompt)}</p>")
            color = theme.MODE_COLORS.get(turn.mode.value, theme.TEXT)
            note = _turn_note(turn)
            parts.append(f"<p style='margin-top:6px; margin-bottom:2px'><b style='color:{color}'>"
                         f"{html.escape(mode_words(turn.mode, turn.took_part()))}</b>"
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
        rate = f"{turn.tokens_per_s():.1f}" if turn.tokens_per_s() else dash
        if turn.result is not None:
            t = turn.result.timing
            busy = t.other_cores is not None and t.other_cores >= BUSY_CORES  # the machine's noise, said
            self._set_figures(seconds(t.ttft) if t.ttft else dash, rate, seconds(t.total), str(t.tokens_out),
                              self.run_kind + (" \u26a0 machine busy" if busy else ""))
            if busy:
                self.metrics.setToolTip(f"Other processes used {t.other_cores:.1f} cores during this run: its "
                                        "timing is slower than the method alone.")
            self.phase_bar.set_spans(t.phases, now)
        else:
            self._set_figures(seconds(turn.first_token_at) if turn.first_token_at is not None else dash, rate,
                              seconds(now), str(len(turn.answer_tokens)), self.run_kind)
            self.phase_bar.set_spans(turn.phases, now)

    def _set_figures(self, ttft: str, rate: str, elapsed: str, tokens: str, kind: str) -> None:
        self.figures = {"ttft": ttft, "tok/s": rate, "elapsed": elapsed, "tokens": tokens}
        self.metrics.set_figures([("TTFT", ttft), ("tok/s", rate), ("elapsed", elapsed), ("tokens", tokens)], kind)


def mode_words(mode: Mode, sharers: tuple[str, ...] | None) -> str:
    """A mode in words with the team's sharers that take part: "Cache fusion · A+B"; the mode alone for a pair's
    (None) or the receiver alone."""
    if not sharers or mode is Mode.RECEIVER:
        return mode.label
    return f"{mode.label} \u00b7 {'+'.join(sharers)}"


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
