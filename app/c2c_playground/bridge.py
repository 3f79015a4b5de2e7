"""The app's one door to qasync and to threads.

Everything else in the app calls these helpers instead of qasync or ``threading`` directly, so a
change of event-loop library stays in this file (qasync is not actively maintained).

Rules they enforce:

- Torch never runs on the Qt thread. Models are loaded, run and freed on :class:`ModelThread`, one
  thread that owns them (the engine is not thread-safe).
- Model threads run below the Qt thread (:func:`run_below_the_qt_thread`): on a busy machine the UI
  is scheduled first, and torch's threads wait.
- Other threads never touch widgets or asyncio. They hand work back with :func:`on_qt_thread`,
  which goes through ``loop.call_soon_threadsafe``; calls arrive on the Qt thread in the order they
  were made, so a run's last token always arrives before its result.
- Nothing here needs ``asyncio.get_running_loop()``: the loop is kept in this module, so coroutines
  also make progress when a test spins Qt with ``qtbot.wait``.
- Never connect a lambda to a signal emitted from a worker thread: it runs in that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Coroutine, Generator, Iterator, TypeVar

from fusers.errors import C2CError

T = TypeVar("T")

_log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None


def install(app: Any) -> asyncio.AbstractEventLoop:
    """Make a qasync loop driven by ``app`` the asyncio loop of this (the Qt) thread."""
    global _loop
    os.environ.setdefault("QT_API", "pyside6")
    import qasync

    _loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(_loop)
    _collect_on_the_qt_thread(app)
    return _loop


def _collect_on_the_qt_thread(app: Any) -> None:
    """Python's automatic collection runs on whichever thread allocates when a threshold is reached: often the
    models' thread, mid-load, where a cycle holding a Qt object would delete it off its thread (Qt warns
    "Timers cannot be stopped from another thread", and may crash). So the app turns automatic collection off
    and collects here, on the Qt thread, the generations Python would have."""
    import gc

    from PySide6.QtCore import QTimer

    global _gc_timer
    gc.disable()
    _gc_timer = QTimer(app)
    _gc_timer.setInterval(200)
    _gc_timer.timeout.connect(_collect_what_is_due)
    _gc_timer.start()


def _collect_what_is_due() -> None:
    import gc

    counts, thresholds = gc.get_count(), gc.get_threshold()
    due = [g for g in range(3) if counts[g] > thresholds[g]]
    if due:
        gc.collect(due[-1])  # the oldest generation due; the younger ones go with it


_gc_timer: Any = None  # the Qt thread's collector while install()'s loop lives


def uninstall() -> None:
    """Close the loop made by :func:`install` (tests make one per test)."""
    global _loop
    global _gc_timer
    if _gc_timer is not None:
        import gc

        _gc_timer.stop()
        _gc_timer = None
        gc.enable()
    if _loop is not None:
        if not _loop.is_closed():
            _loop.close()
        asyncio.set_event_loop(None)
    _loop = None


def loop() -> asyncio.AbstractEventLoop:
    if _loop is None:
        raise RuntimeError("c2c_playground.bridge.install(app) must run before the app uses threads")
    return _loop


def run_until_complete(awaitable: Awaitable[T]) -> T:
    """Run the Qt and asyncio loops until ``awaitable`` finishes (headless mode, tests)."""
    return loop().run_until_complete(awaitable)


def run_forever() -> None:
    """Run until the application quits (its last window closes)."""
    loop().run_forever()


def finish_pending(timeout: float = 10.0) -> None:
    """Cancel the tasks still running when the app quits, and let their ``finally`` blocks run."""
    app_loop = loop()
    pending = [t for t in asyncio.all_tasks(app_loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        app_loop.run_until_complete(asyncio.wait(pending, timeout=timeout))


def stop() -> None:
    if _loop is not None and _loop.is_running():
        _loop.stop()


def spawn(coro: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
    """Start a coroutine on the Qt thread's loop. An exception it lets out reaches ``sys.excepthook``
    (the crash dialog), never the void."""
    task = loop().create_task(coro)
    task.add_done_callback(_report_failure)
    return task


def sleep(seconds: float) -> "asyncio.Future[None]":
    """``asyncio.sleep`` that also works while only Qt spins the loop (tests using ``qtbot.wait``)."""
    waiter = loop().create_future()
    handle = loop().call_later(seconds, _wake, waiter)
    waiter.add_done_callback(lambda _: handle.cancel())
    return waiter


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


def _report_failure(task: "asyncio.Task[Any]") -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        sys.excepthook(type(exc), exc, exc.__traceback__)


def on_qt_thread(fn: Callable[..., Any], alive: Any = None) -> Callable[..., None]:
    """A function any thread may call; ``fn(*args)`` then runs on the Qt thread, in call order.

    With ``alive`` (a QObject), calls that arrive after its C++ object was deleted are dropped:
    a run may still stream into a pane the user just removed.
    """
    app_loop = loop()

    def deliver(*args: Any) -> None:
        if alive is None or _is_valid(alive):
            fn(*args)

    def post(*args: Any) -> None:
        try:
            app_loop.call_soon_threadsafe(deliver, *args)
        except RuntimeError:  # the loop closed while the app was quitting: nobody is listening
            pass

    return post


def _is_valid(obj: Any) -> bool:
    import shiboken6

    return shiboken6.isValid(obj)


class ModelThreadCrash(C2CError):
    """Work on the models' thread ended with SystemExit, KeyboardInterrupt or the like (a library's sys.exit)."""


def _contained(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn``; an exception that is not an Exception becomes a :class:`ModelThreadCrash`.

    asyncio re-raises SystemExit and KeyboardInterrupt out of the event loop itself, so one reaching a
    future from the models' thread would stop the whole app; as an Exception it reaches the banner.
    """
    try:
        return fn(*args, **kwargs)
    except Exception:
        raise
    except BaseException as exc:
        said = f" ({str(exc).strip().splitlines()[0][:160]})" if str(exc).strip() else ""
        raise ModelThreadCrash(
            f"The models' thread was stopped by {type(exc).__name__}{said} in {getattr(fn, '__name__', 'its work')}; "
            "the app goes on: send again, or load the pair again if answers look wrong.") from exc


