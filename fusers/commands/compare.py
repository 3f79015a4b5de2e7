"""``c2c compare``: answer one prompt in several modes and print answers and timings."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from ..engine import Mode  # cheap: fusers.engine imports torch lazily
from ..errors import C2CError
from .common import add_pair_options, pair_from_args, print_load_progress

ALL_MODES = ",".join(m.value for m in Mode)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="answer a prompt with receiver alone, sharer alone, text relay, cache fusion and relay + fusion",
        description="Answer one user message in each mode and print the answers with their timing. "
        "With no pair given, the offline demo pair is used.",
    )
    add_pair_options(p, presets=True)
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--modes", default=ALL_MODES, help=f"comma-separated modes to run, in order (default {ALL_MODES})")
    gen = p.add_argument_group("generation")
    gen.add_argument("--max-new-tokens", type=int, default=128, help="most tokens per answer (default 128)")
    gen.add_argument("--hint-max-new-tokens", type=int, default=64,
                     help="most tokens in the sharer's hint, text relay and relay + fusion (default 64)")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=20)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--ignore-eos", action="store_true", help="always decode --max-new-tokens tokens")
    gen.add_argument("--thinking", action="store_true", help="let Qwen3 templates open a thinking block")
    p.add_argument("--json", action="store_true", help="one JSON object per line per mode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..chat import user
    from ..engine import Engine
    from ..errors import PromptError
    from ..generation import GenerationSettings

    try:
        modes = [Mode(m.strip()) for m in args.modes.split(",") if m.strip()]
    except ValueError:
        raise PromptError(f"--modes takes a comma-separated list of {ALL_MODES}; got {args.modes!r}.") from None
    if not modes:
        raise PromptError(f"--modes is empty; use some of {ALL_MODES}.")
    try:
        settings = GenerationSettings(
            max_new_tokens=args.max_new_tokens, hint_max_new_tokens=args.hint_max_new_tokens,
            do_sample=args.sample, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed=args.seed, ignore_eos=args.ignore_eos, thinking=args.thinking,
        )
    except ValueError as exc:
        raise PromptError(f"Bad generation setting: {exc}.") from None
    messages = user(args.prompt)
    from ..chat import check_messages

    check_messages(messages)  # an empty prompt fails before minutes of loading

    pair = pair_from_args(args, None if args.json else print_load_progress())
    if not args.json:
        for line in pair.describe():
            print(f"  {line}", file=sys.stderr)
    engine = Engine(pair)
    cancel = threading.Event()
    failed = []
    for mode in modes:
        if not args.json:
            print(f"\n== {mode.label} ({mode.value}) ==", flush=True)
        try:  # a mode that cannot run (a prompt too long for it, no fuser) is said in its row; the others still run
            answer = _answer(engine, mode, messages, settings, cancel, args.json)
        except C2CError as exc:
            failed.append(mode)
            if args.json:
                print(json.dumps({"mode": mode.value, "error": str(exc), "error_type": type(exc).__name__}), flush=True)
            else:
                print(f"error: {exc}", flush=True)
            continue
        if args.json:
            print(json.dumps(answer.to_dict()), flush=True)
        else:
            print()
            print(format_timing(answer), flush=True)
    if failed:
        print(f"error: {len(failed)} of {len(modes)} modes failed: {', '.join(m.value for m in failed)}", file=sys.stderr)
        return 2
    return 0


def _answer(engine: Any, mode: Mode, messages: list[dict[str, str]], settings: Any, cancel: threading.Event,
            quiet: bool) -> Any:
    """One mode's answer, streamed to stdout as it comes unless ``quiet``."""
    from ..engine import TokenEvent

    if quiet:
        return engine.answer(mode, messages, settings, cancel=cancel)
    state = {"part": None}

    def show(event: Any) -> None:
        if not isinstance(event, TokenEvent):
            return
        if event.part != state["part"]:
            state["part"] = event.part
            print("[hint] " if event.part == "hint" else ("\n[answer] " if mode.writes_hint else ""), end="", flush=True)
        print(event.text, end="", flush=True)

    return engine.answer(mode, messages, settings, on_event=show, cancel=cancel)


def format_timing(answer) -> str:
    t = answer.timing
    parts = [f"{t.tokens_out} tokens ({answer.finish_reason})", f"total {t.total:.3f} s", f"TTFT {t.ttft:.3f} s",
             f"decode {t.decode_tokens_per_s:.1f} tok/s"]
    phases = [f"{name.replace('_', ' ')} {getattr(t, name):.3f} s"
              for name in ("sharer_prefill", "receiver_prefill", "fuse", "hint") if getattr(t, name)]
    peaks = t.peak_memory_by_device or {"": t.peak_memory_bytes}
    peak = ", ".join(f"{name} {value / 2**20:.0f} MiB".strip() for name, value in peaks.items())
    return "-- " + " | ".join(parts + phases) + f" | peak {peak}"
