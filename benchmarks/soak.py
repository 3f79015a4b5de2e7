"""A long session in the real app: does it leak, stall, or change its answers?

    QT_QPA_PLATFORM=offscreen python benchmarks/soak.py [--sends 200] [--json]

The window runs offscreen on the demo pair for 200 sends. Sends alternate the panes (two to four) and their
modes, hold multi-turn conversations (three turns, then Clear), stop one send in ten as soon as a token has
streamed, and every 50 sends unload the pair and load it again. Decoding is greedy.

It reports, against the goals (the exit status is 1 when one is missed):

- resident memory after the 20th and after the last send (after a garbage collection): growth <= 5%;
- threads and open file descriptors at the same two points: no growth;
- event-loop stall p99 over the whole run (how late a 5 ms QTimer tick comes, as benchmarks/event_loop.py
  measures it): <= 16 ms;
- answers: each (mode, conversation so far) asked again gets the answer it got the first time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from event_loop import Probe, open_window, percentiles  # noqa: E402 - same probe, same private settings folder

GOALS = {"rss_growth_pct": 5.0, "stall_p99_ms": 16.0}
# (pane modes) in turn; every conversation uses the next layout, so panes are added, removed and re-moded
LAYOUTS = [("relay", "fusion"), ("fusion", "receiver"), ("receiver", "sharer", "fusion"),
           ("relay", "fusion", "receiver", "sharer"), ("sharer", "relay"), ("hybrid", "relay", "fusion")]
TURNS = 3  # sends per conversation before Clear
CANCEL_EVERY = 10
RELOAD_EVERY = 50


def resources() -> dict[str, int]:
    gc.collect()
    status = Path("/proc/self/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return {"rss_mb": rss_kb // 1024, "threads": len(os.listdir("/proc/self/task")),
            "python_threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd"))}


def soak(sends: int, log=print) -> dict:
    from PySide6.QtCore import qInstallMessageHandler

    quiet = ("does not support propagateSizeHints", "does not support raise")  # the offscreen plugin's notes
    qInstallMessageHandler(lambda mode, context, message: None if any(q in message for q in quiet)
                           else print(message, file=sys.stderr))

    from c2c_playground import bridge
    from fusers.demo import WORLD_NAME, demo_root
    from fusers.demo.world import World
    from fusers.engine import Mode
    from fusers.generation import GenerationSettings
    from fusers.presets import DEMO_NAME

    missing = {m.value for m in Mode} - {m for layout in LAYOUTS for m in layout}
    if missing:  # every answer mode soaks: a mode the engine gains needs a layout here
        raise SystemExit(f"no layout runs {', '.join(sorted(missing))}: add one to LAYOUTS")
    app, window = open_window()
    run = bridge.run_until_complete
    run(window.refresh_presets())
    if window.pair_panel.choose_preset(DEMO_NAME) is None or not run(window.load_from_form()):
        raise SystemExit(f"the demo pair did not load: {window.banner.message()}")
    window.generation.set_settings(GenerationSettings(max_new_tokens=24, hint_max_new_tokens=24))
    world = World.load(demo_root() / WORLD_NAME)
    questions = [q for q, _ in window.session.loaded.examples]
    questions += [f.question for split in ("a", "b", "c") for f in world.eval_facts(split)[:2]]

    def set_layout(modes: tuple[str, ...]) -> None:
        while len(window.panes) > len(modes):
            window.remove_pane(window.panes[-1])
        while len(window.panes) < len(modes):
            window.add_pane()
        for pane, mode in zip(window.panes, modes):
            pane.set_mode(Mode(mode))

    first_answers: dict[str, str] = {}
    compared = differed = cancelled = reloads = 0
    mismatches: list[str] = []
    marks: dict[str, dict[str, int]] = {}
    probe = Probe()
    probe.start()
    run(bridge.sleep(2.0))
    idle = percentiles(probe.stop())  # the baseline, same run: what the machine alone costs an idle window
    probe.start()
    started = time.perf_counter()
    conversation = 0
    for i in range(1, sends + 1):
        if i > 1 and (i - 1) % RELOAD_EVERY == 0:
            run(window.unload())
            if not run(window.load_from_form()):
                raise SystemExit(f"reloading failed: {window.banner.message()}")
            reloads += 1
        turn = (i - 1) % TURNS
        if turn == 0:
            window.clear()
            set_layout(LAYOUTS[conversation % len(LAYOUTS)])
            conversation += 1
        prompt = questions[(conversation + turn) % len(questions)]
        keys = [json.dumps([p.mode.value, p.history(), prompt]) for p in window.panes]
        task = window.send(prompt)
        cancel = i % CANCEL_EVERY == 0
        if cancel:
            while not task.done() and not any(p.current.answer for p in window.panes):
                run(bridge.sleep(0.002))
            window.stop()
        run(task)
        if cancel:
            cancelled += 1
            window.clear()  # a stopped answer would make the rest of this conversation unrepeatable
            conversation += 1
        else:
            for pane, key in zip(window.panes, keys):
                if pane.current.state != "done":
                    raise SystemExit(f"send {i}: pane {pane.number} ended {pane.current.state}: {pane.current.error}")
                text = pane.current.answer_text()
                if key in first_answers:
                    compared += 1
                    if first_answers[key] != text:
                        differed += 1
                        mismatches.append(f"send {i}, {pane.mode.value}: {first_answers[key]!r} then {text!r}")
                else:
                    first_answers[key] = text
        if i in (20, sends):
            probe.timer.stop()  # the measurement's own garbage collection is not a stall of the app
            marks[str(i)] = resources()
            probe._last = time.perf_counter()
            probe.timer.start()
        if i % 25 == 0:
            log(f"  {i}/{sends} sends, {time.perf_counter() - started:.0f} s")
    stalls = percentiles(probe.stop())
    window.close()
    bridge.finish_pending()
    bridge.uninstall()

    first, last = marks["20"], marks[str(sends)]
    out = {
        "sends": sends, "seconds": round(time.perf_counter() - started, 1), "cancelled": cancelled,
        "reloads": reloads, "distinct_prompts": len(first_answers), "answers_compared": compared,
        "answers_differed": differed, "mismatches": mismatches[:5],
        "after_20": first, f"after_{sends}": last,
        "rss_growth_pct": round(100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 2),
        "thread_growth": last["threads"] - first["threads"], "fd_growth": last["fds"] - first["fds"],
        "stall": {k: round(v, 2) for k, v in stalls.items()},
        "idle_stall": {k: round(v, 2) for k, v in idle.items()},
    }
    out["goals_met"] = {
        "rss": out["rss_growth_pct"] <= GOALS["rss_growth_pct"],
        "threads": out["thread_growth"] <= 0,
        "fds": out["fd_growth"] <= 0,
        "stall_p99": stalls["p99_ms"] <= GOALS["stall_p99_ms"],
        "answers": differed == 0 and compared > 0,
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.sends < 20:
        parser.error("--sends must be at least 20 (memory is compared from the 20th send)")
    import torch

    torch.set_num_threads(1)  # as the app tests do: the Qt thread keeps a core of its own on small machines
    out = soak(args.sends, log=(lambda *_: None) if args.json else print)
    if args.json:
        print(json.dumps(out))
    else:
        a, b = out["after_20"], out[f"after_{args.sends}"]
        print(f"{out['sends']} sends in {out['seconds']} s ({out['cancelled']} stopped, {out['reloads']} reloads)")
        print(f"RSS       {a['rss_mb']} MB after 20 -> {b['rss_mb']} MB after {args.sends}: "
              f"{out['rss_growth_pct']:+.2f}% (goal <= {GOALS['rss_growth_pct']}%)")
        print(f"threads   {a['threads']} -> {b['threads']}   open fds {a['fds']} -> {b['fds']}")
        s = out["stall"]
        print(f"stall     p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms over {s['ticks']} ticks "
              f"(goal p99 <= {GOALS['stall_p99_ms']} ms)")
        s = out["idle_stall"]
        print(f"  idle window, same run (baseline): p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms")
        print(f"answers   {out['answers_compared']} repeats of {out['distinct_prompts']} greedy prompts, "
              f"{out['answers_differed']} differed")
        for line in out["mismatches"]:
            print("   ", line)
        print("goals met:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in out["goals_met"].items()))
    return 0 if all(out["goals_met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
