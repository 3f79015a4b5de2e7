"""Is the first comparison after loading timed as fairly as the later ones? The demo pair, in the real app.

    QT_QPA_PLATFORM=offscreen python benchmarks/first_send.py [--rounds 5] [--json]

Each round is a fresh process (one-time costs are paid once per process): it opens the real MainWindow,
loads the demo pair from its preset as a user does, sends an example question to the text relay and
cache fusion panes one after another, then clears and sends it again three times. Per pane it reports
the median over rounds of (first send's total / the later sends' median total), in wall time (what
the pane shows) and in CPU seconds of the models' thread (one torch thread: steadier on a shared,
busy machine). The baseline, in the same run and interleaved with it, is the same rounds with the
load's warm-up turned off (fusers.engine.warm_up made a no-op in that process).
Target: with the warm-up, every pane's ratio within 10% of 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENDS = 4  # the first, and three later ones whose median is the reference


def one_round(warm: bool) -> dict[str, list[float]]:
    """In this process: load the demo pair in the app, send SENDS times; the panes' totals in seconds."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="c2c-bench-first-")  # never the user's settings
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import time

    import fusers.engine

    if not warm:
        fusers.engine.warm_up = lambda pair, cancel=None: None  # the baseline: loading as it was before
    # CPU seconds of the models' thread per answer: unlike wall time, other processes on a shared machine
    # barely change it, and with one torch thread all of a run's work is on that thread
    cpu: dict[str, list[float]] = {}
    answer = fusers.engine.Engine.answer

    def timed_answer(self, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.thread_time()
        try:
            return answer(self, mode, *args, **kwargs)
        finally:
            cpu.setdefault(f"{fusers.engine.Mode(mode).value} cpu", []).append(time.thread_time() - started)

    fusers.engine.Engine.answer = timed_answer
    from PySide6.QtWidgets import QApplication

    from c2c_playground import bridge, theme
    from c2c_playground.window import MainWindow
    from fusers.demo import example_questions
    from fusers.presets import DEMO_NAME

    app = QApplication.instance() or QApplication([])
    theme.apply(app)
    bridge.install(app)
    window = MainWindow(persist=False)
    window.show()
    presets = bridge.run_until_complete(window.refresh_presets())
    demo = window.pair_panel.choose_preset(DEMO_NAME)
    if demo is None:
        raise SystemExit(f"no demo preset among {[p.name for p in presets]}")
    if not bridge.run_until_complete(window.load_from_form()):
        raise SystemExit(f"the demo pair did not load: {window.banner.message()}")
    question = example_questions(demo.receiver)[0][0]
    totals: dict[str, list[float]] = {}
    for _ in range(SENDS):
        window.clear()
        bridge.run_until_complete(window.send(question))
        for pane in window.panes:
            if pane.current is None or pane.current.state != "done":
                raise SystemExit(f"pane {pane.number} did not finish: {window.banner.message()}")
            totals.setdefault(pane.mode.value, []).append(pane.current.result.timing.total)
    window.close()
    bridge.uninstall()
    totals.update({mode: runs[-SENDS:] for mode, runs in cpu.items()})  # the sends (the warm-up ran before)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per set-up")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one-round", choices=("warm", "cold"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.one_round == "warm")))
        return 0

    setups = (("warm-up at load (the app)", "warm"), ("no warm-up (baseline)", "cold"))
    runs: dict[str, list[dict[str, list[float]]]] = {label: [] for label, _ in setups}
    for _ in range(args.rounds):
        for label, flag in setups:  # interleaved: both set-ups see the same load on a shared machine
            proc = subprocess.run([sys.executable, __file__, "--one-round", flag], capture_output=True, text=True,
                                  timeout=600)
            if proc.returncode != 0:
                raise SystemExit(f"a round failed ({proc.returncode}): {proc.stderr[-2000:]}")
            runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report: dict[str, dict[str, object]] = {}
    for label, rounds in runs.items():
        report[label] = {}
        for mode in rounds[0]:
            firsts, seconds = [r[mode][0] for r in rounds], [statistics.median(r[mode][1:]) for r in rounds]
            ratios = [f / s for f, s in zip(firsts, seconds)]
            report[label][mode] = {"first_ms_median": statistics.median(firsts) * 1000,
                                   "later_ms_median": statistics.median(seconds) * 1000,
                                   "first_over_later_median": statistics.median(ratios), "ratios": ratios}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"demo pair, {args.rounds} fresh processes each; first send / later sends (median) of one question:")
    for label, modes in report.items():
        print(f"  {label}:")
        for mode, r in modes.items():
            print(f"    {mode:10s} first {r['first_ms_median']:6.1f} ms  later {r['later_ms_median']:6.1f} ms  "
                  f"first/later {r['first_over_later_median']:.2f}  (rounds: "
                  f"{', '.join(f'{x:.2f}' for x in r['ratios'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
