"""Helpers the app tests share (conftest.py holds the fixtures)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable


def run(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any] | None, timeout: float = 60.0) -> Any:
    """Drive Qt and asyncio until ``awaitable`` is done (a Task, a BackgroundJob, a coroutine)."""
    assert awaitable is not None, "nothing was started"

    async def wait() -> Any:
        return await awaitable

    return loop.run_until_complete(asyncio.wait_for(wait(), timeout))


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
