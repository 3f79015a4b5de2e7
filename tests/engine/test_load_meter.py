"""The load meter counts other processes' CPU time during a run, not this process's, and the engine's timing
record carries it."""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest

from fusers.load_meter import LoadMeter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")


def test_a_busy_child_process_is_counted_and_our_own_work_is_not():
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter = LoadMeter()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.6\n"
                    "while time.process_time() < end: pass"], check=True)
    wall = time.perf_counter() - started
    cores = meter.other_cores()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    assert child >= 0.5
    # everything else on the machine comes on top of the child's own time; the kernel counts in 10 ms ticks
    assert cores is not None and cores * wall >= child - 0.05, (cores, wall, child)


def test_the_engine_records_other_processes_cores(tiny_pair):
    from fusers.engine import Engine, Mode
    from fusers.generation import GenerationSettings

    answer = Engine(tiny_pair).answer(Mode.RECEIVER, [{"role": "user", "content": "hi"}],
                                      GenerationSettings(max_new_tokens=2))
    assert answer.timing.other_cores is not None and answer.timing.other_cores >= 0.0
    assert "other_cores" in answer.timing.to_dict()
