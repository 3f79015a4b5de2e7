"""A load's progress, a pair's or a team's: numbered steps, cancel between them, and a step's own counted work."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from .errors import Cancelled


@dataclass
class LoadProgress:
    step: int  # 1-based
    total: int
    message: str
    done: int = 0  # within the step, where it counts its work (a GGUF file's tensors converted): done of `of`
    of: int = 0


class LoadSteps:
    """A load's numbered steps, a pair's or a team's: each one checks cancel, then is said to ``progress``."""

    def __init__(self, total: int, progress: Callable[[LoadProgress], None] | None,
                 cancel: threading.Event | None):
        self.total, self.progress, self.cancel, self.step = total, progress, cancel, 0

    def __call__(self, message: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("Loading was cancelled.")
        self.step += 1
        if self.progress is not None:
            self.progress(LoadProgress(self.step, self.total, message))

    def within(self, message: str) -> Callable[[int, int], None]:
        """The current step's own progress (a GGUF file's tensors), said in its message too."""
        def tell(done: int, of: int) -> None:
            if self.progress is not None:
                self.progress(LoadProgress(self.step, self.total, f"{message}: {done} of {of} tensors", done, of))
        return tell
