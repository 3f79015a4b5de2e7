"""Measuring the demo pair: accuracy per mode and split, latency, and the permuted-sharer ablation.

Every answer goes through :class:`fusers.engine.Engine`, greedy, exactly as the app and
``c2c compare`` produce it. An answer is right when it names the fact's value as a word.
Modes run interleaved question by question, so that a busy machine slows them alike.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import Cancelled
from . import METRICS_NAME, WORLD_NAME, demo_root, pair_paths, permuted_sharer_path
from .world import SPLIT_HELP, SPLITS, Fact, World, contains_value, user

MODES = ("receiver", "sharer", "relay", "fusion")
# Answers are one sentence; the relay hint is one sentence too (the sharer learned to write one).
MAX_NEW_TOKENS = 32
HINT_MAX_NEW_TOKENS = 48


@dataclass
class EvalProgress:
    done: int
    total: int
    message: str


def sample(facts: list[Fact], limit: int | None) -> list[Fact]:
    """``limit`` facts spread evenly over the list (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(facts):
        return list(facts)
    step = len(facts) / limit
    return [facts[int(i * step)] for i in range(limit)]


def evaluate(
    root: str | Path | None = None,
    *,
    limit: int | None = None,
    modes: tuple[str, ...] = MODES,
    ablation: bool = True,
    progress: Callable[[EvalProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Evaluate the demo pair in ``root`` (default: the shipped one) on ``limit`` facts per split (default all)."""
    from ..engine import Engine
    from ..generation import GenerationSettings
    from ..pair import ModelSpec, Pair, load_model, load_pair

    root = demo_root() if root is None else Path(root)
    receiver_dir, sharer_dir, fuser_dir = pair_paths(root)
    world = World.load(root / WORLD_NAME)
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, hint_max_new_tokens=HINT_MAX_NEW_TOKENS)
    cancel = cancel or threading.Event()
    pair = load_pair(ModelSpec(str(receiver_dir), "cpu"), ModelSpec(str(sharer_dir), "cpu"), fuser_dir)
    engine = Engine(pair)

    questions = {split: sample(world.eval_facts(split), limit) for split in SPLITS}
    ablation_facts = sample([f for split in ("b", "c") for f in world.eval_facts(split)
                             if world.permuted[f.country][f.relation] != f.value], limit) if ablation else []
    total = sum(len(q) for q in questions.values()) * len(modes) + len(ablation_facts)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        if cancel.is_set():
            raise Cancelled("The evaluation was cancelled.")
        done += 1
        if progress is not None:
            progress(EvalProgress(done, total, message))

    right: dict[str, dict[str, list[bool]]] = {m: {s: [] for s in SPLITS} for m in modes}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    examples: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in modes}
    for split in SPLITS:
        for fact in questions[split]:
            for mode in modes:
                answer = engine.answer(mode, user(fact.question), settings, cancel=cancel)
                ok = contains_value(answer.text, fact.value)
                right[mode][split].append(ok)
                seconds[mode].append(answer.timing.total)
                if split not in examples[mode]:
                    examples[mode][split] = {"question": fact.question, "expected": fact.value, "answer": answer.text,
                                             **({"hint": answer.hint} if answer.hint is not None else {})}
                tick(f"{mode} ({split}) {fact.question}")

    result: dict[str, Any] = {
        "accuracy": {m: {s: _rate(right[m][s]) for s in SPLITS} for m in modes},
        "latency_s": {m: statistics.median(seconds[m]) if seconds[m] else None for m in modes},
        "questions": {s: len(questions[s]) for s in SPLITS},
        "splits": dict(SPLIT_HELP),
        "examples": examples,
    }
    if "fusion" in modes and "relay" in modes and result["latency_s"]["relay"]:
        result["fusion_to_relay_latency"] = result["latency_s"]["fusion"] / result["latency_s"]["relay"]

    if ablation:
        # the same receiver and fuser, with a sharer that learned a world where every country has another's facts
        swapped = Pair(pair.receiver, load_model(ModelSpec(str(permuted_sharer_path(root)), "cpu"), "sharer"),
                       pair.fuser)
        swapped_engine = Engine(swapped)
        follows, original = [], []
        for fact in ablation_facts:
            answer = swapped_engine.answer("fusion", user(fact.question), settings, cancel=cancel)
            follows.append(contains_value(answer.text, world.permuted[fact.country][fact.relation]))
            original.append(contains_value(answer.text, fact.value))
            tick(f"ablation {fact.question}")
        result["ablation_follow_rate"] = _rate(follows)
        result["ablation_original_rate"] = _rate(original)
        result["ablation_questions"] = len(ablation_facts)
    pair.close()
    return result


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_table(result: dict[str, Any]) -> str:
    """The results as a Markdown table (the README's), with the ablation below it."""
    from ..engine import MODE_LABELS, Mode

    n = result["questions"]
    head = (f"| mode | (a) receiver knows ({n['a']}) | (b) sharer only, fuser trained ({n['b']}) "
            f"| (c) sharer only, held out ({n['c']}) | median latency |")
    lines = [head, "|---|---:|---:|---:|---:|"]
    for mode in [m for m in MODES if m in result["accuracy"]]:  # metrics.json keeps its keys sorted
        acc = result["accuracy"][mode]
        latency = result["latency_s"].get(mode)
        lines.append(f"| {MODE_LABELS[Mode(mode)]} | {_pct(acc['a'])} | {_pct(acc['b'])} | {_pct(acc['c'])} | "
                     + ("-" if latency is None else f"{1000 * latency:.0f} ms") + " |")
    notes = []
    if "fusion_to_relay_latency" in result:
        notes.append(f"Cache fusion takes {result['fusion_to_relay_latency']:.2f}x the time of text relay.")
    if "ablation_follow_rate" in result:
        notes.append(
            f"Ablation (the same fuser with a sharer trained on a permuted world, {result['ablation_questions']} "
            f"questions from (b) and (c)): cache fusion follows the swapped sharer's facts in "
            f"{_pct(result['ablation_follow_rate'])} of answers, and gives the original facts in "
            f"{_pct(result['ablation_original_rate'])}."
        )
    return "\n".join(lines + ([""] + notes if notes else []))


def shipped_metrics(root: str | Path | None = None) -> dict[str, Any]:
    """What the recipe measured on the shipped pair (``metrics.json``)."""
    import json

    root = demo_root() if root is None else Path(root)
    return json.loads((root / METRICS_NAME).read_text())
