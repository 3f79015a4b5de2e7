"""A team: one receiver fused from several sharers at once, each sharer with its own fuser.

Every sharer prefills the prompt in its own tokens (its fuser's alignment), every fuser reads the receiver's
cache as the receiver computed it and its own sharer's cache, and the receiver's cache becomes its own plus the
sum of every fuser's residual (the reference's "parallel" multi-source mode, ``docs/team.md`` says why). With
one sharer that is today's cache fusion, computed by the same code path.

A team is saved as one folder (:data:`TEAM_MANIFEST`): the receiver, and each sharer by name with its fuser
folder; paths relative to the folder are allowed, so a team folder can be moved or shipped whole.

Modes name sharers after a colon: ``fusion`` fuses every sharer, ``fusion:A+B`` a subset, ``sharer:A`` lets one
answer alone; ``relay`` collects one hint per sharer.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .errors import Cancelled, ModeUnavailableError, ModelLoadError, PairMismatchError, TeamFormatError

if TYPE_CHECKING:
    import torch
    from transformers import Cache

    from .engine import Mode
    from .fuser import KV, Fuser, LayerFusion
    from .pair import LoadedModel, LoadProgress, ModelSpec, Pair

TEAM_MANIFEST = "team.json"
TEAM_FORMAT = "c2c-playground-team"
TEAM_VERSION = 1
SHARER_NAME = "sharer"  # the one sharer of a plain pair, as modes name it (``sharer:sharer`` is ``sharer``)
MODE_SEPARATOR = ":"  # fusion:A
NAMES_SEPARATOR = "+"  # fusion:A+B (a comma separates modes on the command line)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


@dataclass
class TeamMember:
    """One sharer of a team with the fuser that fuses it into the receiver."""

    name: str
    sharer: "LoadedModel"
    fuser: "Fuser | None" = None


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TeamFormatError(f"{where}: a sharer's name is 1-40 letters, digits, '_', '-' or '.', got {name!r} "
                              f"(modes name sharers as fusion{MODE_SEPARATOR}NAME{NAMES_SEPARATOR}NAME).")
    return name


# -- modes ------------------------------------------------------------------------------------------------------

def parse_mode(mode: "Mode | str") -> "tuple[Mode, tuple[str, ...] | None]":
    """``"fusion:A+B"`` -> (Mode.FUSION, ("A", "B")); a plain mode -> (mode, None), every sharer of the team."""
    from .engine import Mode

    if isinstance(mode, Mode):
        return mode, None
    head, sep, tail = str(mode).partition(MODE_SEPARATOR)
    try:
        base = Mode(head.strip())
    except ValueError:
        raise ModeUnavailableError(f"Unknown mode {str(mode)!r}; use one of {', '.join(m.value for m in Mode)}, "
                                   f"optionally with sharers: fusion{MODE_SEPARATOR}NAME{NAMES_SEPARATOR}NAME."
                                   ) from None
    if not sep:
        return base, None
    if base is Mode.RECEIVER:
        raise ModeUnavailableError(f"{base.label} uses no sharer; drop {MODE_SEPARATOR}{tail} from {mode!r}.")
    names = tuple(n.strip() for n in tail.split(NAMES_SEPARATOR))
    if not all(names):
        raise ModeUnavailableError(f"Mode {mode!r} names an empty sharer; write e.g. fusion{MODE_SEPARATOR}A"
                                   f"{NAMES_SEPARATOR}B.")
    return base, tuple(dict.fromkeys(names))


def mode_key(mode: "Mode", names: tuple[str, ...] | None) -> str:
    return mode.value if names is None else f"{mode.value}{MODE_SEPARATOR}{NAMES_SEPARATOR.join(names)}"


def members(pair: "Pair") -> list[TeamMember]:
    """Every sharer of ``pair`` with its fuser: a team's members, or a plain pair's one sharer."""
    return list(pair.members) or [TeamMember(SHARER_NAME, pair.sharer, pair.fuser)]


def select(pair: "Pair", mode: "Mode", names: tuple[str, ...] | None) -> list[TeamMember]:
    """The members a run of ``mode`` uses: the named ones, or every one (sharer alone: the first)."""
    from .engine import Mode

    team = members(pair)
    if names is None:
        chosen = team[:1] if mode is Mode.SHARER else team
    else:
        by_name = {m.name: m for m in team}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ModeUnavailableError(f"No sharer named {unknown[0]!r} is loaded; the sharers are "
                                       f"{', '.join(by_name)}.")
        chosen = [by_name[n] for n in names]
    if mode is Mode.SHARER and len(chosen) > 1:
        raise ModeUnavailableError(f"{mode.label} answers with one sharer; name one, e.g. sharer{MODE_SEPARATOR}"
                                   f"{chosen[0].name}.")
    if mode.needs_fuser:
        missing = [m.name for m in chosen if m.fuser is None]
        if missing:
            raise ModeUnavailableError(f"{mode.label} needs a fuser for every sharer it uses; {missing[0]} has none. "
                                       "Load one with the pair (--fuser or the app's Fuser box).")
    return chosen


def mode_names(pair: "Pair") -> list[str]:
    """Every mode a pair or team answers in, as the engine takes them: a team adds each sharer alone and each
    sharer's own fusion (``sharer:A``, ``fusion:A``) to the plain modes."""
    from .engine import Mode

    team = members(pair)
    out = []
    for mode in Mode:
        if mode.needs_fuser and any(m.fuser is None for m in team):
            continue
        out.append(mode.value)
        if len(team) > 1 and mode in (Mode.SHARER, Mode.FUSION):
            out += [mode_key(mode, (m.name,)) for m in team if not mode.needs_fuser or m.fuser is not None]
    return out


