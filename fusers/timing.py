"""The timing record every answer carries, and the recorder that fills it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .devices import synchronize, unique_devices
from .load_meter import LoadMeter

if TYPE_CHECKING:
    import torch

PHASES = ("tokenize", "sharer_prefill", "receiver_prefill", "fuse", "hint", "decode")


@dataclass
class Phase:
    name: str  # one of PHASES
    start: float  # seconds since the run began
    end: float | None  # None only while the phase runs (a streamed PhaseEvent); every phase of a Timing ends
    sharer: str = ""  # a team's sharer phases (its prefill, hint and fuse): which sharer's; else ""


def decode_rate(tokens: int, first: float, last: float) -> float:
    """Decode speed in tokens per second: the tokens after the first over the seconds from the first to the last
    (the first token's wait is the prefill's, TTFT's). 0.0 while it cannot be told: fewer than two tokens."""
    if tokens < 2 or last <= first:
        return 0.0
    return (tokens - 1) / (last - first)


@dataclass
class Timing:
    """Seconds unless stated; each phase field is the time of its phase (``docs/engine-api.md`` defines them).

    ``hint`` is the sharer decoding the hint (text relay, relay + fusion); its prompt is in ``sharer_prefill``.
    Relay + fusion has two sharer prefills (the hint's prompt, then the answer prompt that fusion reads): the
    field sums them, ``phases`` lists each.
    """

    tokenize: float = 0.0
    sharer_prefill: float = 0.0
    receiver_prefill: float = 0.0
    fuse: float = 0.0
    hint: float = 0.0
    ttft: float = 0.0
    decode_tokens_per_s: float = 0.0
    total: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    peak_memory_bytes: int = 0  # on the answering model's device (the first of peak_memory_by_device)
    # every device the run used -> its peak: CUDA max allocated, or the process's peak RSS for "cpu"
    peak_memory_by_device: dict[str, int] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    # cache fusion, relay + fusion: "sequential" or "overlapped" (Engine.overlaps_prefills), else ""
    prefills: str = ""
    # how the answering models decoded: "cuda graphs" (static cache, fusers.static_decode) or "generate"
    decode_path: str = ""
    # cores other processes used on average during the run (fusers.load_meter); None where it cannot be measured
    other_cores: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Clocks one run. Synchronises every device the run uses before every reading, so GPU work is counted in
    its phase, whichever model's device it ran on (a sharer on another GPU, or on the CPU)."""

    def __init__(self, devices: "torch.device | Sequence[torch.device]",
                 on_phase: Callable[[str, float, float | None, str], None] | None = None):
        self.devices = unique_devices([devices] if not isinstance(devices, (list, tuple)) else devices)
        self.timing = Timing()
        self._on_phase = on_phase
        self.t0 = self._clock()
        self._open: dict[tuple[str, str], float] = {}  # (phase, sharer) -> start
        self.load = LoadMeter()

    def finish(self, at: float) -> Timing:
        """The run ended at ``at``: close what is open, and note how busy the rest of the machine was."""
        self.close_open(at)
        self.timing.total = at
        self.timing.other_cores = self.load.other_cores()
        return self.timing

    def _clock(self) -> float:
        synchronize(*self.devices)
        return time.perf_counter()

    def elapsed(self) -> float:
        return self._clock() - self.t0

    def start(self, name: str, sharer: str = "") -> float:
        """Open phase ``name``; ``sharer`` names a team's sharer, whose phases run beside the others'."""
        at = self.elapsed()
        self._open[(name, sharer)] = at
        if self._on_phase:
            self._on_phase(name, at, None, sharer)
        return at

    def end(self, name: str, at: float | None = None, sharer: str = "") -> float:
        at = self.elapsed() if at is None else at
        start = self._open.pop((name, sharer))
        self.timing.phases.append(Phase(name, start, at, sharer))
        if name != "decode":  # decode speed is reported as tokens/s, not as a duration; a team's sharers sum
            setattr(self.timing, name, getattr(self.timing, name) + (at - start))
        if self._on_phase:
            self._on_phase(name, start, at, sharer)
        return at

    def close_open(self, at: float) -> None:
        """End whatever is still open (a run cut short by cancel)."""
        for name, sharer in list(self._open):
            self.end(name, at, sharer)
