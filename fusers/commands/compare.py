"""``c2c compare``: answer one prompt in several modes and print answers and timings."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from ..errors import C2CError
from ..generation import GenerationSettings
from ..vocabulary import MODES, parse_modes
from .common import add_pair_options, add_settings_options, pair_from_args, print_load_progress, settings_from_args

ALL_MODES = ",".join(MODES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="answer a prompt with receiver alone, sharer alone, text relay, cache fusion and relay + fusion",
        description="Answer one user message in each mode and print the answers with their timing. "
        "With no pair given, the offline demo pair is used.",
    )
    add_pair_options(p, presets=True, team=True)
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--modes", default=ALL_MODES, help=f"comma-separated modes to run, in order (default {ALL_MODES}); "
                   "with a team, a mode may name sharers: fusion:A, fusion:A+B, sharer:B")
    add_settings_options(p, GenerationSettings, "generation")
    p.add_argument("--json", action="store_true", help="one JSON object per line per mode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..chat import user
    from ..engine import Engine
    from ..errors import ModeUnavailableError, PromptError
    from ..team import mode_key, parse_mode

    try:
        modes = [mode_key(*parse_mode(m)) for m in parse_modes(args.modes, sharers=True)]
    except (ValueError, ModeUnavailableError) as exc:
        raise PromptError(str(exc)) from None
    try:
        settings = GenerationSettings(**settings_from_args(args, GenerationSettings))
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
        base, names = parse_mode(mode)
        if not args.json:
            print(f"\n== {base.label}{' from ' + ', '.join(names) if names else ''} ({mode}) ==", flush=True)
        try:  # a mode that cannot run (a prompt too long for it, no fuser) is said in its row; the others still run
            answer = _answer(engine, mode, messages, settings, cancel, args.json)
        except C2CError as exc:
            failed.append(mode)
            if args.json:
                print(json.dumps({"mode": mode, "error": str(exc), "error_type": type(exc).__name__}), flush=True)
            else:
                print(f"error: {exc}", flush=True)
            continue
        if args.json:
            print(json.dumps(answer.to_dict()), flush=True)
        else:
            print()
            print(format_timing(answer), flush=True)
    if failed:
        print(f"error: {len(failed)} of {len(modes)} modes failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def _answer(engine: Any, mode: str, messages: list[dict[str, str]], settings: Any, cancel: threading.Event,
            quiet: bool) -> Any:
    """One mode's answer (a mode's name; a team's may name sharers), streamed to stdout as it comes unless
    ``quiet``; a team's hints each say their sharer."""
    from ..engine import TokenEvent
    from ..team import parse_mode

    if quiet:
        return engine.answer(mode, messages, settings, cancel=cancel)
    state = {"part": None}

    def show(event: Any) -> None:
        if not isinstance(event, TokenEvent):
            return
        part = (event.part, getattr(event, "sharer", ""))
        if part != state["part"]:
            state["part"] = part
            hint = f"[hint {part[1]}] " if part[1] else "[hint] "
            print(("\n" if state.get("hinted") else "") + hint if event.part == "hint" else
                  ("\n[answer] " if parse_mode(mode)[0].writes_hint else ""), end="", flush=True)
            state["hinted"] = event.part == "hint"
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
