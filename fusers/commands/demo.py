"""``c2c demo``: the offline demo pair that ships with C2C Playground."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the offline demo pair: measure it (c2c demo eval)",
        description="The bundled demo pair: a small receiver, sharer and fuser trained on a generated world of "
        "fictional countries (rebuild it with `python -m fusers.demo.build`).",
    )
    demo_sub = p.add_subparsers(dest="demo_command", metavar="COMMAND")
    demo_sub.required = True
    ev = demo_sub.add_parser(
        "eval",
        help="accuracy of each mode on facts the receiver knows (a), facts only the sharer knows that the fuser "
        "saw (b) or never saw (c), latency, and the permuted-sharer ablation",
        description="Answer every fact's question in each mode through the engine (greedy) and report accuracy "
        "(the answer names the right value), median latency, and how often cache fusion follows a sharer trained "
        "on a permuted world.",
    )
    add_eval_arguments(ev, "a demo folder built by the recipe (default: the shipped pair; with --team, the shipped "
                       "team folder)", "skip the permuted-sharer ablation")
    ev.add_argument("--team", action="store_true", help="the team showcase instead (python -m fusers.demo.team): the "
                    "receiver, each sharer alone, each sharer's fusion, the team's fusion and text relay, on facts only "
                    "sharer A knows, only B knows, questions needing both, and facts no fuser saw")
    ev.set_defaults(func=run_eval)


def add_eval_arguments(parser: argparse.ArgumentParser, root_help: str, ablation_help: str) -> None:
    """The options of an evaluation command (``c2c demo eval``, ``c2c specialist eval``)."""
    parser.add_argument("--limit", type=int, default=None, help="questions per split (default: all of them)")
    parser.add_argument("--root", default=None, help=root_help)
    parser.add_argument("--no-ablation", action="store_true", help=ablation_help)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")


def run_evaluation(args: argparse.Namespace, evaluate: Callable[..., dict[str, Any]],
                   table: Callable[[dict[str, Any]], str], check: Callable[[], Any] | None = None) -> int:
    """Check the options (and ``check()``, what must exist before minutes of loading), run ``evaluate`` with a
    progress line every 25 answers, print JSON or the table."""
    import os

    from ..errors import PromptError

    # OpenMP threads that spin while they wait for a busy core made an evaluation 6x slower on a loaded machine;
    # waiting passively changes the speed only, never the answers (read when torch loads, below)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    if args.limit is not None and args.limit < 1:
        raise PromptError(f"--limit must be a positive number of questions per split, got {args.limit}.")
    if check is not None:
        check()

    def progress(p: Any) -> None:
        if not args.json and (p.done % 25 == 0 or p.done == p.total):
            print(f"[{p.done}/{p.total}] {p.message}", file=sys.stderr, flush=True)

    result = evaluate(args.root, limit=args.limit, ablation=not args.no_ablation, progress=progress)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(table(result))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    if args.team:
        from ..demo import team

        return run_evaluation(args, team.evaluate, team.format_table)
    from ..demo.evaluate import evaluate, format_table

    return run_evaluation(args, evaluate, format_table)
