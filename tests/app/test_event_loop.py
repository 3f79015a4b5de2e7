"""The Qt thread stays responsive while a pair generates: torch runs on the models' thread, never here.

These tests check the properties, never the clock: forward hooks record which thread runs each model,
and a hook holds the models' thread at a known layer while the test works the UI. How long a stall
lasts on this machine is a figure for benchmarks/event_loop.py, not a test.
"""

from __future__ import annotations

import sys
import threading

import pytest
from PySide6.QtCore import QTimer

from fusers.engine import Mode
from playground_helpers import ModelProbe, fill_pair, nice_of, run, short_generation, threads_niceness

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-after-another", "concurrent"])
def test_every_model_forward_runs_off_the_qt_thread(window, loop, tiny_dirs, concurrent):
    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form())
    short_generation(window, max_new_tokens=6, hint=3)
    window.generation.set_concurrent(concurrent)
    qt_thread = threading.current_thread()
    assert qt_thread is threading.main_thread()
    with ModelProbe(window.session.engine.pair) as probe:
        run(loop, window.send("Tell me about the moon."))  # text relay and cache fusion: all three models run
    assert [p.current.state for p in window.panes] == ["done", "done"]
    assert {part for part, _ in probe.threads} == {"receiver", "sharer", "fuser"}  # the hooks saw every model
    threads = {t for _, t in probe.threads}
    assert qt_thread not in threads
    prefix = "c2c-concurrent" if concurrent else "c2c-models"
    assert all(t.name.startswith(prefix) for t in threads), sorted(t.name for t in threads)
    if not concurrent:
        assert len(threads) == 1  # the one thread that owns the models
    if sys.platform.startswith("linux"):  # every forward ran below the Qt thread: a busy machine schedules the UI first
        from c2c_playground.bridge import MODEL_THREAD_NICENESS

        below = min(19, nice_of(threading.get_native_id()) + MODEL_THREAD_NICENESS)
        assert probe.niceness and set(probe.niceness) == {below}, probe.niceness


@linux_only
def test_threads_started_on_the_models_thread_such_as_torchs_pool_run_below_the_qt_thread(window, loop, tiny_dirs):
    """torch starts its OpenMP pool from the first thread of each that runs a parallel op; those threads inherit
    the models' thread's nice value. The tests run torch on one thread, so this asks for two and runs an op big
    enough to be split (the app runs torch's default, one thread per core)."""
    import torch

    from c2c_playground.bridge import MODEL_THREAD_NICENESS

    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form())  # the models' thread has run torch: it exists now
    before = threads_niceness()

    def parallel_op() -> tuple[int, dict[int, int]]:
        torch.set_num_threads(2)
        try:
            torch.ones(1 << 22).mul(2).sum()  # 4M elements: far above the size torch splits work at
            return threading.get_native_id(), threads_niceness()
        finally:
            torch.set_num_threads(1)  # as the conftest has it, for the tests after this one

    models_tid, during = run(loop, window.session.thread.call(parallel_op))
    below = min(19, nice_of(threading.get_native_id()) + MODEL_THREAD_NICENESS)
    assert during[models_tid] == below
    started = {tid: nice for tid, nice in during.items() if tid not in before}
    assert started, "the parallel op started no thread: torch ran it on the models' thread alone"
    assert set(started.values()) == {below}, (started, below)


