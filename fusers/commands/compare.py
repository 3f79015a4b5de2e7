"""``c2c compare``: answer one prompt in several modes and print answers and timings."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from ..engine import Mode  # cheap: fusers.engine imports torch lazily
from .common import add_pair_options, pair_from_args

ALL_MODES = ",".join(m.value for m in Mode)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="answer a prompt with receiver alone, sharer alone, text relay, cache fusion and relay + fusion",
        description="Answer one user message in each mode and print the answers with their timing. "
        "With no pair given, the offline demo pair is used.",
    )
    add_pair_options(p)
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--modes", default=ALL_MODES, help=f"comma-separated modes to run, in order (default {ALL_MODES}); "
                   "with a team, a mode may name sharers: fusion:A, fusion:A+B, sharer:B")
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
    from ..engine import Engine, TokenEvent
    from ..errors import PromptError
    from ..generation import GenerationSettings

    from ..errors import ModeUnavailableError
    from ..team import parse_mode

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        parsed = {m: parse_mode(m) for m in modes}
    except ModeUnavailableError as exc:
        raise PromptError(f"--modes takes a comma-separated list of {ALL_MODES}: {exc}") from None
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
        base, names = parsed[mode]
        print(f"\n== {base.label}{' from ' + ', '.join(names) if names else ''} ({mode}) ==", flush=True)
        state = {"part": None}

        def show(event, state=state) -> None:
            if not isinstance(event, TokenEvent):
                return
            part = (event.part, event.sharer)
            if part != state["part"]:
                state["part"] = part
                hint = f"[hint {event.sharer}] " if event.sharer else "[hint] "
                print(("\n" if state.get("hinted") else "") + hint if event.part == "hint" else
                      ("\n[answer] " if base.writes_hint else ""), end="", flush=True)
                state["hinted"] = event.part == "hint"
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
