"""The shipped demo pair: it is small, it loads as the default pair, and its headline numbers hold on a sample.

Every answer here goes through the engine, greedy, as in the app. The sample is a few questions
per split, evenly spread (``c2c demo eval --limit``); the full numbers are in metrics.json and
in docs/demo-pair.md, and tests/demo/test_recipe.py (slow) rebuilds the pair and compares them.
"""

from __future__ import annotations

import json

import pytest

from fusers.demo import METRICS_NAME, WORLD_NAME, demo_root, pair_paths, permuted_sharer_path
from fusers.demo.evaluate import evaluate, format_table, shipped_metrics
from fusers.demo.world import SPLITS, World

MB = 2**20


def test_the_pair_is_installed_small_and_safe():
    root = demo_root()
    for path in (*pair_paths(), permuted_sharer_path()):
        assert path.is_dir() and path.parent == root
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 30 * MB
    assert max(p.stat().st_size for p in files) < 20 * MB
    # weights only as safetensors: nothing that unpickles
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".jinja"}
    receiver, sharer, fuser = pair_paths()
    for model in (receiver, sharer, permuted_sharer_path()):
        assert (model / "tokenizer.json").is_file() and (model / "chat_template.jinja").is_file()


def test_the_two_models_differ_in_architecture():
    receiver, sharer, _ = pair_paths()
    r = json.loads((receiver / "config.json").read_text())
    s = json.loads((sharer / "config.json").read_text())
    assert r["model_type"] == "qwen3" and s["model_type"] == "llama"
    for key in ("num_hidden_layers", "num_attention_heads", "hidden_size"):
        assert r[key] != s[key]


def test_default_pair_is_the_demo_pair():
    from fusers.sources import default_pair

    assert default_pair() == tuple(str(p) for p in pair_paths())


def test_the_shipped_numbers():
    """What the recipe measured on the shipped pair (metrics.json, docs/demo-pair.md's table), against the goals."""
    m = shipped_metrics()
    acc = m["accuracy"]
    assert acc["fusion"]["a"] >= 0.95  # fusion does not spoil what the receiver knows
    assert acc["fusion"]["b"] >= 0.90
    assert acc["fusion"]["c"] >= 0.50  # facts the fuser never saw
    assert acc["receiver"]["b"] <= 0.05 and acc["receiver"]["c"] <= 0.05
    assert m["fusion_to_relay_latency"] < 0.6
    # The goal is 80%; the shipped pair reaches 74% (docs/demo-pair.md). It must at least follow the swapped sharer far
    # more often than it repeats the original facts, which would mean the fuser memorised them.
    assert m["ablation_follow_rate"] >= 0.70 and m["ablation_original_rate"] <= 0.05
    manifest = json.loads((demo_root() / "manifest.json").read_text())
    assert m["questions"] == {s: min(manifest["evaluate_limit"], len(World.load(demo_root() / WORLD_NAME).eval_facts(s)))
                              for s in SPLITS}


@pytest.fixture(scope="module")
def sample_result():
    return evaluate(limit=12)


def test_cache_fusion_carries_the_sharers_knowledge_on_a_sample(sample_result):
    acc = sample_result["accuracy"]
    # what the receiver knows survives fusion; what only the sharer knows arrives through it
    assert acc["fusion"]["a"] >= 11 / 12
    assert acc["fusion"]["b"] >= 11 / 12
    assert acc["receiver"]["b"] == 0 and acc["receiver"]["c"] == 0
    # held-out facts: the shipped number with room for a 12-question sample
    assert acc["fusion"]["c"] >= shipped_metrics()["accuracy"]["fusion"]["c"] - 0.25
    assert acc["fusion"]["c"] > acc["receiver"]["c"] + 0.25
    # the sharer knows everything, and text relay passes it on
    assert min(acc["sharer"].values()) >= 11 / 12
    assert acc["relay"]["b"] >= 10 / 12


def test_relay_plus_fusion_reads_both_channels_on_a_sample(sample_result):
    """Relay + fusion (99% / 96% / 94% on 100 questions per split, docs/demo-pair.md) keeps what the receiver knows and
    passes on what only the sharer knows. This 12-question sample of (c) falls mostly on founders and years,
    where the fused cache garbles the country's name: 7 of 12 right (cache fusion 8, text relay 12), so the
    bound on (c) leaves room for that, and still fails if the hint stopped reaching the receiver."""
    acc = sample_result["accuracy"]
    assert acc["hybrid"]["a"] >= 11 / 12 and acc["hybrid"]["b"] >= 10 / 12
    assert acc["hybrid"]["c"] >= 0.5 and acc["hybrid"]["c"] > acc["receiver"]["c"] + 0.25
    assert sample_result["examples"]["hybrid"]["c"]["hint"]  # the sharer wrote the hint it read


def test_fusion_follows_a_swapped_sharer(sample_result):
    # the shipped rate is 74% over 100 questions; 12 questions get room for the sample
    assert sample_result["ablation_follow_rate"] >= 0.5
    assert sample_result["ablation_original_rate"] <= 0.2


def test_the_relay_hint_is_one_sentence(sample_result):
    hint = sample_result["examples"]["relay"]["b"]["hint"].strip()
    assert hint.endswith(".") and hint.count(".") == 1


def test_demo_eval_cli_json(capsys):
    from fusers.cli import main

    assert main(["demo", "eval", "--json", "--limit", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["accuracy"]) == {"receiver", "sharer", "relay", "fusion", "hybrid"}
    assert all(set(v) == set(SPLITS) for v in out["accuracy"].values())
    assert set(out["latency_s"]) == {"receiver", "sharer", "relay", "fusion", "hybrid"}
    assert out["hybrid_to_relay_latency"] > 0 and "hint" in out["examples"]["hybrid"]["a"]
    assert 0 <= out["ablation_follow_rate"] <= 1


def test_demo_eval_cli_table_and_bad_limit(capsys):
    from fusers.cli import main

    assert main(["demo", "eval", "--limit", "1", "--no-ablation"]) == 0
    table = capsys.readouterr().out
    assert "| Cache fusion |" in table and "| Relay + fusion |" in table and "median latency" in table
    assert "Relay + fusion takes" in table
    assert main(["demo", "eval", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err


def test_compare_without_a_pair_uses_the_demo(capsys):
    from fusers.cli import main

    world = World.load(demo_root() / WORLD_NAME)
    fact = world.eval_facts("b")[0]
    assert main(["compare", "--prompt", fact.question, "--modes", "receiver,fusion", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "I do not know" in lines[0]["text"]
    assert fact.value in lines[1]["text"]


def test_format_table_lists_every_mode():
    table = format_table(shipped_metrics())
    for label in ("Receiver alone", "Sharer alone", "Text relay", "Cache fusion"):
        assert f"| {label} |" in table
    assert (demo_root() / METRICS_NAME).is_file()
