"""Options shared by the commands that load a pair."""

from __future__ import annotations

import argparse
from typing import Any

from ..devices import DEVICES_HELP
from ..pair import QUANTIZE


def add_pair_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pair")
    group.add_argument("--receiver", help="receiver: Hub id, local folder or .gguf file (default: the fuser's receiver)")
    group.add_argument("--sharer", help="sharer: Hub id, local folder or .gguf file (default: the fuser's sharer)")
    group.add_argument("--receiver-adapter", help="a PEFT (LoRA) adapter folder to put on the receiver")
    group.add_argument("--sharer-adapter", help="a PEFT (LoRA) adapter folder to put on the sharer (a folder given "
                       "as --sharer may itself be an adapter: its adapter_config.json names the base)")
    group.add_argument("--fuser", help="fuser: a published pair folder, one of ours, or a downloaded pair name")
    group.add_argument("--device", default="auto", help=DEVICES_HELP)
    group.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16")
    group.add_argument("--quantize", default="none", choices=QUANTIZE, help="quantize both models with bitsandbytes")
    group.add_argument("--receiver-quantize", choices=QUANTIZE, help="override --quantize for the receiver")
    group.add_argument("--sharer-quantize", choices=QUANTIZE, help="override --quantize for the sharer")
    group.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                       help="on a CUDA GPU, decode with transformers' generate instead of static caches captured in "
                            "CUDA graphs (captured while the pair loads; other devices always use generate)")


def pair_from_args(args: argparse.Namespace, progress: Any = None) -> Any:
    """Load the pair the options name."""
    from ..pair import ModelSpec, load_pair
    from ..sources import default_pair, resolve_fuser

    receiver, sharer, fuser = args.receiver, args.sharer, args.fuser
    if receiver is None and sharer is None and fuser is None:
        receiver, sharer, fuser = default_pair()

    fuser_path = resolve_fuser(fuser) if fuser is not None else None
    return load_pair(
        model_spec(args, receiver, args.receiver_adapter, args.receiver_quantize),
        model_spec(args, sharer, args.sharer_adapter, args.sharer_quantize),
        fuser_path,
        progress=progress,
        defaults=ModelSpec("-", args.device, args.dtype, args.quantize),
        cuda_graphs=args.cuda_graphs,
    )


def model_spec(args: argparse.Namespace, source: str | None, adapter: str | None, quantize: str | None) -> Any:
    """One model's spec from the options; None when neither a model nor an adapter is given. An adapter given
    alone puts it on the base its adapter_config.json names."""
    from ..pair import ModelSpec

    if source is None and not adapter:
        return None
    return ModelSpec(source or adapter, args.device, args.dtype, quantize or args.quantize, adapter or "")
