"""What a running download reports (per pair: bytes, files, rate, the files in flight), and the tracker that the
download threads update."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .environment import REPO_ID
from .format import format_bytes, format_duration
from .verification import RepoEntry

PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class FileProgress:
    repo_id: str
    path: str
    done: int
    total: int


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot of a running download; sent to the ``progress`` callback from download threads."""

    stage: str  # "fuser" | "receiver" | "sharer"
    repo_id: str
    file: str  # the file this update is about ("" for start/end updates)
    file_done: int
    file_total: int
    done: int  # bytes in the cache out of ``total``, files already there included
    total: int
    files_done: int
    files_total: int
    rate: float  # bytes/s over the last seconds, 0.0 until known
    eta: float | None  # seconds, None until a rate is known
    elapsed: float
    active: tuple[FileProgress, ...] = ()  # files being fetched right now
    finished: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def describe(self) -> str:
        eta = f", {format_duration(self.eta)} left" if self.eta is not None and not self.finished else ""
        rate = f", {format_bytes(self.rate)}/s" if self.rate else ""
        return f"{self.stage}: {format_bytes(self.done)} of {format_bytes(self.total)}{rate}{eta}"


ProgressCallback = Callable[[DownloadProgress], None]



class TransferStopped(Exception):
    """Raised inside huggingface_hub's progress hook to stop a transfer (cancel, or another file failed)."""


@dataclass
class FileJob:
    """One file of a download: the stage it belongs to, whether the cache has it, the bytes fetched so far."""

    stage: str
    entry: RepoEntry
    present: bool
    done: int = 0


@dataclass
class DownloadTracker:
    """Per-pair progress of one download (bytes, files, rate, files in flight) and its cancel flags.

    Updated from the download threads, under ``lock``.
    """

    jobs: list[FileJob]
    progress: ProgressCallback | None
    cancel: threading.Event
    abort: threading.Event = field(default_factory=threading.Event)  # another file failed: stop the rest
    lock: threading.Lock = field(default_factory=threading.Lock)
    start: float = field(default_factory=time.monotonic)
    transferred: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=64))
    active: dict = field(default_factory=dict)  # (repo, path) -> FileJob
    stage: str = "fuser"
    repo_id: str = REPO_ID
    last_emit: float = 0.0

    def check(self) -> None:
        if self.cancel.is_set() or self.abort.is_set():
            raise TransferStopped()

    def add(self, job: FileJob, n: int) -> None:
        with self.lock:
            first = job.done == 0 and n > 0  # always shown: the file has started to arrive
            job.done += n
            self.transferred += n
            now = time.monotonic()
            self.samples.append((now, self.transferred))
            self._emit(job, force=first, now=now)
        self.check()  # after counting, so a cancelled chunk is visible; the client then deletes the partial file

    def begin(self, job: FileJob) -> None:
        with self.lock:
            self.active[(job.entry.repo_id, job.entry.path)] = job
            self._emit(job, force=True)

    def end(self, job: FileJob, ok: bool) -> None:
        with self.lock:
            self.active.pop((job.entry.repo_id, job.entry.path), None)
            if ok:
                job.done = job.entry.size  # also when the client only linked a blob it already had
                job.present = True
            else:
                self.transferred -= job.done  # the partial file is gone
                job.done = 0
            self._emit(job, force=True)

    def rate(self, now: float) -> float:
        """Bytes per second over the last few seconds (over the whole run until then)."""
        recent = [(t, b) for t, b in self.samples if now - t <= 5.0]
        if len(recent) >= 2 and recent[-1][0] - recent[0][0] >= 0.5:
            (t0, b0), (t1, b1) = recent[0], recent[-1]
            return max(0.0, (b1 - b0) / (t1 - t0))
        elapsed = now - self.start
        return self.transferred / elapsed if elapsed >= 0.2 and self.transferred > 0 else 0.0

    def snapshot(self, job: FileJob | None, finished: bool = False, now: float | None = None) -> DownloadProgress:
        now = time.monotonic() if now is None else now
        done = sum(j.entry.size if j.present else j.done for j in self.jobs)
        total = sum(j.entry.size for j in self.jobs)
        rate = self.rate(now)
        eta = (total - done) / rate if rate > 0 else (0.0 if done >= total else None)
        return DownloadProgress(
            stage=job.stage if job else self.stage,
            repo_id=job.entry.repo_id if job else self.repo_id,
            file=job.entry.path if job else "",
            file_done=job.done if job else 0,
            file_total=job.entry.size if job else 0,
            done=done,
            total=total,
            files_done=sum(j.present for j in self.jobs),
            files_total=len(self.jobs),
            rate=rate,
            eta=eta,
            elapsed=now - self.start,
            active=tuple(FileProgress(j.entry.repo_id, j.entry.path, j.done, j.entry.size)
                         for j in self.active.values()),
            finished=finished,
        )

    def _emit(self, job: FileJob | None, force: bool, now: float | None = None) -> None:
        if self.progress is None:
            return
        now = time.monotonic() if now is None else now
        if not force and now - self.last_emit < PROGRESS_INTERVAL_S:
            return
        self.last_emit = now
        self.progress(self.snapshot(job, now=now))

    def emit_stage(self, stage: str, repo_id: str, finished: bool = False) -> None:
        with self.lock:
            self.stage, self.repo_id = stage, repo_id
            if self.progress is not None:
                self.progress(self.snapshot(None, finished=finished))
