"""``c2c compare``: answer one prompt in several modes and print answers and timings."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from ..generation import GenerationSettings
from ..vocabulary import MODES, parse_modes
from .common import add_pair_options, add_settings_options, pair_from_args, settings_from_args

ALL_MODES = ",".join(MODES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="answer a prompt with receiver alone, sharer alone, text relay, cache fusion and relay + fusion",
        description="Answer one user message in each mode and print the answers with their timing. "
        "With no pair given, the offline demo pair is used.",
    )
    add_pair_options(p)
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--modes", default=ALL_MODES, help=f"comma-separated modes to run, in order (default {ALL_MODES})")
    add_settings_options(p, GenerationSettings, "generation")
    p.add_argument("--json", action="store_true", help="one JSON object per line per mode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..chat import user
    from ..engine import Engine, TokenEvent
    from ..errors import PromptError

    try:
        modes = parse_modes(args.modes)
    except ValueError as exc:
        raise PromptError(str(exc)) from None
    try:
        settings = GenerationSettings(**settings_from_args(args, GenerationSettings))
    except ValueError as exc:
        raise PromptError(f"Bad generation setting: {exc}.") from None
    messages = user(args.prompt)
    from ..chat import check_messages

    check_messages(messages)  # an empty prompt fails before minutes of loading

    def progress(p) -> None:
        if not args.json:
            print(f"[{p.step}/{p.total}] {p.message}", file=sys.stderr)

    pair = pair_from_args(args, progress)
    if not args.json:
        for line in pair.describe():
            print(f"  {line}", file=sys.stderr)
    engine = Engine(pair)
    cancel = threading.Event()
    for mode in modes:
        if args.json:
            answer = engine.answer(mode, messages, settings, cancel=cancel)
            print(json.dumps(answer.to_dict()), flush=True)
            continue
        print(f"\n== {mode.label} ({mode.value}) ==", flush=True)
        state = {"part": None}

        def show(event, state=state) -> None:
            if not isinstance(event, TokenEvent):
                return
            if event.part != state["part"]:
                state["part"] = event.part
                print("[hint] " if event.part == "hint" else ("\n[answer] " if mode.writes_hint else ""),
                      end="", flush=True)
            print(event.text, end="", flush=True)

        answer = engine.answer(mode, messages, settings, on_event=show, cancel=cancel)
        print()
        print(format_timing(answer), flush=True)
    return 0


def format_timing(answer) -> str:
    t = answer.timing
    parts = [f"{t.tokens_out} tokens ({answer.finish_reason})", f"total {t.total:.3f} s", f"TTFT {t.ttft:.3f} s",
             f"decode {t.decode_tokens_per_s:.1f} tok/s"]
    phases = [f"{name.replace('_', ' ')} {getattr(t, name):.3f} s"
              for name in ("sharer_prefill", "receiver_prefill", "fuse", "hint") if getattr(t, name)]
    peaks = t.peak_memory_by_device or {"": t.peak_memory_bytes}
    peak = ", ".join(f"{name} {value / 2**20:.0f} MiB".strip() for name, value in peaks.items())
    return "-- " + " | ".join(parts + phases) + f" | peak {peak}"
