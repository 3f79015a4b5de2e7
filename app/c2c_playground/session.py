"""The loaded pair, owned by one worker thread: load, answer, unload. No widgets here.

Torch is imported on the worker thread the first time a pair loads, never on the Qt thread, so the
window paints before torch is even imported.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fusers.engine import Engine, Mode
from fusers.errors import Cancelled, C2CError, ModelLoadError
from fusers.generation import GenerationSettings
from fusers.pair import LoadProgress, ModelSpec, Placement

from . import bridge

if TYPE_CHECKING:
    from fusers.engine import Answer, Event
    from fusers.pair import Pair
    from fusers.serve.server import ApiServer


class BrokenInstall(Exception):
    """A library the engine needs is installed but fails to import (a broken torch, a missing .so)."""


@dataclass(frozen=True)
class TeamSharer:
    """One sharer of a team the set-up panel names: its name, model (None: its fuser's) and fuser folder."""

    name: str
    spec: ModelSpec | None
    fuser: str | None  # as the user gave it: a folder or a downloaded pair name


def _spec(part: dict[str, Any]) -> ModelSpec | None:
    adapter = str(part.get("adapter", "")).strip()
    source = str(part.get("source", "")).strip() or adapter  # an adapter alone names its base
    if not source:
        return None
    return ModelSpec(source, part.get("device") or "auto", part.get("dtype") or "auto", part.get("quantize") or "none",
                     adapter)


def _team(parts: list[dict[str, Any]]) -> tuple[TeamSharer, ...]:
    """The team the form's sharer rows name; raises ModelLoadError (or TeamFormatError) naming what to fix."""
    from fusers.team import check_name, default_names

    fusers = [str(p.get("fuser", "")).strip() or None for p in parts]
    defaults = default_names(fusers)
    team = []
    for i, (part, fuser, default) in enumerate(zip(parts, fusers, defaults), start=1):
        name = check_name(str(part.get("name", "")).strip() or default, f"Sharer {i}")
        spec = _spec(part)
        if spec is None and fuser is None:
            raise ModelLoadError(f"Sharer {i} ({name}) has neither a model nor a fuser: fill in its model or its "
                                 "fuser folder, or remove its row.")
        team.append(TeamSharer(name, spec, fuser))
    names = [s.name for s in team]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ModelLoadError(f"Two sharers are named {twice!r}: give each its own name (the box before its model); "
                             "a pane picks its sharers by name.")
    return tuple(team)


@dataclass(frozen=True)
class LoadRequest:
    receiver: ModelSpec | None  # None: the fuser's receiver
    sharer: ModelSpec | None
    fuser: str | None  # as the user gave it: a folder or a downloaded pair name
    defaults: Placement  # placement of models named only by the fuser
    cuda_graphs: bool = True  # decode on static caches in CUDA graphs where a model is on a CUDA GPU
    compile: bool = True  # ... each decode step compiled (torch.compile) before it is captured
    team: tuple[TeamSharer, ...] = ()  # more than one sharer: every one (sharer and fuser then unused); else ()

    @classmethod
    def from_form(cls, form: dict[str, Any]) -> "LoadRequest":
        """From the pair panel's form (``sharers``: the rows after the first sharer's, a team); raises
        ModelLoadError naming what to fix."""
        receiver, sharer = form.get("receiver") or {}, form.get("sharer") or {}
        fuser = str(form.get("fuser", "")).strip() or None
        r, s = _spec(receiver), _spec(sharer)
        defaults = Placement(receiver.get("device") or "auto", receiver.get("dtype") or "auto",
                             receiver.get("quantize") or "none")
        graphs, compiled = form.get("cuda_graphs") is not False, form.get("compile") is not False
        extra = [part for part in form.get("sharers") or [] if isinstance(part, dict)]
        if extra:
            try:
                team = _team([{**sharer, "fuser": fuser or ""}, *extra])
            except C2CError as exc:  # a malformed name (TeamFormatError) is the form's mistake too
                raise ModelLoadError(str(exc)) from None
            if r is None and all(t.fuser is None for t in team):
                raise ModelLoadError("No receiver given: fill in a receiver, or a fuser for a sharer (it names "
                                     "the receiver), or pick a preset.")
            return cls(r, None, None, defaults, graphs, compiled, team)
        if fuser is None and (r is None or s is None):
            missing = " and ".join(n for n, m in (("receiver", r), ("sharer", s)) if m is None)
            raise ModelLoadError(f"No {missing} given: fill in a receiver and a sharer, or a fuser that names "
                                 "them, or pick a preset.")
        return cls(r, s, fuser, defaults, graphs, compiled)


@dataclass(frozen=True)
class Loaded:
    """What the Qt thread may know about the loaded pair (plain strings: no torch objects)."""

    lines: list[str]  # Pair.describe()
    receiver: str
    sharer: str
    has_fuser: bool  # a team: every sharer has one
    examples: list[tuple[str, str]] = field(default_factory=list)  # (question, what it shows): the demo pair's
    sharers: tuple[str, ...] = ()  # a team's sharers by name (panes pick from them); () for a pair
    without_fuser: tuple[str, ...] = ()  # a team's sharers that have no fuser (no cache fusion then)


def _load(request: LoadRequest, progress: Callable[[LoadProgress], None], cancel: threading.Event) -> tuple[Any, Loaded]:
    try:
        # The first imports happen here, on the models' thread. A library that is installed but does not
        # import is a broken install, said plainly, not a load error of one model.
        import safetensors.torch  # noqa: F401
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 (lazy modules import here)
    except (ImportError, OSError) as exc:
        raise BrokenInstall(f"{type(exc).__name__}: {exc}") from exc
    from fusers.engine import warm_up  # imported here with the rest: the load runs it as its last step
    from fusers.pair import load_pair, load_team
    from fusers.sources import resolve_fuser
    from fusers.team import SharerSource, members

    options: dict[str, Any] = dict(progress=progress, cancel=cancel, defaults=request.defaults,
                                   warm_up=warm_up,  # the first send is timed as fairly as the next
                                   cuda_graphs=request.cuda_graphs, compile=request.compile)
    if request.team:
        pair = load_team(request.receiver, [SharerSource(s.name, s.spec, resolve_fuser(s.fuser) if s.fuser else None)
                                            for s in request.team], **options)
    else:
        fuser = resolve_fuser(request.fuser) if request.fuser else None
        pair = load_pair(request.receiver, request.sharer, fuser, **options)
    if cancel.is_set():
        pair.close(collect=False)
        raise Cancelled("Loading was cancelled.")
    from fusers.presets import example_questions

    # the request may leave the models to the fuser: the loaded pair says which they are
    examples = example_questions(pair)
    team = members(pair)
    return pair, Loaded(pair.describe(), pair.receiver.name, pair.sharer.name, all(m.fuser is not None for m in team),
                        examples, tuple(m.name for m in pair.members),
                        tuple(m.name for m in pair.members if m.fuser is None))


def _start_server(engine: Engine, port: int, api_key: str | None, defaults: GenerationSettings,
                  submit: Callable[..., Any], on_answer: Callable[[str, "Answer"], None]) -> "ApiServer":
    """On the models' thread (the web stack imports here, never on the Qt thread): serve ``engine``'s pair on
    this machine only, its answers handed back to the models' thread through ``submit``."""
    from fusers.serve.server import ApiServer

    return ApiServer(engine, port=port, api_key=api_key, defaults=defaults, submit=submit,
                     on_answer=on_answer).start()


def _unload(pair: "Pair") -> None:
    pair.close(collect=False)  # never collect on the models' thread: it could free Qt objects there


class ModelSession:
    def __init__(self) -> None:
        self.thread = bridge.ModelThread()
        self.engine: Engine | None = None
        self.loaded: Loaded | None = None
        self._load_cancel: threading.Event | None = None
        self.server: ApiServer | None = None  # the loaded pair served to API clients (Pair > Serve on localhost)

    @property
    def loading(self) -> bool:
        return self._load_cancel is not None

    async def load(self, request: LoadRequest, progress: Callable[[LoadProgress], None]) -> Loaded:
        """Load a pair (freeing the current one first). ``progress`` is called on the Qt thread."""
        if self.loading:
            raise ModelLoadError("A pair is already loading; wait for it or cancel it.")
        cancel = threading.Event()
        self._load_cancel = cancel
        try:
            await self.unload()
            pair, loaded = await self.thread.call(_load, request, bridge.on_qt_thread(progress), cancel)
        finally:
            self._load_cancel = None
        self.engine, self.loaded = Engine(pair), loaded
        return loaded

    def cancel_load(self) -> None:
        if self._load_cancel is not None:
            self._load_cancel.set()

    async def serve(self, port: int, api_key: str | None, defaults: GenerationSettings,
                    on_answer: Callable[[str, "Answer"], None]) -> "ApiServer":
        """Serve the loaded pair on 127.0.0.1:``port`` (0: a free port) until :meth:`stop_serving` or an unload;
        ``defaults``: the settings of a request that sets none. Its answers run on the models' thread, in turn
        with the panes' runs, never at the same time."""
        if self.engine is None:
            raise ModelLoadError("No pair is loaded: load one, then serve it.")
        if self.server is None:
            self.server = await self.thread.call(_start_server, self.engine, port, api_key or None, defaults,
                                                 self.thread.submit_alone, on_answer)
        return self.server

    def stop_serving(self) -> "ApiServer | None":
        """Stop taking API requests and cancel those running or waiting; returns at once (``join`` the server
        returned, off the Qt thread, to wait for its thread to end)."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        return server

    async def unload(self) -> None:
        self.stop_serving()  # before the models go: no API answer may start on a pair being freed
        engine, self.engine, self.loaded = self.engine, None, None
        if engine is not None:
            await self.thread.call(_unload, engine.pair)
            del engine
            gc.collect()  # here, on the Qt thread: the models' memory goes back, and Qt objects die where they live

    async def answer(self, mode: Mode | str, messages: Sequence[dict[str, str]], settings: GenerationSettings, *,
                     on_event: Callable[["Event"], None], cancel: threading.Event,
                     concurrent: bool = False) -> "Answer":
        if self.engine is None:
            raise ModelLoadError("No pair is loaded: pick a preset or fill in the pair, then load it.")
        if concurrent:
            # An Engine per run: it caches a token aligner, and the engine is not thread-safe; the models are shared.
            engine = Engine(self.engine.pair)
            return await self.thread.call_concurrently(engine.answer, mode, messages, settings, on_event=on_event,
                                                       cancel=cancel)
        return await self.thread.call(self.engine.answer, mode, messages, settings, on_event=on_event, cancel=cancel)

    def shutdown(self) -> None:
        self.stop_serving()
        self.cancel_load()
        self.thread.shutdown(wait=False)
