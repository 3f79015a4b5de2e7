"""Options shared by the commands that load a pair, built from the config dataclasses' fields (their help
text, type, default and choices), so that a setting is described once, where it is declared."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable, Iterable

from ..errors import ModelLoadError
from ..pair import ModelSpec, Placement

_METAVARS = {int: "N", float: "X", str: "TEXT"}
KEEP = object()  # add_field_option's default: the field's own


def field_named(config: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(config) if f.name == name)


def add_field_option(group: Any, f: dataclasses.Field, *flags: str, default: Any = KEEP, text: str | None = None,
                     note: str = "", said: str | None = None, dest: str | None = None,
                     metavar: str | None = None, action: str | None = None) -> None:
    """One option from one config field: ``--max-new-tokens`` for ``max_new_tokens`` (or ``flags``), its help text
    (or ``text``) with ``note`` and its default after it (or ``said``: the default in words), its type and its
    closed list of values. ``default``: the field's own (``KEEP``), or None to leave the choice to the command."""
    flags = flags or ("--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ()))
    value = f.default if default is KEEP else default
    shown = f.default if value is None else value
    if said is None:
        said = "" if shown is None or shown is dataclasses.MISSING or shown == "" else f"{shown}."
    help_text = (text if text is not None else f.metadata["help"]) + (f" {note}" if note else "") + \
        (f" Default: {said}" if said else "")
    kind = str(f.type)
    options: dict[str, Any] = {"default": value, "help": help_text}
    if dest is not None:
        options["dest"] = dest
    if action is not None:  # "append": the option may be given several times
        options["action"] = action
    if "bool" in kind:
        group.add_argument(*flags, action=argparse.BooleanOptionalAction, **options)
        return
    convert = int if kind.startswith("int") else float if kind.startswith("float") else str
    choices = f.metadata.get("choices")
    group.add_argument(*flags, type=convert, choices=choices,
                       metavar=None if choices else metavar or _METAVARS[convert], **options)


def add_pair_options(parser: argparse.ArgumentParser, presets: bool = False, fuser: bool = True,
                     cuda_graphs: bool = True, compile: bool = True, per_model_quantize: bool = True,
                     keep_defaults: bool = True, notes: dict[str, str] | None = None, team: bool = False) -> None:
    """The pair's options: the models (``ModelSpec``), their placement (``Placement``), and a fuser or a named
    pair; ``team``: --sharer and --fuser may be given several times (lists), for a team of sharers. ``keep_defaults=False`` leaves placement options None when not given (the app keeps its form's);
    ``notes`` adds a command's words to an option's help, by option name."""
    notes = notes or {}
    group = parser.add_argument_group("pair")
    if presets:
        group.add_argument("--pair", metavar="NAME|FOLDER", help="a named pair ('demo', 'real', 'specialist', a "
                           "published pair once downloaded) or a fuser folder (default: the demo pair)")
    source, adapter = field_named(ModelSpec, "source"), field_named(ModelSpec, "adapter")
    for role in ("receiver", "sharer"):
        team_note = (" Give it several times, each with its own --fuser, for a team of sharers (one receiver "
                     "fused from several sharers).") if team and role == "sharer" and role not in notes else ""
        add_field_option(group, source, f"--{role}", default=None, dest=role, metavar="MODEL",
                         text=f"The {role}: {source.metadata['help']}",
                         note=notes.get(role, f"Default: the fuser's {role}.") + team_note,
                         action="append" if team and role == "sharer" else None)
        add_field_option(group, adapter, f"--{role}-adapter", default=None, metavar="FOLDER",
                         text=f"The {role}'s adapter: {adapter.metadata['help']}")
    if fuser:
        if team:
            group.add_argument("--fuser", action="append", help="fuser: a published pair folder, one of ours, a "
                               "downloaded pair name, or a team folder (team.json); alone, it names the receiver and "
                               "the sharer; several, one per --sharer, make a team")
        else:
            group.add_argument("--fuser", help="fuser: a published pair folder, one of ours, or a downloaded pair "
                               "name; alone, it names the receiver and the sharer")
    for f in dataclasses.fields(Placement):
        add_field_option(group, f, default=KEEP if keep_defaults else None, metavar=f.name.upper(),
                         note=(f"For both models. {notes.get(f.name, '')}").strip(),
                         said=None if keep_defaults else notes.get("default", ""))
    if per_model_quantize:
        quantize = field_named(Placement, "quantize")
        for role in ("receiver", "sharer"):
            add_field_option(group, quantize, f"--{role}-quantize", default=None, said="--quantize.",
                             text=f"Quantize the {role} alone.")
    if cuda_graphs:
        group.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                           default=True if keep_defaults else None,
                           help="on a CUDA GPU, decode with transformers' generate instead of static caches captured "
                                "in CUDA graphs (captured while the pair loads; other devices always use generate)")
    if cuda_graphs and compile:
        group.add_argument("--no-compile", dest="compile", action="store_false",
                           default=True if keep_defaults else None,
                           help="on a CUDA GPU, capture each decode step as transformers runs it, without compiling it "
                                "first with torch.compile (compiling adds tens of seconds to the load, once)")


def placement_from_args(args: argparse.Namespace) -> Placement:
    """The placement the options give both models."""
    return Placement(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Placement)})


