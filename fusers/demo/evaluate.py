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

from ..vocabulary import MODES, Mode
from ..errors import Cancelled
from . import METRICS_NAME, WORLD_NAME, demo_root, pair_paths, permuted_sharer_path
from .world import SPLIT_HELP, SPLITS, Fact, World, contains_value, user

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
    tick = Ticker(sum(len(q) for q in questions.values()) * len(modes) + len(ablation_facts), progress, cancel)
    result = answer_questions(engine, questions, modes, settings, tick)
    result["splits"] = dict(SPLIT_HELP)

    if ablation:
        # the same receiver and fuser, with a sharer that learned a world where every country has another's facts
        swapped = Pair(pair.receiver, load_model(ModelSpec(str(permuted_sharer_path(root)), "cpu"), "sharer"),
                       pair.fuser)
        result.update(follow_rates(Engine(swapped), ablation_facts,
                                   lambda f: world.permuted[f.country][f.relation], settings, tick))
    pair.close()
    return result


class Ticker:
    """Counts answers for the progress callback; raises Cancelled between answers once ``cancel`` is set."""

    def __init__(self, total: int, progress: Callable[[EvalProgress], None] | None, cancel: threading.Event):
        self.total, self.progress, self.cancel, self.done = total, progress, cancel, 0

    def __call__(self, message: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("The evaluation was cancelled.")
        self.done += 1
        if self.progress is not None:
            self.progress(EvalProgress(self.done, self.total, message))


def answer_questions(engine: Any, questions: dict[str, list[Any]], modes: tuple[str, ...], settings: Any,
                     tick: Ticker) -> dict[str, Any]:
    """Accuracy per mode and split, median latency per mode, and one example answer each.

    ``questions`` maps each split to facts with a ``question`` and the ``value`` a right answer names. Modes run
    interleaved question by question, so that a busy machine slows them alike.
    """
    splits = list(questions)
    right: dict[str, dict[str, list[bool]]] = {m: {s: [] for s in splits} for m in modes}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    examples: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in modes}
    for split in splits:
        for fact in questions[split]:
            for mode in modes:
                answer = engine.answer(mode, user(fact.question), settings, cancel=tick.cancel)
                ok = contains_value(answer.text, fact.value)
                right[mode][split].append(ok)
                seconds[mode].append(answer.timing.total)
                if split not in examples[mode]:
                    examples[mode][split] = {"question": fact.question, "expected": fact.value, "answer": answer.text,
                                             **({"hint": answer.hint} if answer.hint is not None else {})}
                tick(f"{mode} ({split}) {fact.question}")
    result: dict[str, Any] = {
        "accuracy": {m: {s: _rate(right[m][s]) for s in splits} for m in modes},
        "latency_s": {m: statistics.median(seconds[m]) if seconds[m] else None for m in modes},
        "questions": {s: len(questions[s]) for s in splits},
        "examples": examples,
    }
    if "relay" in modes and result["latency_s"]["relay"]:
        for mode in (m.value for m in Mode if m.needs_fuser):  # each against text relay, a hint alone
            if mode in modes:
                result[f"{mode}_to_relay_latency"] = result["latency_s"][mode] / result["latency_s"]["relay"]
    return result


def follow_rates(engine: Any, facts: list[Any], swapped: Callable[[Any], str], settings: Any,
                 tick: Ticker) -> dict[str, Any]:
    """The ablation: how often cache fusion names the swapped sharer's value (``swapped(fact)``), and how often
    the original one."""
    follows, original = [], []
    for fact in facts:
        answer = engine.answer("fusion", user(fact.question), settings, cancel=tick.cancel)
        follows.append(contains_value(answer.text, swapped(fact)))
        original.append(contains_value(answer.text, fact.value))
        tick(f"ablation {fact.question}")
    return {"ablation_follow_rate": _rate(follows), "ablation_original_rate": _rate(original),
            "ablation_questions": len(facts)}


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


TABLE_HEADS = {"a": "(a) receiver knows", "b": "(b) sharer only, fuser trained", "c": "(c) sharer only, held out"}


def format_table(result: dict[str, Any], heads: dict[str, str] | None = None, ablation_of: str = "a sharer trained on "
                 "a permuted world, {n} questions from (b) and (c)") -> str:
    """The results as a Markdown table (docs/demo-pair.md's), one column per split in ``heads`` (the demo's by default),
    with the ablation below it."""
    from ..vocabulary import MODE_LABELS

    heads = TABLE_HEADS if heads is None else heads
    n = result["questions"]
    head = "| mode | " + " | ".join(f"{text} ({n[split]})" for split, text in heads.items()) + " | median latency |"
    lines = [head, "|---|" + "---:|" * (len(heads) + 1)]
    for mode in [m for m in MODES if m in result["accuracy"]]:  # in the engine's order: metrics.json sorts its keys
        acc = result["accuracy"][mode]
        latency = result["latency_s"].get(mode)
        lines.append(f"| {MODE_LABELS[Mode(mode)]} | " + " | ".join(_pct(acc[split]) for split in heads) + " | "
                     + ("-" if latency is None else f"{1000 * latency:.0f} ms") + " |")
    notes = []
    if "fusion_to_relay_latency" in result:
        notes.append(f"Cache fusion takes {result['fusion_to_relay_latency']:.2f}x the time of text relay.")
    if "hybrid_to_relay_latency" in result:
        notes.append(f"Relay + fusion takes {result['hybrid_to_relay_latency']:.2f}x the time of text relay.")
    if "ablation_follow_rate" in result:
        notes.append(
            f"Ablation (the same fuser with {ablation_of.format(n=result['ablation_questions'])}): cache fusion "
            "follows the swapped sharer's facts in "
            f"{_pct(result['ablation_follow_rate'])} of answers, and gives the original facts in "
            f"{_pct(result['ablation_original_rate'])}."
        )
    return "\n".join(lines + ([""] + notes if notes else []))


def shipped_metrics(root: str | Path | None = None) -> dict[str, Any]:
    """What the recipe measured on the shipped pair (``metrics.json``)."""
    import json

    root = demo_root() if root is None else Path(root)
    return json.loads((root / METRICS_NAME).read_text())