def test_the_qt_thread_stays_live_while_the_models_thread_is_held(window, loop, tiny_dirs, qtbot):
    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form())
    window.panes[0].set_mode(Mode.RECEIVER)
    window.panes[1].set_mode(Mode.SHARER)
    short_generation(window, max_new_tokens=12, ignore_eos=True)
    layers = window.session.engine.pair.receiver.shape.layers
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append(1))
    # held in the middle of the receiver's 6th forward: the prompt's and 4 or 5 tokens' are done
    with ModelProbe(window.session.engine.pair, hold_at=5 * layers + 2) as probe:
        task = window.send("Tell me about the moon.")
        try:
            qtbot.waitUntil(probe.held.is_set, timeout=60_000)
            pane = window.panes[0]
            # While torch is stopped mid-forward: the tokens it made before reach the pane, timers fire,
            # and the prompt box takes typing.
            made = probe.forwards_at_hold - 1  # each finished forward made one token
            qtbot.waitUntil(lambda: len(pane.current.answer_tokens) >= made - 1, timeout=60_000)
            assert pane.state_label.text() == "running\u2026" and window.running
            timer.start()
            qtbot.waitUntil(lambda: len(ticks) >= 20, timeout=60_000)
            timer.stop()
            qtbot.keyClicks(window.prompt_box, "next question")
            assert window.prompt_box.toPlainText() == "next question"
            assert probe.held.is_set() and not task.done()  # all of that happened while the models' thread was held
        finally:
            probe.release()
        run(loop, task)
    assert [p.current.state for p in window.panes] == ["done", "done"]
    assert len(window.panes[0].current.answer_tokens) == 12  # the hold changed nothing in the run


def test_background_jobs_on_a_worker_share_its_one_thread_and_keep_their_contract(loop):
    from c2c_playground import bridge

    worker = bridge.Worker("c2c-test-worker")
    seen: list[tuple[str, object]] = []
    ran_on: list[threading.Thread] = []

    def work(n):
        def job(progress, cancel):
            ran_on.append(threading.current_thread())
            for step in range(50):
                progress(step)
            if n == 3:
                raise ValueError("job 3 fails")
            return n * 10
        return job

    try:
        jobs = [bridge.BackgroundJob(work(n), on_progress=lambda v: seen.append(("progress", v)),
                                     on_done=lambda r: seen.append(("done", r)),
                                     on_error=lambda e: seen.append(("error", str(e))), worker=worker).start()
                for n in range(5)]
        assert run(loop, jobs[4]) == 40 and run(loop, jobs[0]) == 0
        with pytest.raises(ValueError, match="job 3 fails"):
            run(loop, jobs[3])
    finally:
        worker.shutdown()
    assert len(set(ran_on)) == 1 and ran_on[0] is not threading.main_thread()
    assert ran_on[0].name.startswith("c2c-test-worker")
    ends = [item for item in seen if item[0] != "progress"]
    assert ends == [("done", 0), ("done", 10), ("done", 20), ("error", "job 3 fails"), ("done", 40)]  # in order, once
    assert len([item for item in seen if item[0] == "progress"]) < 5 * 50  # coalesced
    assert not any(job.running for job in jobs)


def test_the_live_diff_reuses_one_thread_and_a_burst_of_tokens_is_appended_once(window, qtbot, monkeypatch):
    from c2c_playground import controller as controller_module
    from fusers.engine import TokenEvent

    aligned_on: list[threading.Thread] = []
    real_align = controller_module.align

    def observed_align(a, b):  # the real alignment, noting the thread it runs on
        aligned_on.append(threading.current_thread())
        return real_align(a, b)

    monkeypatch.setattr(controller_module, "align", observed_align)
    panes, controller = window.panes, window.controller
    for pane in panes:  # what a send does before the engine's events arrive
        pane.conversation.begin("Tell me about the moon.", pane.mode)
        pane.conversation.start(False)
        controller.conversation_changed.emit(pane.conversation)
    for step in range(6):
        appends = [pane.text_appends for pane in panes]
        for pane in panes:  # a burst: ten tokens each before the loop runs again
            for k in range(10):
                controller.record(pane.conversation,
                                  TokenEvent(pane.mode, "answer", 10 * step + k, f" t{step}.{k}", 0.01 * step))
        assert [len(p.current.answer_tokens) for p in panes] == [10 * (step + 1)] * 2  # the turn holds them at once
        qtbot.waitUntil(lambda: window.diff_idle() and len(window.diff_view.canvas.ops) == 10 * (step + 1))
        assert [pane.text_appends for pane in panes] == [n + 1 for n in appends]
        assert all(pane.transcript.toPlainText().endswith(f" t{step}.9") for pane in panes)
    assert len(aligned_on) >= 6 and len(set(aligned_on)) == 1  # every alignment on one thread, started once
    assert aligned_on[0] is not threading.main_thread() and aligned_on[0].name.startswith("c2c-diff")
    assert "identical" in window.diff_view.divergence.text()