# -- the combination --------------------------------------------------------------------------------------------

def combine(receiver_kv: "list[KV]", fused: "list[list[KV]]") -> "list[KV]":
    """The receiver's (K, V) plus every fuser's residual (its fused (K, V) minus the receiver's), layer by layer.

    Each fuser read the receiver's own cache (the reference's "parallel" mode), so the order of the sharers does
    not matter. A path a fuser left alone (a closed gate) is the receiver's tensor itself and adds nothing. One
    fuser: its fused tensors as they are, exactly today's cache fusion. Differentiable: training calls it too.
    """
    if len(fused) == 1:
        return fused[0]
    out = []
    for layer, base in enumerate(receiver_kv):
        kv = []
        for j in range(2):
            total = base[j]
            for one in fused:
                if one[layer][j] is not base[j]:
                    total = total + (one[layer][j] - base[j])
            kv.append(total)
        out.append((kv[0], kv[1]))
    return out


def fuse_team(receiver_cache: "Cache", parts: "list[tuple[TeamMember, Cache]]", named: bool = True,
              on_fuse: Callable[[str, bool], None] | None = None) -> "list[LayerFusion]":
    """Fuse ``receiver_cache`` in place from each member's sharer cache; return every member's per-layer statistics
    (tagged with its sharer's name where ``named``, a team's). ``on_fuse(name, begins)`` brackets each member's
    fuse, its timing phase."""
    from .fuser import cache_kv

    stats: list[LayerFusion] = []
    if len(parts) == 1:  # one sharer: today's path, captured CUDA graphs included
        member, cache = parts[0]
        _bracket(on_fuse, member.name, True)
        stats = member.fuser.fuse_cache(receiver_cache, cache)
        _bracket(on_fuse, member.name, False)
        parts_stats = [(member, stats)]
    else:
        base = cache_kv(receiver_cache)
        fused, parts_stats = [], []
        for member, cache in parts:
            _bracket(on_fuse, member.name, True)
            one, layer_stats = member.fuser.fuse_kv(base, cache_kv(cache))
            fused.append(one)
            parts_stats.append((member, layer_stats))
            _bracket(on_fuse, member.name, False)
        for layer, (k, v) in zip(receiver_cache.layers, combine(base, fused)):
            layer.keys, layer.values = k, v
    out = []
    for member, layer_stats in parts_stats:
        for s in layer_stats:
            s.sharer = member.name if named else ""
            out.append(s)
    return out


def _bracket(on_fuse: Callable[[str, bool], None] | None, name: str, begins: bool) -> None:
    if on_fuse is not None:
        on_fuse(name, begins)


# -- the team folder --------------------------------------------------------------------------------------------

@dataclass
class SharerEntry:
    """One sharer of a team manifest: its name, its model and its fuser folder."""

    name: str
    sharer: str  # Hub id, folder or .gguf file (relative: to the team folder)
    fuser: str  # its fuser folder (relative: to the team folder)
    adapter: str = ""  # a PEFT adapter folder on the sharer (relative: to the team folder)

    FIELDS: ClassVar[tuple[str, ...]] = ("name", "sharer", "fuser", "adapter")


