"""Options shared by the commands that load a pair."""

from __future__ import annotations

import argparse
from typing import Any

from ..devices import DEVICES_HELP
from ..errors import ModelLoadError
from ..pair import QUANTIZE


def add_pair_options(parser: argparse.ArgumentParser, presets: bool = False) -> None:
    group = parser.add_argument_group("pair")
    if presets:
        group.add_argument("--pair", metavar="NAME|FOLDER", help="a named pair ('demo', 'real', 'specialist', a "
                           "published pair once downloaded) or a fuser folder (default: the demo pair)")
    group.add_argument("--receiver", help="receiver: Hub id, local folder or .gguf file (default: the fuser's receiver)")
    group.add_argument("--sharer", action="append", help="sharer: Hub id, local folder or .gguf file (default: the "
                       "fuser's sharer); give it several times, each with its own --fuser, for a team of sharers")
    group.add_argument("--receiver-adapter", help="a PEFT (LoRA) adapter folder to put on the receiver")
    group.add_argument("--sharer-adapter", help="a PEFT (LoRA) adapter folder to put on the sharer (a folder given "
                       "as --sharer may itself be an adapter: its adapter_config.json names the base)")
    group.add_argument("--fuser", action="append", help="fuser: a published pair folder, one of ours, a downloaded "
                       "pair name, or a team folder (team.json); several, one per --sharer, make a team")
    group.add_argument("--device", default="auto", help=DEVICES_HELP)
    group.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16")
    group.add_argument("--quantize", default="none", choices=QUANTIZE, help="quantize both models with bitsandbytes")
    group.add_argument("--receiver-quantize", choices=QUANTIZE, help="override --quantize for the receiver")
    group.add_argument("--sharer-quantize", choices=QUANTIZE, help="override --quantize for the sharer")
    group.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                       help="on a CUDA GPU, decode with transformers' generate instead of static caches captured in "
                            "CUDA graphs (captured while the pair loads; other devices always use generate)")


def pair_from_args(args: argparse.Namespace, progress: Any = None, warm_up: bool = False) -> Any:
    """Load the pair the options name (``warm_up``: answer once in each mode, so the first request is timed
    fairly)."""
    from ..pair import ModelSpec, load_pair
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
        defaults=ModelSpec("-", args.device, args.dtype, args.quantize),
        warm_up=warm_up,
        cuda_graphs=args.cuda_graphs,
    )


def team_from_args(args: argparse.Namespace, progress: Any = None, warm_up: bool = False) -> Any:
    """A team from ``--sharer`` and ``--fuser`` given several times: the n-th fuser fuses the n-th sharer (every
    sharer from its fuser's record when no --sharer is given); each sharer is named after its fuser's folder."""
    from ..pair import ModelSpec
    from ..sources import resolve_fuser
    from ..team import SharerSource, default_names, load_team

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
        progress=progress, defaults=ModelSpec("-", args.device, args.dtype, args.quantize), warm_up=warm_up,
        cuda_graphs=args.cuda_graphs,
    )


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
                         defaults: dict[str, str] | None = None) -> None:
    """One option per field of a settings dataclass (``--max-new-tokens`` for ``max_new_tokens``), with its help
    text; an option not given stays None, so the dataclass keeps its default (or the command's, which
    ``defaults`` describes in words)."""
    group = parser.add_argument_group(title)
    for f in config.help_fields():
        flag = "--" + f.name.replace("_", "-")
        default = (defaults or {}).get(f.name, "" if f.default is None else f"{f.default}.")
        text = f.metadata["help"] + (f" Default: {default}" if default else "")
        kind = str(f.type)
        if "bool" in kind:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            convert = int if kind.startswith("int") else float if kind.startswith("float") else str
            group.add_argument(flag, type=convert, default=None, help=text,
                               metavar={int: "N", float: "X", str: "TEXT"}[convert])


def settings_from_args(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of ``config`` given as options (see :func:`add_settings_options`)."""
    return {f.name: getattr(args, f.name) for f in config.help_fields() if getattr(args, f.name, None) is not None}


def model_spec(args: argparse.Namespace, source: str | None, adapter: str | None, quantize: str | None) -> Any:
    """One model's spec from the options; None when neither a model nor an adapter is given. An adapter given
    alone puts it on the base its adapter_config.json names."""
    from ..pair import ModelSpec

    if source is None and not adapter:
        return None
    return ModelSpec(source or adapter, args.device, args.dtype, quantize or args.quantize, adapter or "")