def test_during_a_run_the_collector_skips_what_existed_before_it(window, loop, tiny_dirs, qtbot):
    import gc

    fill_pair(window, tiny_dirs)
    assert run(loop, window.load_from_form())
    short_generation(window, max_new_tokens=4, hint=2)
    assert gc.get_freeze_count() == 0
    layers = window.session.engine.pair.receiver.shape.layers
    with ModelProbe(window.session.engine.pair, hold_at=layers + 1) as probe:
        task = window.send("Tell me about the moon.")
        try:
            qtbot.waitUntil(probe.held.is_set, timeout=60_000)
            # the pair and the window were there before the run: frozen, so a full collection does not walk them
            assert gc.get_freeze_count() > len(gc.get_objects())  # far more than the run made since
        finally:
            probe.release()
        run(loop, task)
    assert gc.get_freeze_count() == 0  # after the run, collected as before
    assert [p.current.state for p in window.panes] == ["done", "done"]


def test_live_figures_repaint_without_asking_the_window_for_a_layout(window, qtbot):
    """A pane's figures change ten times a second while it streams: each change must cost a repaint, not a
    layout of the whole window (what a QLabel's setText asks for)."""
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    class LayoutRequests(QObject):
        count = 0

        def eventFilter(self, watched, event):  # noqa: N802 - Qt name
            if event.type() == QEvent.Type.LayoutRequest:
                self.count += 1
            return False

    figures = window.panes[0].metrics
    strip = figures.parentWidget()
    watcher = LayoutRequests()
    strip.installEventFilter(watcher)
    def deliver_pending_events() -> None:
        # every event already posted (a new window's own layouts among them) is delivered now, not after a wait
        # that a busy machine may outlast: what is counted next is what the figures' changes ask for
        QApplication.sendPostedEvents(None, 0)
        QApplication.processEvents()

    window.panes[0]._set_figures("120 ms", "41.0", "0.50 s", "5", "sequential run")
    deliver_pending_events()
    hint, height = figures.sizeHint(), figures.height()
    watcher.count = figures.layout_requests = 0
    for i in range(30):
        window.panes[0]._set_figures(f"{100 + i} ms", f"{i}.5", f"{i / 10:.2f} s", str(i * 37), "sequential run")
        qtbot.wait(1)
    deliver_pending_events()
    assert watcher.count == 0 and figures.layout_requests == 0
    assert figures.sizeHint() == hint and figures.height() == height  # room kept for the widest values
    assert figures.text() == "TTFT 129 ms   tok/s 29.5   elapsed 2.90 s   tokens 1073   sequential run"
    # a pane too narrow for one line wraps between figures, and a value far wider than its room that changes
    # the height asks for the one layout that shows it
    assert figures.heightForWidth(figures.minimumSizeHint().width()) > figures.heightForWidth(10_000)
    figures.resize(figures.sizeHint().width(), figures.heightForWidth(figures.sizeHint().width()))
    figures.set_figures([("TTFT", "120 ms"), ("tok/s", "41.0"), ("elapsed", "0.50 s"), ("tokens", "1" * 40)])
    assert figures.layout_requests == 1 and figures.text().endswith("tokens " + "1" * 40)
    strip.removeEventFilter(watcher)


def test_the_collector_runs_on_the_qt_thread_only(loop, qtbot):
    """Garbage made on a worker thread past the collector's threshold is collected on the Qt thread, never on
    the worker (where a cycle holding a Qt object would be deleted off its thread)."""
    import gc

    threads: list[str] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            threads.append(threading.current_thread().name)

    def make_garbage() -> None:
        for _ in range(20 * gc.get_threshold()[0]):
            cycle: list = []
            cycle.append(cycle)

    assert not gc.isenabled()
    gc.callbacks.append(seen)
    try:
        worker = threading.Thread(target=make_garbage, name="c2c-test-worker")
        worker.start()
        worker.join()
        assert threads == []  # nothing collected on the worker
        qtbot.waitUntil(lambda: bool(threads), timeout=10_000)
        assert set(threads) == {threading.main_thread().name}
    finally:
        gc.callbacks.remove(seen)
