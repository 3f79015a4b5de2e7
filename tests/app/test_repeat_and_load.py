"""Repeat runs: the controller answers a prompt N times, the panes taking turns, and the timing chart shows each
pane's median and spread; a run the rest of the machine disturbed is marked with the measured figure."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from c2c_playground.widgets.charts import TotalsChart, busy_note, totals_row
from fusers.load_meter import BUSY_CORES
from playground_helpers import fill_pair, run, short_generation


def test_repeat_runs_keep_one_answer_and_every_runs_timing(window, loop, tiny_dirs, tmp_path):
    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form()), window.banner.message()
    short_generation(window, max_new_tokens=4, hint=3)
    window.generation.repeat.setValue(3)
    run(loop, window.send("Hello"))
    for pane in window.panes:
        assert len(pane.turns) == 1 and pane.current.state == "done"  # one answer, not three turns
        timings = pane.current.timings()
        assert len(timings) == 3 and all(t.total > 0 and t.other_cores is not None for t in timings)
    rows = window.totals.rows
    assert [r.runs for r in rows] == [3, 3]
    for row, pane in zip(rows, window.panes):
        totals = sorted(t.total for t in pane.current.timings())
        assert (row.low, row.total, row.high) == (totals[0], totals[1], totals[2])
        assert "median" in TotalsChart.value_text(row) and "3 runs" in TotalsChart.value_text(row)
    window.tabs.setCurrentIndex(0)
    window.save_screenshot(str(tmp_path / "repeats.png"))
    # the export keeps every run, with the median and spread the chart shows
    data = json.loads(open(window.export_comparison(str(tmp_path / "r.json")), encoding="utf-8").read())
    for exported, row, pane in zip(data["panes"], rows, window.panes):
        repeats = exported["repeats"]
        assert repeats["runs"] == 3 and len(repeats["timings"]) == 3
        assert (repeats["fastest_total"], repeats["median_total"], repeats["slowest_total"]) == \
            (row.low, row.total, row.high)
        assert [t["total"] for t in repeats["timings"]] == [t.total for t in pane.current.timings()]
        assert exported["turns"][0]["repeats"] == repeats
    md = open(window.export_comparison(str(tmp_path / "r.md")), encoding="utf-8").read()
    assert "## Repeat runs" in md and f"| 1 | {window.panes[0].mode_text()} | 3 |" in md

    window.generation.repeat.setValue(1)  # a later send runs once, after the conversation so far
    run(loop, window.send("Again"))
    assert all(len(p.turns) == 2 and len(p.current.timings()) == 1 for p in window.panes)
    data = json.loads(open(window.export_comparison(str(tmp_path / "again.json")), encoding="utf-8").read())
    assert [p["repeats"] for p in data["panes"]] == [None, None]  # the last turn ran once
    assert "## Repeat runs" not in open(window.export_comparison(str(tmp_path / "again.md")), encoding="utf-8").read()


def test_a_disturbed_run_is_marked_with_the_cores_others_used(window, loop, tiny_dirs, tmp_path):
    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form()), window.banner.message()
    short_generation(window, max_new_tokens=3, hint=3)
    run(loop, window.send("Hello"))
    measured = [p.current.result.timing for p in window.panes]
    # what the meter measured decides the mark; the figures below are set to both sides of the threshold
    quiet = [replace(t, other_cores=0.1) for t in measured]
    busy = [replace(t, other_cores=1.6) for t in measured]
    assert busy_note([totals_row("1", "relay", quiet)]) == ""
    note = busy_note([totals_row("1", "relay", quiet), totals_row("2", "fusion", busy)])
    assert "Machine busy" in note and "1.6 cores" in note
    window.totals.set_rows([totals_row("1 \u00b7 Text relay", "relay", busy[:1]),
                            totals_row("2 \u00b7 Cache fusion", "fusion", quiet[1:])], "")
    assert window.totals.warning == note and "busy 1.6" in \
        TotalsChart.value_text(window.totals.rows[0]) and "busy" not in TotalsChart.value_text(window.totals.rows[1])
    window.save_screenshot(str(tmp_path / "busy.png"))
    # the window's own chart says what was measured
    window._show_totals()
    marked = any(t.other_cores >= BUSY_CORES for t in measured)
    assert bool(window.totals.warning) == marked


def test_the_load_bar_moves_within_a_step_that_counts_its_work(window):
    """A GGUF file's conversion reports its tensors (LoadProgress.done of .of): the bar moves through that step
    instead of jumping from one step to the next."""
    from fusers.pair import LoadProgress

    window.pair_panel.set_loading(True)
    bar = window.pair_panel.progress

    def fraction() -> float:
        return bar.value() / bar.maximum()

    seen = []
    for p in [LoadProgress(1, 4, "Reading fuser"), LoadProgress(2, 4, "Loading the receiver"),
              *[LoadProgress(2, 4, f"Converting: {d} of 200 tensors", d, 200) for d in (50, 100, 200)],
              LoadProgress(3, 4, "Loading the sharer"), LoadProgress(4, 4, "Warming up")]:
        window.controller.load_progress.emit(p)
        seen.append(fraction())
    assert seen == sorted(seen) and seen[0] == 0.0  # never backwards; a step begun is not yet done
    assert seen[2:5] == pytest.approx([0.25 + 0.25 * d / 200 for d in (50, 100, 200)])
    assert window.pair_panel.progress_text.text() == "Step 4 of 4: Warming up"
    window.pair_panel.set_loading(False)
