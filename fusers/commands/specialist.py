"""``c2c specialist``: the specialist pair (SmolLM2-135M-Instruct reading a LoRA-trained Gemma-3-270M)."""

from __future__ import annotations

import argparse

from .demo import add_eval_arguments, run_evaluation


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
        "trained on a permuted company. JSON keys: accuracy[mode][split], latency_s[mode], ablation_follow_rate.",
    )
    add_eval_arguments(ev, "a specialist folder built by the recipe (default: the shipped one)",
                       "skip the permuted-adapter ablation")
    ev.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..specialist import pair_paths
    from ..specialist.evaluate import evaluate, table

    # missing files or models fail before minutes of loading
    return run_evaluation(args, evaluate, table, check=lambda: pair_paths(args.root))
