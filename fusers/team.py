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

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ModeUnavailableError, ModelLoadError, PairMismatchError
from .team_folder import (  # noqa: F401  (the team folder's format, re-exported from here too)
    _NAME, TEAM_FORMAT, TEAM_MANIFEST, TEAM_VERSION, SharerEntry, TeamManifest, check_name, is_team, load_team_fusers,
    read_team, save_team, write_team,
)
from .vocabulary import MODE_SEPARATOR, NAMES_SEPARATOR, Mode  # fusion:A, fusion:A+B: modes that name sharers

if TYPE_CHECKING:
    import torch
    from transformers import Cache

    from .fuser import KV, Fuser, LayerFusion
    # fusers.pair imports this module (a team folder loads as a pair): its names are for the annotations only

SHARER_NAME = "sharer"  # the one sharer of a plain pair, as modes name it (``sharer:sharer`` is ``sharer``)


@dataclass
class TeamMember:
    """One sharer of a team with the fuser that fuses it into the receiver."""

    name: str
    sharer: "LoadedModel"
    fuser: "Fuser | None" = None


# -- modes ------------------------------------------------------------------------------------------------------

def parse_mode(mode: "Mode | str") -> "tuple[Mode, tuple[str, ...] | None]":
    """``"fusion:A+B"`` -> (Mode.FUSION, ("A", "B")); a plain mode -> (mode, None), every sharer of the team."""
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


# -- loading ----------------------------------------------------------------------------------------------------

@dataclass
class SharerSource:
    """One sharer to load into a team: its name, model (None: its fuser's record) and fuser folder."""

    name: str
    spec: "ModelSpec | None"
    fuser: str | Path | None


def sources_of(folder: str | Path, defaults: "Placement", sharer: Any = None
               ) -> "tuple[ModelSpec, list[SharerSource]]":
    """The receiver and sharers a team folder names, placed as ``defaults`` says (``sharer``: one given besides,
    refused: the folder names its sharers)."""
    if sharer is not None:
        raise ModelLoadError(f"{folder} is a team folder, which names its sharers; drop --sharer, or give each "
                             "sharer with its own --fuser.")
    manifest = read_team(folder)
    receiver = defaults.spec(manifest.receiver, manifest.receiver_adapter or "")
    return receiver, [SharerSource(s.name, defaults.spec(s.sharer, s.adapter or ""), s.fuser)
                      for s in manifest.sharers]


def load_team(
    receiver: "ModelSpec | None",
    sharers: list[SharerSource],
    *,
    progress: "Callable[[LoadProgress], None] | None" = None,
    cancel: threading.Event | None = None,
    defaults: "Placement | None" = None,
    warm_up: "Callable[[Pair, threading.Event | None], None] | None" = None,
    cuda_graphs: bool = True,
    compile: bool = True,
    kit: Any = None,
) -> "Pair":
    """Load a receiver and every sharer with its fuser as one :class:`~fusers.pair.Pair` whose ``members`` are the
    team; ``pair.sharer`` and ``pair.fuser`` are the first member's, so a one-sharer mode works as on a pair."""
    from .checkpoint import load_fuser
    from .devices import resolve_device

    # fusers.pair's loading pieces (fusers.pair.load_team passes them): importing that module here would close
    # an import circle, as it loads a team folder through this function
    LoadProgress, Pair, Placement, local_source = kit.LoadProgress, kit.Pair, kit.Placement, kit.local_source
    check_cache_layout, finish_loading, load_model = kit.check_cache_layout, kit.finish_loading, kit.load_model

    if not sharers:
        raise ModelLoadError("A team needs at least one sharer.")
    names = [check_name(s.name, "team") for s in sharers]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"Two sharers are named {next(n for n in names if names.count(n) > 1)!r}; give each "
                             "its own name.")
    if isinstance(warm_up, bool):
        raise TypeError("warm_up takes the step to run (fusers.engine.warm_up) or None, not a bool")
    base = defaults or Placement()
    capture = cuda_graphs and any(resolve_device((spec or base).device).type == "cuda"
                                  for spec in [receiver] + [s.spec for s in sharers])
    total = 1 + 2 * len(sharers) + (warm_up is not None) + capture
    report = kit.LoadSteps(total, progress, cancel)

    fusers = []
    for s in sharers:
        report(f"Reading fuser {s.fuser} (sharer {s.name})")
        fusers.append(load_fuser(s.fuser) if s.fuser is not None else None)
    if receiver is None:
        named = {f.info.receiver for f in fusers if f is not None}
        if len(named) != 1:
            raise ModelLoadError("Give the receiver (--receiver): " + (
                f"the fusers name different receivers ({', '.join(sorted(named))})." if named else "no fuser names it."))
        receiver = base.spec(local_source(named.pop()))
    report(f"Loading receiver {receiver.source}")
    r = load_model(receiver, "receiver")
    team = []
    for s, fuser in zip(sharers, fusers):
        spec = s.spec
        if spec is None:
            if fuser is None:
                raise ModelLoadError(f"Sharer {s.name} has neither a model nor a fuser that names one.")
            spec = base.spec(local_source(fuser.info.sharer))
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
    return finish_loading(pair, report, capture=capture, cuda_graphs=cuda_graphs, compile=compile, warm_up=warm_up,
                          cancel=cancel, progress=progress, total=total)


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


def team_devices(pair: "Pair", mode: "Mode | str") -> "list[torch.device]":
    """The devices a team's run of ``mode`` uses, the answering model's first (fusers.engine.Engine.devices)."""
    mode, names = parse_mode(mode)
    if mode is Mode.RECEIVER:
        return [pair.receiver.device]
    try:
        chosen = select(pair, mode, names)
    except ModeUnavailableError:  # a mode this pair cannot run (answer says why): the devices it would use
        chosen = members(pair)
    if mode is Mode.SHARER:
        return [chosen[0].sharer.device]
    return devices(pair, chosen)


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