# How many nice levels model threads run below the thread that started them (the Qt thread). 10 gives a
# runnable Qt thread about nine tenths of a core it shares with one model thread (CFS weights 1024 : 110).
MODEL_THREAD_NICENESS = 10


def run_below_the_qt_thread(niceness: int = MODEL_THREAD_NICENESS) -> None:
    """Lower the calling worker thread's scheduling priority by ``niceness`` (at most to nice 19).

    On Linux a nice value belongs to one thread, and the threads it starts later inherit it: torch's
    OpenMP pool is started by the first thread of each that runs a parallel op, so the pool of a model
    thread runs below the Qt thread too. Raising niceness needs no privilege and lowering it back does,
    so this is only ever called on worker threads, never on the Qt thread. Elsewhere (macOS, Windows:
    the call would change the whole process) it does nothing and says so in the log.
    """
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("run_below_the_qt_thread is for worker threads: the Qt thread could not get its priority back")
    if not sys.platform.startswith("linux"):
        _log.info("model threads keep the Qt thread's priority: per-thread nice values are Linux only")
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError as exc:  # a sandbox that forbids it: the app works, the UI is just not favoured
        _log.info("model threads keep the Qt thread's priority: %s", exc)


class _Turns:
    """Who may use the models at once: the runs of the "concurrent runs" setting together, or one answer alone
    (an API client's). One waiting alone lets no new shared run start, so it is never starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0  # to run alone
        self._waiting_shared = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._waiting_shared += 1
            self._cond.wait_for(lambda: not self._alone and not self._waiting)
            self._waiting_shared -= 1
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._alone and not self._shared)
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


def _in_turn(turn: Callable[[], Any], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with turn():
        return fn(*args, **kwargs)


class ModelThread:
    """The one thread that owns the models: every load, run and unload goes through :meth:`call`.

    ``concurrent`` gives a second pool for the "concurrent runs" setting: each pane's run then borrows
    the loaded models from its own thread (reads only; the tests check the answers stay equal). Both
    pools' threads, and torch's threads they start, run below the Qt thread (:func:`run_below_the_qt_thread`).
    :meth:`submit_alone` (the API server's answers) runs on the models' thread while no concurrent run does.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="c2c-models",
                                            initializer=run_below_the_qt_thread)
        self._concurrent: ThreadPoolExecutor | None = None
        self._turns = _Turns()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "asyncio.Future[T]":
        return loop().run_in_executor(self._executor, functools.partial(_contained, fn, *args, **kwargs))

    def call_concurrently(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "asyncio.Future[T]":
        if self._concurrent is None:
            self._concurrent = ThreadPoolExecutor(max_workers=4, thread_name_prefix="c2c-concurrent",
                                                  initializer=run_below_the_qt_thread)
        return loop().run_in_executor(self._concurrent, functools.partial(_contained, _in_turn, self._turns.shared,
                                                                          fn, *args, **kwargs))

    def submit_alone(self, fn: Callable[[], T]) -> "concurrent.futures.Future[T]":
        """Run ``fn`` on the models' thread, after the work handed to it before and while no concurrent run
        uses the models; any thread may call this (no event loop needed: the API server's thread does)."""
        return self._executor.submit(_contained, _in_turn, self._turns.alone, fn)

    def shutdown(self, wait: bool = True) -> None:
        for pool in (self._executor, self._concurrent):
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=True)


