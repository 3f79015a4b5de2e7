"""A pane's conversation as data: its turns, their streamed tokens and phases, and where each stands. No Qt here.

The run controller fills a :class:`Conversation` from the engine's events; a pane shows it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Hashable

from fusers.engine import Mode, PhaseEvent, TokenEvent
from fusers.team import mode_key, parse_mode
from fusers.timing import Phase, decode_rate
from fusers.vocabulary import DEFAULT_PANE_MODES, MAX_PANES, MIN_PANES  # noqa: F401  (the window reads them here)

if TYPE_CHECKING:
    from fusers.engine import Answer, Event
    from fusers.timing import Timing

# What the app compares: a new window's panes, and the first modes each pane's menu offers.
COMPARED = tuple(Mode(m) for m in DEFAULT_PANE_MODES)


def sharers_of(mode: Mode | str) -> tuple[str, ...] | None:
    """The sharers a pane mode names (``fusion:A+B`` -> ("A", "B")); None: every loaded sharer."""
    return parse_mode(mode)[1]


def hint_piece(before: str, previous: str, sharer: str, text: str) -> str:
    """The text a team's hint token adds where the hints so far read ``before`` and the last token was
    ``previous``'s: each sharer's hint starts on its own line after its name (a pair's hint is one text)."""
    if not sharer or sharer == previous:
        return text
    return ("\n" if before else "") + f"{sharer}: " + text.lstrip()


def team_hints(hints: dict[str, str]) -> str:
    """Every sharer's hint, each on its line after its name, as :func:`hint_piece` streams them."""
    return "\n".join(f"{name}: {hint}" for name, hint in hints.items())


@dataclass(frozen=True, slots=True)  # one object per streamed token, not two: less for the collector
class Token:
    key: Hashable  # the token's id: the diff compares ids when both answers share a tokenizer, else the texts
    text: str


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
    hint: str = ""  # a team's: every sharer's hint, each on its line after its name
    answer: str = ""  # as streamed
    hint_tokens: list[Token] = field(default_factory=list)
    answer_tokens: list[Token] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)  # as streamed: the running one has no end yet
    result: "Answer | None" = None
    error: str | None = None
    concurrent: bool = False
    first_token_at: float | None = None  # run-relative seconds
    last_token_at: float | None = None
    clock_offset: float | None = None  # perf_counter() - run-relative time, to extend open phases live
    runs: list["Timing"] = field(default_factory=list)  # earlier repeats' timings (Repeat runs), this one's aside
    sharers: tuple[str, ...] | None = None  # the team's sharers the mode names (fusion:A); None: every one
    hint_sharer: str = ""  # whose hint the last hint token was (a team's relay)

    @property
    def asked(self) -> str:
        """The mode as the engine takes it: ``fusion``, or ``fusion:A`` naming a team's sharers."""
        return mode_key(self.mode, self.sharers)

    def took_part(self) -> tuple[str, ...] | None:
        """The team's sharers that answered (the engine's word once it has answered), or the ones asked for;
        None: a plain pair's, or every loaded sharer before the answer says which."""
        if self.result is not None and self.result.sharers is not None:
            return tuple(self.result.sharers)
        return self.sharers

    def timings(self) -> list["Timing"]:
        """Every repeat's timing, this run's last (once it has one)."""
        return self.runs + ([self.result.timing] if self.result is not None else [])

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

    def tokens_per_s(self) -> float:
        """Decode speed: the engine's figure once the run is over, the same measure of the streamed tokens until
        then; 0.0 while it cannot be told."""
        if self.result is not None:
            return self.result.timing.decode_tokens_per_s
        if self.first_token_at is None or self.last_token_at is None:
            return 0.0
        return decode_rate(len(self.answer_tokens), self.first_token_at, self.last_token_at)

    def record(self, event: "Event") -> None:
        """Add a streamed TokenEvent or PhaseEvent of this turn's run."""
        if self.clock_offset is None:
            self.clock_offset = time.perf_counter() - (event.elapsed if isinstance(event, TokenEvent) else event.start)
        if isinstance(event, PhaseEvent):
            if event.end is None:
                self.phases.append(Phase(event.phase, event.start, None, event.sharer))
                return
            for phase in reversed(self.phases):
                if phase.name == event.phase and phase.sharer == event.sharer and phase.end is None:
                    phase.end = event.end
                    return
            self.phases.append(Phase(event.phase, event.start, event.end, event.sharer))
            return
        token = Token(event.token_id, event.text)
        if event.part == "hint":
            self.hint += hint_piece(self.hint, self.hint_sharer, event.sharer, event.text)
            self.hint_sharer = event.sharer
            self.hint_tokens.append(token)
            return
        if self.first_token_at is None:
            self.first_token_at = event.elapsed
        self.last_token_at = event.elapsed
        self.answer += event.text
        self.answer_tokens.append(token)


