"""An lm-evaluation-harness task on the demo pair's own world (docs/serve.md): the questions of one split, an
answer right when it names the fact's value. The questions come from the shipped demo pair's world.json."""

from __future__ import annotations

from typing import Any

import datasets

from fusers.demo import WORLD_NAME, demo_root
from fusers.demo.world import SPLITS, World, contains_value


def load(split: str = "b", **_: Any) -> datasets.DatasetDict:
    """The split's facts (``--metadata '{"split": "c"}'`` picks another: a, b or c; see fusers.demo.world)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    world = World.load(demo_root() / WORLD_NAME)
    rows = [{"question": f.question, "value": f.value} for f in world.eval_facts(split)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict[str, str], results: list[str]) -> dict[str, float]:
    return {"acc": float(contains_value(results[0], doc["value"]))}