class Worker:
    """One long-lived thread that runs :class:`BackgroundJob` work one job after another.

    For work that comes often, such as the token diff's alignment while answers stream: a job of its
    own thread would wait in ``Thread.start`` for the new thread to run (about 10 ms of the Qt thread on
    a loaded machine, every time); handing work to a thread that already runs waits for nothing. The
    thread starts with the first job and ends after :meth:`shutdown`.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[[], None]) -> None:
        self._executor.submit(fn)

    def shutdown(self) -> None:
        """Let the thread end once the work handed to it is done; never waits for it."""
        self._executor.shutdown(wait=False)


class BackgroundJob:
    """Blocking work on a background thread, with its progress delivered on the Qt thread.

    Made for long work that reports progress from its own threads and can be cancelled, such as a
    download or a token alignment::

        job = BackgroundJob(
            lambda progress, cancel: hub.download_pair(name, progress=progress, cancel=cancel),
            on_progress=self.show_progress,  # on the Qt thread, with the newest value
            on_done=self.downloaded,         # on the Qt thread, with what the work returned
            on_error=self.failed,            # on the Qt thread, with the exception it raised
        )
        job.start()
        job.cancel()          # sets the threading.Event handed to the work
        result = await job    # optional: a job is awaitable from a coroutine too

    ``work(progress, cancel)`` gets a ``progress`` callable any thread may call, and a
    ``threading.Event``. Progress is coalesced: the Qt thread sees the newest value, with at most one
    delivery pending, so a chatty callback never floods the event loop. ``on_done`` or ``on_error``
    comes once, after the last progress. The work runs on a daemon thread of its own, or on ``worker``
    (a :class:`Worker`, after the jobs handed to it before), never on the models' thread, so it cannot
    hold up a run. Keep a reference to the job while it runs.
    """

    def __init__(
        self,
        work: Callable[[Callable[[Any], None], threading.Event], Any],
        *,
        on_progress: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "c2c-background",
        worker: Worker | None = None,
    ) -> None:
        self.cancel_event = threading.Event()
        self._work, self._name, self._worker = work, name, worker
        self.on_progress, self.on_done, self.on_error = on_progress, on_done, on_error
        self._lock = threading.Lock()
        self._latest: Any = None
        self._pending = False
        self._post_flush = on_qt_thread(self._flush)
        self._post_finish = on_qt_thread(self._finish)
        self._started = False
        self._outcome: tuple[bool, Any] | None = None  # (ok, result or exception), on the Qt thread
        self._waiters: list[asyncio.Future[Any]] = []
        self._abandoned = False

    # -- any thread --
    def start(self) -> "BackgroundJob":
        self._started = True
        if self._worker is not None:
            self._worker.submit(self._run)
        else:
            threading.Thread(target=self._run, name=self._name, daemon=True).start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    def abandon(self) -> None:
        """Cancel, and forget the callbacks: their owner (a closing window) is going away."""
        self.cancel_event.set()
        self.on_progress = self.on_done = self.on_error = None
        self._abandoned = True

    def _progress(self, value: Any) -> None:
        with self._lock:
            self._latest = value
            if self._pending:
                return
            self._pending = True
        self._post_flush()

    def _run(self) -> None:
        try:
            result = self._work(self._progress, self.cancel_event)
        except BaseException as exc:  # handed to the Qt thread, which decides what the user sees
            self._post_finish(False, exc)
        else:
            self._post_finish(True, result)

    # -- Qt thread --
    @property
    def running(self) -> bool:
        return self._started and self._outcome is None

    def _flush(self) -> None:
        with self._lock:
            value, self._pending = self._latest, False
        if self._outcome is None and self.on_progress is not None:
            self.on_progress(value)

    def _finish(self, ok: bool, value: Any) -> None:
        self._flush_if_pending()
        self._outcome = (ok, value)
        for waiter in self._waiters:
            if waiter.done():
                continue
            if ok:
                waiter.set_result(None)
            else:
                waiter.set_exception(value)
        if ok and self.on_done is not None:
            self.on_done(value)
        elif not ok and self.on_error is not None:
            self.on_error(value)
        elif not ok and not self._waiters and not self._abandoned:
            sys.excepthook(type(value), value, value.__traceback__)  # nobody handles it: show it, never drop it

    def _flush_if_pending(self) -> None:
        with self._lock:
            pending = self._pending
        if pending:
            self._flush()

    def __await__(self) -> Generator[Any, None, Any]:
        if self._outcome is None:
            waiter = loop().create_future()
            self._waiters.append(waiter)
            yield from waiter.__await__()
        ok, value = self._outcome  # type: ignore[misc]
        if not ok:
            raise value
        return value
