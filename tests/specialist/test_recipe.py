"""The recipe rebuilds the shipped specialist pair (slow: half an hour or more on 2 cores; not in CI).

The bytes match on the CPU type and thread count that built the shipped files; another CPU rounds differently
and builds other weights, so the numbers are compared with room.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -m slow tests/specialist/test_recipe.py
"""

from __future__ import annotations

import json

import pytest

from fusers.specialist import DOMAIN_NAME, MANIFEST_NAME, METRICS_NAME, specialist_root

pytestmark = pytest.mark.slow


def test_the_recipe_rebuilds_the_shipped_pair(tmp_path):
    from fusers.specialist.build import Recipe, build

    shipped = specialist_root()
    manifest = json.loads((shipped / MANIFEST_NAME).read_text())
    out = tmp_path / "specialist"
    # the shipped fuser trained on the adapter of an earlier run (the same bytes ship): so does the rebuild
    build(out, Recipe.from_dict(manifest["recipe"]), work=tmp_path / "work", evaluate_limit=manifest["evaluate_limit"],
          limit_general=manifest["limit_general"], adapter_from=shipped if manifest.get("adapter_from") else None,
          evaluate_modes=manifest.get("evaluate_modes"))

    assert json.loads((out / DOMAIN_NAME).read_text())["people"] == json.loads((shipped / DOMAIN_NAME).read_text())["people"]
    new, old = (json.loads((d / METRICS_NAME).read_text()) for d in (out, shipped))
    for mode, splits in old["accuracy"].items():
        if mode not in new["accuracy"]:
            continue  # carried from an earlier measurement (metrics.json's carried_from_previous)
        for split, value in splits.items():
            if value is not None:
                assert abs(new["accuracy"][mode][split] - value) <= 0.15, (mode, split, new["accuracy"][mode][split])
    assert abs(new["ablation_follow_rate"] - old["ablation_follow_rate"]) <= 0.15