@dataclass
class TeamManifest:
    """``team.json``: the receiver, and every sharer with its fuser folder."""

    receiver: str
    sharers: list[SharerEntry]
    receiver_adapter: str = ""
    extra: dict[str, Any] | None = None  # free-form (a recipe's notes); kept as it is

    FIELDS: ClassVar[tuple[str, ...]] = ("format", "format_version", "receiver", "receiver_adapter", "sharers",
                                         "extra")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": TEAM_FORMAT, "format_version": TEAM_VERSION, "receiver": self.receiver,
            "sharers": [{k: getattr(s, k) for k in SharerEntry.FIELDS if k != "adapter" or s.adapter}
                        for s in self.sharers],
        }
        if self.receiver_adapter:
            out["receiver_adapter"] = self.receiver_adapter
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = TEAM_MANIFEST) -> "TeamManifest":
        """Strict: unknown keys, wrong types, duplicate or malformed names are :class:`TeamFormatError`."""
        if not isinstance(data, dict):
            raise TeamFormatError(f"{where} must hold a JSON object, got {type(data).__name__}.")
        if data.get("format") != TEAM_FORMAT:
            raise TeamFormatError(f"{where} is not a {TEAM_FORMAT} manifest (format={data.get('format')!r}).")
        if data.get("format_version") != TEAM_VERSION:
            raise TeamFormatError(f"{where} has format version {data.get('format_version')!r}; this C2C Playground "
                                  f"reads version {TEAM_VERSION}. Upgrade c2c-playground.")
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise TeamFormatError(f"{where} has unknown field {unknown[0]!r}; the fields are {', '.join(cls.FIELDS)}.")
        receiver = _text(data, "receiver", where, required=True)
        sharers = data.get("sharers")
        if not isinstance(sharers, list) or not sharers:
            raise TeamFormatError(f"{where}: 'sharers' must be a non-empty list of {{\"name\", \"sharer\", "
                                  "\"fuser\"} objects.")
        entries, seen = [], set()
        for i, raw in enumerate(sharers, start=1):
            at = f"{where} sharer {i}"
            if not isinstance(raw, dict):
                raise TeamFormatError(f"{at} must be an object with name, sharer and fuser, got {type(raw).__name__}.")
            extra_keys = sorted(set(raw) - set(SharerEntry.FIELDS))
            if extra_keys:
                raise TeamFormatError(f"{at} has unknown field {extra_keys[0]!r}; the fields are "
                                      f"{', '.join(SharerEntry.FIELDS)}.")
            name = check_name(raw.get("name"), at)
            if name in seen:
                raise TeamFormatError(f"{at}: the name {name!r} is used twice; each sharer needs its own name.")
            seen.add(name)
            entries.append(SharerEntry(name, _text(raw, "sharer", at, required=True), _text(raw, "fuser", at,
                                       required=True), _text(raw, "adapter", at)))
        extra = data.get("extra")
        if extra is not None and not isinstance(extra, dict):
            raise TeamFormatError(f"{where}: 'extra' must be an object, got {type(extra).__name__}.")
        return cls(receiver, entries, _text(data, "receiver_adapter", where), extra or None)