class Conversation:
    """One pane's turns: what it was asked, in which mode, and what it answered."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []

    @property
    def current(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    @property
    def running(self) -> bool:
        return bool(self.turns) and self.turns[-1].state.busy

    def last_prompt(self) -> str | None:
        return self.turns[-1].prompt if self.turns else None

    def history(self) -> list[dict[str, str]]:
        """The conversation so far, as messages for the engine: every answered turn (stopped ones too)."""
        messages: list[dict[str, str]] = []
        for turn in self.turns:
            if turn.state.answered and turn.answer_text():
                messages += [{"role": "user", "content": turn.prompt},
                             {"role": "assistant", "content": turn.answer_text()}]
        return messages

    def begin(self, prompt: str, mode: Mode | str) -> list[dict[str, str]]:
        """Add a turn waiting to run (``mode`` may name a team's sharers: ``fusion:A``); returns the messages to
        answer (history plus the prompt)."""
        messages = self.history() + [{"role": "user", "content": prompt}]
        base, names = parse_mode(mode)
        self.turns.append(Turn(prompt, base, sharers=names))
        return messages

    def drop_last(self) -> str | None:
        """Forget the last turn (to run its prompt again); returns its prompt."""
        return self.turns.pop().prompt if self.turns else None

    def clear(self) -> list[Turn]:
        """Forget every turn; returns them, for :meth:`restore` (an undo)."""
        turns, self.turns = self.turns, []
        return turns

    def restore(self, turns: list[Turn]) -> None:
        """Put back turns :meth:`clear` returned, in place of whatever the conversation holds now."""
        self.turns = list(turns)

    # the last turn's run, in order: start, then record each event, then finish, fail; or skip instead
    def start(self, concurrent: bool) -> None:
        turn = self.turns[-1]
        turn.state, turn.concurrent = TurnState.RUNNING, concurrent

    def record(self, event: "Event") -> bool:
        """Add a streamed event to the running turn; False if none runs (a late event of a run that ended)."""
        if not self.turns or self.turns[-1].state is not TurnState.RUNNING:
            return False
        self.turns[-1].record(event)
        return True

    def finish(self, answer: "Answer") -> None:
        turn = self.turns[-1]
        turn.result = answer
        turn.state = TurnState.STOPPED if answer.finish_reason == "cancelled" else TurnState.DONE
        if answer.mode.writes_hint and answer.hints:  # a team's: each sharer's, as they streamed
            turn.hint = team_hints(answer.hints)
        elif answer.mode.writes_hint and answer.hint is not None:
            turn.hint = answer.hint  # the engine's final hint: the streamed one may hold back a stop string

    def again(self) -> bool:
        """Run the last turn once more (a repeat of a timing comparison): its answer makes way, its timing is kept.
        False when it has no answer to repeat (it failed or was stopped)."""
        turn = self.turns[-1] if self.turns else None
        if turn is None or turn.state is not TurnState.DONE or turn.result is None:
            return False
        self.turns[-1] = Turn(turn.prompt, turn.mode, runs=turn.timings(), sharers=turn.sharers)
        return True

    def fail(self, message: str) -> None:
        turn = self.turns[-1]
        turn.state, turn.error = TurnState.ERROR, message

    def skip(self) -> None:
        """Stopped before it started."""
        self.turns[-1].state = TurnState.SKIPPED
