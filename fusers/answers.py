"""What a run of any answer mode streams (:class:`TokenEvent`, :class:`PhaseEvent`) and returns (:class:`Answer`):
plain records that the app, the CLI and the API server read, kept apart from the engine that makes them; and
:func:`stream`, a run as an iterator of them."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

from .timing import Timing
from .vocabulary import Mode

if TYPE_CHECKING:
    from .fuser import LayerFusion  # imports torch: kept out of the app's first paint
    from .generation import GenerationSettings


@dataclass(frozen=True)
class TokenEvent:
    mode: Mode
    part: str  # "hint" (the sharer's, in text relay and relay + fusion) or "answer"
    token_id: int
    text: str  # the text this token adds
    elapsed: float  # seconds since the run began
    sharer: str = ""  # a team's hint tokens: which sharer writes them (fusers.team); else ""


@dataclass(frozen=True)
class PhaseEvent:
    mode: Mode
    phase: str  # one of fusers.timing.PHASES
    start: float
    end: float | None  # None when the phase begins
    sharer: str = ""  # a team's sharer phases (prefill, hint, fuse): which sharer's; else ""


Event = Union[TokenEvent, PhaseEvent]


@dataclass
class Answer:
    mode: Mode
    text: str
    token_ids: list[int]  # generated ids only, final end-of-sequence excluded
    timing: Timing
    finish_reason: str  # "eos", "length" or "cancelled"
    hint: str | None = None  # text relay and relay + fusion: the sharer's hint
    hint_token_ids: list[int] | None = None
    fusion: list[LayerFusion] | None = None  # cache fusion and relay + fusion: what each receiver layer took
    settings: dict[str, Any] = field(default_factory=dict)
    # a team (fusers.team): the mode as asked ("fusion:A+B"), the sharers that took part, each one's hint
    mode_key: str = ""
    sharers: list[str] | None = None
    hints: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode_key or self.mode.value,
            "text": self.text,
            "token_ids": list(self.token_ids),
            "timing": self.timing.to_dict(),
            "finish_reason": self.finish_reason,
        }
        if self.hint is not None:
            out["hint"] = self.hint
            out["hint_token_ids"] = list(self.hint_token_ids or [])
        if self.fusion is not None:
            out["fusion"] = [vars(f) for f in self.fusion]
        if self.sharers is not None:
            out["sharers"] = list(self.sharers)
        if self.hints is not None:
            out["hints"] = dict(self.hints)
        return out


_DONE = object()


def stream(
    engine: Any,
    mode: Mode | str,
    messages: Sequence[dict[str, str]],
    settings: GenerationSettings | None = None,
) -> Iterator[Event | Answer]:
    """Iterate a run's events, then its :class:`Answer`, of ``engine`` (a :class:`fusers.engine.Engine`) answering
    in ``mode``. Closing the iterator early cancels the run."""
    events: "queue.Queue[Any]" = queue.Queue()
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["answer"] = engine.answer(mode, messages, settings, on_event=events.put, cancel=cancel)
        except BaseException as exc:  # handed to the consumer's thread below
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=work, name="c2c-stream", daemon=True)
    thread.start()
    try:
        while (item := events.get()) is not _DONE:
            yield item
    finally:
        cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["answer"]
