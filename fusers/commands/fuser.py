"""``c2c fuser``: inspect and convert fusers (downloads add list, download and remove)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuser", help="inspect, convert and download fusers")
    fsub = p.add_subparsers(dest="fuser_command", metavar="ACTION")
    fsub.required = True

    inspect = fsub.add_parser("inspect", help="print a fuser's pair, layer map, sizes and format")
    inspect.add_argument("path", help="fuser folder (published or ours) or a downloaded pair name")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=run_inspect)

    convert = fsub.add_parser("convert", help="convert between the published format and ours")
    convert.add_argument("src", help="fuser folder to read")
    convert.add_argument("dst", help="new folder to write")
    convert.add_argument("--to", choices=("c2c-playground", "published"),
                         help="target format (default: the other one)")
    convert.set_defaults(func=run_convert)

    try:
        from . import hub_commands
    except ImportError:
        return
    hub_commands.register(fsub)


def describe_fuser(path: Path) -> dict:
    from ..checkpoint import load_fuser
    from ..sources import resolve_fuser

    path = resolve_fuser(path)
    fuser = load_fuser(path)
    info = fuser.info
    configs = [p.config.to_dict() for p in fuser.projectors]
    same = all(c == configs[0] for c in configs)
    disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    gates = fuser.gates()
    return {
        "path": str(path),
        "format": info.format,
        **fuser.manifest(),
        "fusers": len(fuser.projectors),
        "parameters": fuser.parameter_count(),
        "weights_dtype": str(fuser.dtype).removeprefix("torch."),
        "weights_bytes": fuser.nbytes(),
        "disk_bytes": disk,
        "gates_open": {"key": sum(k for _, k, _ in gates), "value": sum(v for _, _, v in gates)},
        "projector": configs[0] if same else configs,
    }


def run_inspect(args: argparse.Namespace) -> int:
    d = describe_fuser(args.path)
    if args.json:
        print(json.dumps(d, indent=2, sort_keys=True))
        return 0
    align = f"aligned ({d['alignment']['strategy']})" if d["alignment"]["enabled"] else "shared token ids"
    print(f"fuser     {d['path']}")
    print(f"format    {d['format']}")
    print(f"receiver  {d['receiver']} ({d['receiver_layers']} layers)")
    print(f"sharer    {d['sharer']}" + (f" ({d['sharer_layers']} layers)" if d["sharer_layers"] else ""))
    print(f"mapping   {d['mapping']}, tokens {align}")
    print("layers    " + ", ".join(f"{t}<-{s}" for t, s, _ in d["layer_map"]) + "  (receiver<-sharer)")
    print(f"gates     key open on {d['gates_open']['key']}/{d['fusers']} layers, "
          f"value open on {d['gates_open']['value']}/{d['fusers']}")
    print(f"size      {d['fusers']} fusers, {d['parameters'] / 1e6:.2f}M parameters, {d['weights_dtype']}, "
          f"{d['disk_bytes'] / 2**20:.1f} MiB on disk")
    proj = d["projector"] if isinstance(d["projector"], dict) else d["projector"][0]
    print("projector " + ", ".join(f"{k}={v}" for k, v in sorted(proj.items())))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..checkpoint import convert

    src_format, dst_format = convert(args.src, args.dst, args.to)
    print(f"converted {args.src} ({src_format}) -> {args.dst} ({dst_format})")
    return 0
