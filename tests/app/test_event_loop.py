"""The Qt thread stays responsive while a pair generates: torch runs on the models' thread, never here."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer

from playground_helpers import fill_pair, run, short_generation

TICK_MS = 10


def test_the_event_loop_never_stalls_100_ms_while_a_tiny_pair_generates(window, loop, tiny_dirs):
    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form())
    short_generation(window, max_new_tokens=64, hint=8, ignore_eos=True)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    task = window.send("Tell me about the moon.")
    began = last[0] = time.perf_counter()
    timer.start()
    run(loop, task)
    ended = time.perf_counter()
    timer.stop()
    assert all(p.current.state == "done" and len(p.current.answer_tokens) == 64 for p in window.panes)
    # the measure means something only if the generation outlasted many ticks, and ticks went on to its end
    assert ended - began > 20 * TICK_MS / 1000, f"the generation took only {ended - began:.3f} s"
    assert len(gaps) >= 10, "the timer hardly ran: the loop was blocked"
    gaps.append(ended - last[0])  # the wait from the last tick to the end counts as a gap too
    stalls = sorted(max(g - TICK_MS / 1000, 0.0) for g in gaps)
    assert stalls[-1] < 0.100, f"largest stall {stalls[-1] * 1000:.0f} ms (p50 {stalls[len(stalls) // 2] * 1000:.1f} ms)"
