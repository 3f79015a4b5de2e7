"""What a run of any answer mode streams (:class:`TokenEvent`, :class:`PhaseEvent`) and returns (:class:`Answer`):
plain records that the app, the CLI and the API server read, kept apart from the engine that makes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from .timing import Timing
from .vocabulary import Mode

if TYPE_CHECKING:
    from .fuser import LayerFusion  # imports torch: kept out of the app's first paint


@dataclass(frozen=True)
class TokenEvent:
    mode: Mode
    part: str  # "hint" (the sharer's, in text relay and relay + fusion) or "answer"
    token_id: int
    text: str  # the text this token adds
    elapsed: float  # seconds since the run began


@dataclass(frozen=True)
class PhaseEvent:
    mode: Mode
    phase: str  # one of fusers.timing.PHASES
    start: float
    end: float | None  # None when the phase begins


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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode.value,
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
        return out