def pair_from_args(args: argparse.Namespace, progress: Any = None, warm_up: bool = False) -> Any:
    """Load the pair the options name (``warm_up``: answer once in each mode, so the first request is timed
    fairly)."""
    from ..engine import warm_up as answer_once_in_each_mode
    from ..pair import load_pair
    from ..sources import default_pair, resolve_fuser

    receiver, sharer, fuser = args.receiver, args.sharer, args.fuser
    if len(sharer or []) > 1 or len(fuser or []) > 1:
        return team_from_args(args, progress, warm_up)
    sharer, fuser = (sharer or [None])[0], (fuser or [None])[0]
    named = getattr(args, "pair", None)
    if named:
        if receiver is not None or sharer is not None or fuser is not None:
            raise ModelLoadError("Give either --pair or --receiver/--sharer/--fuser, not both.")
        receiver, sharer, fuser = preset_sources(named)
    elif receiver is None and sharer is None and fuser is None:
        receiver, sharer, fuser = default_pair()

    fuser_path = resolve_fuser(fuser) if fuser is not None else None
    return load_pair(
        model_spec(args, receiver, args.receiver_adapter, args.receiver_quantize),
        model_spec(args, sharer, args.sharer_adapter, args.sharer_quantize),
        fuser_path,
        progress=progress,
        defaults=placement_from_args(args),
        warm_up=answer_once_in_each_mode if warm_up else None,
        cuda_graphs=args.cuda_graphs,
        compile=getattr(args, "compile", True),
    )


def team_from_args(args: argparse.Namespace, progress: Any = None, warm_up: bool = False) -> Any:
    """A team from ``--sharer`` and ``--fuser`` given several times: the n-th fuser fuses the n-th sharer (every
    sharer from its fuser's record when no --sharer is given); each sharer is named after its fuser's folder."""
    from ..engine import warm_up as answer_once_in_each_mode
    from ..pair import load_team
    from ..sources import resolve_fuser
    from ..team import SharerSource, default_names

    if getattr(args, "pair", None):
        raise ModelLoadError("Give either --pair or --receiver/--sharer/--fuser, not both.")
    fusers = [resolve_fuser(f) for f in args.fuser or []]
    sharers = args.sharer or [None] * len(fusers)
    if len(fusers) != len(sharers):
        raise ModelLoadError(f"A team takes one --fuser per --sharer (in the same order); got {len(sharers)} sharers "
                             f"and {len(fusers)} fusers.")
    names = default_names(fusers)
    return load_team(
        model_spec(args, args.receiver, args.receiver_adapter, args.receiver_quantize),
        [SharerSource(name, model_spec(args, source, args.sharer_adapter, args.sharer_quantize), fuser)
         for name, source, fuser in zip(names, sharers, fusers)],
        progress=progress, defaults=placement_from_args(args), warm_up=answer_once_in_each_mode if warm_up else None,
        cuda_graphs=args.cuda_graphs, compile=getattr(args, "compile", True),
    )


def print_load_progress() -> Callable[[Any], None]:
    """A load progress callback that prints each step on stderr, and a step's own count (a GGUF file's tensors)
    at every tenth of it: a line a step, not a line a tensor."""
    shown = {"tenth": -1}

    def show(p: Any) -> None:
        if p.of:
            tenth = p.done * 10 // p.of
            if tenth == shown["tenth"]:
                return
            shown["tenth"] = tenth
        else:
            shown["tenth"] = -1
        print(f"[{p.step}/{p.total}] {p.message}", file=sys.stderr, flush=True)

    return show


def preset_sources(name: str) -> tuple[str | None, str | None, str | None]:
    """(receiver, sharer, fuser) of the named pair; a name that is no preset is a fuser folder or a downloaded
    pair, whose models the fuser names."""
    from ..presets import find_preset

    preset = find_preset(name)
    if preset is None:
        return None, None, name
    if preset.install:
        raise ModelLoadError(f"The {preset.name} pair needs the real models, which are not installed: {preset.install}")
    if not preset.ready:
        raise ModelLoadError(f"The {preset.name} pair is not downloaded yet: c2c fuser download {preset.name}")
    return preset.receiver, preset.sharer, preset.fuser or None


def add_settings_options(parser: argparse.ArgumentParser, config: type, title: str,
                         defaults: dict[str, str] | None = None, names: Iterable[str] | None = None) -> None:
    """One option per field of a settings dataclass (``--max-new-tokens`` for ``max_new_tokens``; ``names`` keeps
    some fields), with its help text; an option not given stays None, so the dataclass keeps its default (or the
    command's, which ``defaults`` describes in words)."""
    group = parser.add_argument_group(title)
    for f in config.help_fields():
        if names is not None and f.name not in names:
            continue
        add_field_option(group, f, default=None, dest=f.name, said=(defaults or {}).get(f.name))


def settings_from_args(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of ``config`` given as options (see :func:`add_settings_options`)."""
    return {f.name: getattr(args, f.name) for f in config.help_fields() if getattr(args, f.name, None) is not None}


def model_spec(args: argparse.Namespace, source: str | None, adapter: str | None, quantize: str | None) -> Any:
    """One model's spec from the options; None when neither a model nor an adapter is given. An adapter given
    alone puts it on the base its adapter_config.json names."""
    if source is None and not adapter:
        return None
    return Placement(args.device, args.dtype, quantize or args.quantize).spec(source or adapter, adapter or "")
