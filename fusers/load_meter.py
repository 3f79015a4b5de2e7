"""How busy the rest of the machine was during a run: other processes' CPU use, from the kernel's counters.

A run's timing is the method's cost plus the machine's noise. Other processes' busy time over the run's wall time
says how many cores they took meanwhile; the app marks such a run as disturbed. Linux only (``/proc/stat``);
elsewhere nothing is measured (None). No dependency and no Qt: the engine's recorder uses it.
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Other processes using this many cores or more during a run make its timing doubtful (the app marks it).
BUSY_CORES = 0.5


def _machine_busy_seconds() -> float | None:
    """CPU seconds every core has spent busy since boot (all but idle and iowait), or None where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    guest = sum(ticks[8:10])  # guest time is counted in user time already
    return (sum(ticks) - idle - guest) / _TICKS


def _own_seconds() -> float:
    """CPU seconds this process has used, every thread (the app's own concurrent panes are not 'others')."""
    return time.process_time()


class LoadMeter:
    """Started when made; :meth:`other_cores` says how many cores other processes used on average since."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._busy = _machine_busy_seconds()
        self._own = _own_seconds()

    def other_cores(self) -> float | None:
        busy = _machine_busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        others = (busy - self._busy) - (_own_seconds() - self._own)
        # the kernel counts in ticks (10 ms): a short run's figure is rough, never below zero
        return max(others, 0.0) / wall
