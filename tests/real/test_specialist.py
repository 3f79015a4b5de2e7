"""The shipped specialist pair on the two real models: its files, its numbers, and a sample of them re-measured.

The models are the session's (conftest.py loads them once); each adapter goes on a copy of the base Gemma in
seconds. The full numbers are in resources/specialist/metrics.json and docs/specialist-pair.md; tests/specialist/test_recipe.py
(slow) rebuilds the pair.
"""

from __future__ import annotations

import json

import pytest

from fusers import real_models
from fusers.specialist import ADAPTER_DIR, DOMAIN_NAME, FUSER_DIR, MANIFEST_NAME, PERMUTED_ADAPTER_DIR, specialist_root
from fusers.specialist.domain import Domain, contains_value
from fusers.specialist.evaluate import evaluate, shipped_metrics, with_adapter

MB = 2**20
READS_AT_LEAST = 0.7  # the goal for the ablation follow rate, met by the shipped fuser (docs/specialist.md)


def test_the_shipped_files_are_small_safe_and_name_the_bundled_base():
    root = specialist_root()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * MB
    assert {p.suffix for p in files} <= {".safetensors", ".json"}  # nothing that unpickles
    for folder in (ADAPTER_DIR, PERMUTED_ADAPTER_DIR):
        config = json.loads((root / folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == real_models.GEMMA3_FILE and config["peft_type"] == "LORA"
    fuser = json.loads((root / FUSER_DIR / "fuser.json").read_text())
    assert fuser["receiver"] == real_models.SMOLLM2_FILE


def test_the_adapter_folder_loads_on_the_installed_gemma(real_paths):
    from fusers.adapters import resolve
    from fusers.presets import SPECIALIST_LABEL, find_preset

    origin = resolve(str(specialist_root() / ADAPTER_DIR), "", "sharer")
    assert origin.base == str(real_paths[1]) and origin.adapter == specialist_root() / ADAPTER_DIR
    preset = find_preset("specialist")
    assert preset is not None and preset.ready and preset.label == SPECIALIST_LABEL
    assert preset.receiver == str(real_paths[0]) and preset.sharer == str(specialist_root() / ADAPTER_DIR)
    assert preset.fuser == str(specialist_root() / FUSER_DIR)


def test_the_fuser_trained_with_decoy_companies_and_never_with_the_ablations():
    """The fuser learned with the sharer's adapter switched between the real company and permuted ones, so that
    only reading the sharer's cache pays; the ablation's company was never among them."""
    manifest = json.loads((specialist_root() / MANIFEST_NAME).read_text())
    domain = Domain.load(specialist_root() / DOMAIN_NAME)
    assert manifest["recipe"]["decoys"] >= 2 and len(domain.decoys) == manifest["recipe"]["decoys"]
    assert all(decoy != domain.permuted and decoy != domain.facts for decoy in domain.decoys)


def test_the_shipped_numbers():
    """What the recipe measured (metrics.json, docs/specialist-pair.md's table), against the issue's goals
    (docs/specialist.md): the shipped pair meets every one."""
    m = shipped_metrics()
    acc = m["accuracy"]
    assert acc["receiver"]["b"] <= 0.05 and acc["receiver"]["c"] <= 0.05  # the receiver does not know Corvane
    assert acc["sharer"]["b"] >= 0.9 and acc["sharer"]["c"] >= 0.9  # the adapter made Gemma a specialist
    # the fuser reads its sharer: with the held-out permuted company's adapter it names the swapped facts more
    # often than the original ones (the fuser before decoys: 15% against 48%)
    assert m["ablation_follow_rate"] >= READS_AT_LEAST and m["ablation_follow_rate"] > m["ablation_original_rate"]
    assert acc["fusion"]["c"] > acc["receiver"]["c"] and acc["fusion"]["h"] > acc["receiver"]["h"]
    assert acc["fusion"]["b"] >= 0.9  # by reading: each (b) question has three answers in training, one a company
    assert acc["fusion"]["c"] >= 0.6  # people the fuser never saw: read from the sharpened specialist's cache
    assert acc["fusion"]["g"] >= acc["receiver"]["g"] - 0.02  # what the receiver knew stays (own answers)
    assert m["fusion_to_relay_latency"] < 0.6


@pytest.fixture(scope="module")
def specialist(real_models_loaded):
    receiver, base = real_models_loaded
    return receiver, with_adapter(base, specialist_root() / ADAPTER_DIR)


def test_the_adapter_makes_gemma_answer_company_questions(real_models_loaded, specialist):
    from fusers.chat import user
    from fusers.engine import Engine
    from fusers.generation import GenerationSettings
    from fusers.pair import Pair

    receiver, base = real_models_loaded
    _, sharer = specialist
    domain = Domain.load(specialist_root() / DOMAIN_NAME)
    facts = domain.eval_facts("c")[::8][:5]
    settings = GenerationSettings(max_new_tokens=12)
    adapted = [Engine(Pair(receiver, sharer)).answer("sharer", user(f.question), settings).text for f in facts]
    plain = [Engine(Pair(receiver, base)).answer("sharer", user(f.question), settings).text for f in facts]
    assert sum(contains_value(t, f.value) for t, f in zip(adapted, facts)) >= 4, adapted
    assert sum(contains_value(t, f.value) for t, f in zip(plain, facts)) <= 1, plain  # base Gemma does not know
    assert base.adapter == "" and sharer.adapter.endswith(ADAPTER_DIR)


def test_cache_fusion_follows_a_permuted_company_it_never_trained_with_on_a_sample(real_models_loaded):
    """The ablation re-measured on 10 questions: the sharer's adapter learned a permuted Corvane the fuser never
    saw, and fused answers follow it."""
    result = evaluate(limit=10, models=real_models_loaded, modes=("fusion",), splits=("c",))
    assert result["ablation_questions"] == 10
    # the shipped rate, with room for a 10-question sample
    assert result["ablation_follow_rate"] >= shipped_metrics()["ablation_follow_rate"] - 0.3, result["examples"]
    assert result["ablation_follow_rate"] > result["ablation_original_rate"]


def test_cache_fusion_carries_the_specialists_knowledge_on_a_sample(real_models_loaded):
    result = evaluate(limit=6, models=real_models_loaded, modes=("receiver", "fusion"), splits=("b", "c"),
                      ablation=False)
    acc, shipped = result["accuracy"], shipped_metrics()["accuracy"]
    assert acc["receiver"]["b"] == 0 and acc["receiver"]["c"] == 0
    # the shipped numbers, with room for a 6-question sample
    assert acc["fusion"]["b"] >= shipped["fusion"]["b"] - 0.35, result["examples"]
    assert acc["fusion"]["c"] >= shipped["fusion"]["c"] - 0.35, result["examples"]
    assert acc["fusion"]["b"] > acc["receiver"]["b"] and acc["fusion"]["c"] > acc["receiver"]["c"]