def _text(data: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise TeamFormatError(f"{where}: {key!r} must be a non-empty string, got {value!r}." if required else
                              f"{where}: {key!r} must be a string, got {value!r}.")
    return value


def is_team(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / TEAM_MANIFEST).is_file()


def read_team(folder: str | Path) -> TeamManifest:
    """The manifest of a team folder, with relative paths resolved against the folder."""
    folder = Path(folder)
    path = folder / TEAM_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TeamFormatError(f"{folder} holds no {TEAM_MANIFEST}; a team folder names its receiver and sharers "
                              "there.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeamFormatError(f"{path} cannot be read as JSON ({exc}).") from None
    manifest = TeamManifest.from_dict(data, str(path))
    manifest.receiver = _local(folder, manifest.receiver, path, "receiver")
    manifest.receiver_adapter = _local(folder, manifest.receiver_adapter, path, "receiver_adapter")
    for s in manifest.sharers:
        s.sharer = _local(folder, s.sharer, path, f"sharer {s.name}")
        s.adapter = _local(folder, s.adapter, path, f"sharer {s.name} adapter")
        s.fuser = _local(folder, s.fuser, path, f"sharer {s.name} fuser", must_exist=True)
    return manifest


def _local(folder: Path, value: str, where: Path, what: str, must_exist: bool = False) -> str:
    """A path relative to the team folder, made absolute; a Hub id stays as it is."""
    if not value:
        return value
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = folder / candidate
    if candidate.exists():
        return str(candidate.resolve())
    if must_exist or value.startswith((".", "/", "~")):
        raise TeamFormatError(f"{where}: the {what} {value} does not exist (relative paths are read from "
                              f"{folder}).")
    return value


def write_team(folder: str | Path, manifest: TeamManifest) -> Path:
    """Write ``team.json``; paths inside ``folder`` are stored relative to it, so the folder moves whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def rel(value: str) -> str:
        path = Path(value)
        if value and path.is_absolute() and path.exists():
            try:
                return path.resolve().relative_to(folder.resolve()).as_posix()
            except ValueError:
                return value
        return value

    stored = TeamManifest(
        rel(manifest.receiver), [SharerEntry(s.name, rel(s.sharer), rel(s.fuser), rel(s.adapter))
                                 for s in manifest.sharers],
        rel(manifest.receiver_adapter), manifest.extra)
    TeamManifest.from_dict(stored.to_dict())  # what is written reads back
    (folder / TEAM_MANIFEST).write_text(json.dumps(stored.to_dict(), indent=2, sort_keys=True) + "\n")
    return folder


def save_team(folder: str | Path, receiver: str, fusers: "dict[str, Fuser]", sharers: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None, fuser_extra: dict[str, Any] | None = None) -> Path:
    """Write a team folder: each fuser into ``fuser-NAME/`` and the manifest naming them (the sharers are the
    fusers' own records of their sharer unless ``sharers`` names them)."""
    from .checkpoint import save_fuser

    folder = Path(folder)
    entries = []
    for name, fuser in fusers.items():
        check_name(name, str(folder))
        path = save_fuser(fuser, folder / f"fuser-{name}", extra=fuser_extra)
        entries.append(SharerEntry(name, (sharers or {}).get(name, fuser.info.sharer), str(path.resolve())))
    return write_team(folder, TeamManifest(receiver, entries, extra=extra))


def load_team_fusers(folder: str | Path) -> "tuple[TeamManifest, dict[str, Fuser]]":
    from .checkpoint import load_fuser

    manifest = read_team(folder)
    return manifest, {s.name: load_fuser(s.fuser) for s in manifest.sharers}


# -- loading ----------------------------------------------------------------------------------------------------

@dataclass
class SharerSource:
    """One sharer to load into a team: its name, model (None: its fuser's record) and fuser folder."""

    name: str
    spec: "ModelSpec | None"
    fuser: str | Path | None


def sources_of(folder: str | Path, defaults: "ModelSpec") -> "tuple[ModelSpec, list[SharerSource]]":
    """The receiver and sharers a team folder names, placed as ``defaults`` says."""
    from .pair import ModelSpec

    manifest = read_team(folder)
    receiver = ModelSpec(manifest.receiver, defaults.device, defaults.dtype, defaults.quantize,
                         manifest.receiver_adapter)
    return receiver, [SharerSource(s.name, ModelSpec(s.sharer, defaults.device, defaults.dtype, defaults.quantize,
                                                     s.adapter), s.fuser) for s in manifest.sharers]


def load_team(
    receiver: "ModelSpec | None",
    sharers: list[SharerSource],
    *,
    progress: "Callable[[LoadProgress], None] | None" = None,
    cancel: threading.Event | None = None,
    defaults: "ModelSpec | None" = None,
    warm_up: bool = False,
    cuda_graphs: bool = True,
) -> "Pair":
    """Load a receiver and every sharer with its fuser as one :class:`~fusers.pair.Pair` whose ``members`` are the
    team; ``pair.sharer`` and ``pair.fuser`` are the first member's, so a one-sharer mode works as on a pair."""
    from .checkpoint import load_fuser
    from .devices import resolve_device
    from .pair import LoadProgress, ModelSpec, Pair, check_cache_layout, finish_loading, load_model

    if not sharers:
        raise ModelLoadError("A team needs at least one sharer.")
    names = [check_name(s.name, "team") for s in sharers]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"Two sharers are named {next(n for n in names if names.count(n) > 1)!r}; give each "
                             "its own name.")
    base = defaults or ModelSpec("-")
    capture = cuda_graphs and any(resolve_device((spec or base).device).type == "cuda"
                                  for spec in [receiver] + [s.spec for s in sharers])
    total = 1 + 2 * len(sharers) + warm_up + capture
    step = 0

    def report(message: str) -> None:
        nonlocal step
        if cancel is not None and cancel.is_set():
            raise Cancelled("Loading was cancelled.")
        step += 1
        if progress is not None:
            progress(LoadProgress(step, total, message))

    fusers = []
    for s in sharers:
        report(f"Reading fuser {s.fuser} (sharer {s.name})")
        fusers.append(load_fuser(s.fuser) if s.fuser is not None else None)
    if receiver is None:
        named = {f.info.receiver for f in fusers if f is not None}
        if len(named) != 1:
            raise ModelLoadError("Give the receiver (--receiver): " + (
                f"the fusers name different receivers ({', '.join(sorted(named))})." if named else "no fuser names it."))
        receiver = ModelSpec(named.pop(), base.device, base.dtype, base.quantize)
    report(f"Loading receiver {receiver.source}")
    r = load_model(receiver, "receiver")
    team = []
    for s, fuser in zip(sharers, fusers):
        spec = s.spec
        if spec is None:
            if fuser is None:
                raise ModelLoadError(f"Sharer {s.name} has neither a model nor a fuser that names one.")
            spec = ModelSpec(fuser.info.sharer, base.device, base.dtype, base.quantize)
        report(f"Loading sharer {s.name}: {spec.source}")
        loaded = load_model(spec, "sharer")
        if fuser is not None:
            check_cache_layout(r)
            check_cache_layout(loaded)
            try:
                fuser.check_pair(r.shape, loaded.shape, r.source, loaded.source)
            except PairMismatchError as exc:
                raise PairMismatchError(f"Sharer {s.name}: {exc}") from None
            fuser = fuser.to(device=r.device, dtype=r.dtype)
        team.append(TeamMember(s.name, loaded, fuser))
    pair = Pair(r, team[0].sharer, team[0].fuser, members=team)
    return finish_loading(pair, report, capture=capture, cuda_graphs=cuda_graphs, warm_up=warm_up, cancel=cancel,
                          progress=progress, total=total)


def default_names(fusers: list[str | Path | None]) -> list[str]:
    """Names for sharers given on the command line: each fuser folder's name (``runs/medicine`` -> medicine),
    made unique and valid; ``sharer1``, ``sharer2``... where there is none."""
    out: list[str] = []
    for i, fuser in enumerate(fusers, start=1):
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(fuser).name)[:40] if fuser else ""
        name = name.strip("-.") or f"sharer{i}"
        if name in out:
            name = f"{name[:36]}-{i}"
        out.append(name)
    return out


def check_same_receiver_ids(first: list[int], other: list[int], name: str) -> None:
    if other != first:
        raise PairMismatchError(f"Sharer {name}'s alignment tokenizes the receiver's prompt differently from the "
                                "first sharer's; the team's fusers must all read the receiver's own tokens.")


def devices(pair: "Pair", chosen: list[TeamMember]) -> "list[torch.device]":
    out = [pair.receiver.device]
    for m in chosen:
        if m.sharer.device not in out:
            out.append(m.sharer.device)
    return out


def describe_team(pair: "Pair") -> list[str]:
    """The receiver, then each sharer with its fuser, as ``Pair.describe`` says a pair."""
    lines = [pair.receiver.describe()]
    for m in pair.members:
        lines.append(f"[{m.name}] {m.sharer.describe()}")
        if m.fuser is not None:
            info = m.fuser.info
            links = ", ".join(f"{link.receiver_layer}<-{link.sharer_layer}" for link in m.fuser.layer_map)
            lines.append(f"[{m.name}] fuser ({info.format}, {info.mapping}"
                         + (f", aligned by {info.alignment_strategy} token" if info.is_do_alignment else "")
                         + f", {m.fuser.parameter_count() / 1e6:.1f}M params): receiver<-sharer layers {links}")
    if pair.decode_paths:
        from .static_decode import describe_paths

        lines.append("decoding: " + describe_paths(pair.decode_paths))
    lines.append(f"team of {len(pair.members)} sharers: cache fusion adds every fuser's residual to the receiver's "
                 "cache; modes: " + ", ".join(mode_names(pair)))
    return lines


def sharer_names(sources: list[str]) -> tuple[list[str], list[str]]:
    """Names and sources of sharers given as ``SOURCE`` or ``NAME=SOURCE`` (a bare source is named after its
    folder or file, as :func:`default_names` names them)."""
    names, paths = [], []
    for source in sources:
        name, sep, path = source.partition("=")
        if sep and _NAME.match(name) and not Path(source).exists():
            names.append(name)
            paths.append(path)
        else:
            names.append("")
            paths.append(source)
    defaults = default_names([p for p in paths])
    names = [n or d for n, d in zip(names, defaults)]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"Two sharers are named {next(n for n in names if names.count(n) > 1)!r}; name them "
                             "with NAME=SOURCE.")
    return names, paths
