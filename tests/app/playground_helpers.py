"""Helpers the app tests share (conftest.py holds the fixtures)."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from typing import Any, Awaitable


def run(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any] | None, timeout: float = 180.0) -> Any:
    """Drive Qt and asyncio until ``awaitable`` is done (a Task, a BackgroundJob, a coroutine)."""
    assert awaitable is not None, "nothing was started"

    async def wait() -> Any:
        return await awaitable

    return loop.run_until_complete(asyncio.wait_for(wait(), timeout))


def load_agreeing(window, loop) -> bool:
    """Load the pair in the form; when the window asks first (another pair clears the panes' turns), agree."""
    from PySide6.QtWidgets import QMessageBox

    task = window.load_from_form()
    box = window.load_question
    if task is None and box is not None:
        next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.AcceptRole).click()
        loop.run_until_complete(_until(lambda: window.load_question is None))
        task = window.controller.load_task
    return run(loop, task)


async def _until(condition: Any) -> None:
    import asyncio

    while not condition():
        await asyncio.sleep(0.01)


def fill_pair(window, dirs, fuser: Any = "published") -> None:
    panel = window.pair_panel
    panel.preset.setCurrentIndex(0)
    panel.receiver.source.setText(str(dirs.receiver))
    panel.sharer.source.setText(str(dirs.sharer))
    panel.fuser.setText("" if fuser is None else str(dirs.published if fuser == "published" else fuser))
    for row in (panel.receiver, panel.sharer):
        row.device.setCurrentText("cpu")
        row.dtype.setCurrentText("float32")


def short_generation(window, max_new_tokens: int = 8, hint: int = 4, ignore_eos: bool = False) -> None:
    from fusers.generation import GenerationSettings

    window.generation.set_settings(GenerationSettings(max_new_tokens=max_new_tokens, hint_max_new_tokens=hint,
                                                      ignore_eos=ignore_eos))


def nice_of(tid: int) -> int:
    """A thread's nice value, read by the kernel's thread id (any thread of this process, on Linux)."""
    return os.getpriority(os.PRIO_PROCESS, tid)


def threads_niceness() -> dict[int, int]:
    """Every thread of this process, torch's OpenMP threads included: {thread id: nice value}."""
    return {int(tid): nice_of(int(tid)) for tid in os.listdir("/proc/self/task")}


class ModelProbe:
    """Forward pre-hooks on a loaded pair: which thread runs each forward, and a hold at a known point.

    The hooks run on whichever thread runs the models; the test reads what they record on the Qt thread.
    ``hold_at=n`` blocks the n-th call of a receiver decoder layer (counted from 1) until :meth:`release`:
    the models' thread then sits at a known point, however fast or slow the machine is.
    """

    def __init__(self, pair: Any, hold_at: int | None = None) -> None:
        self.hold_at = hold_at
        self.held = threading.Event()
        self.released = threading.Event()
        self.threads: list[tuple[str, threading.Thread]] = []  # (part, thread) of every forward
        self.niceness: list[int] = []  # the nice value of the thread of every forward
        self.layer_calls = 0  # receiver decoder-layer calls begun
        self.forwards = 0  # receiver decoder-stack forwards begun (one per prefill or decode step)
        self.forwards_at_hold: int | None = None
        self.layers_after_release = 0  # receiver decoder layers that ran to their end after release()
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        parts = [("receiver", pair.receiver.model.base_model), ("sharer", pair.sharer.model.base_model)]
        for part, module in parts:
            self._handles.append(module.register_forward_pre_hook(functools.partial(self._seen, part)))
        self._fuser = pair.fuser
        if pair.fuser is not None:
            # the batched fuser pass runs stacked weights through bmm, no module forward: record its one entry
            # point, the real Fuser.fuse, instead
            fuse = pair.fuser.fuse

            def recorded_fuse(*args: Any, **kwargs: Any) -> Any:
                self._seen("fuser", pair.fuser, args)
                return fuse(*args, **kwargs)

            pair.fuser.fuse = recorded_fuse
        for layer in parts[0][1].layers:
            self._handles.append(layer.register_forward_pre_hook(self._layer_begins))
            self._handles.append(layer.register_forward_hook(self._layer_ends))

    def _seen(self, part: str, module: Any, args: Any) -> None:
        with self._lock:
            self.threads.append((part, threading.current_thread()))
            self.niceness.append(nice_of(threading.get_native_id()))
            if part == "receiver":
                self.forwards += 1

    def _layer_begins(self, module: Any, args: Any) -> None:
        with self._lock:
            self.layer_calls += 1
            hold = self.layer_calls == self.hold_at
            if hold:
                self.forwards_at_hold = self.forwards
        if hold:
            self.held.set()
            # a safety net only: a failing test releases in its finally, and this never waits that long
            self.released.wait(timeout=600)

    def _layer_ends(self, module: Any, args: Any, output: Any) -> None:
        with self._lock:
            if self.released.is_set():
                self.layers_after_release += 1

    def release(self) -> None:
        self.released.set()

    def remove(self) -> None:
        self.release()
        for handle in self._handles:
            handle.remove()
        if self._fuser is not None:
            self._fuser.__dict__.pop("fuse", None)  # the class's own method again

    def __enter__(self) -> "ModelProbe":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
