"""The shipped team showcase (resources/team): small, safe, loads alone, and `c2c demo eval --team --json` reports
every mode on every split under the names the issue gives."""

from __future__ import annotations

import json
import subprocess
import sys

from fusers.demo.team import METRICS_NAME, MODES, SPLITS, team_root
from fusers.team import TEAM_MANIFEST, read_team

MB = 2**20


def test_the_team_is_installed_small_safe_and_relative():
    root = team_root()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 30 * MB
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".jinja"}  # nothing that unpickles
    stored = json.loads((root / TEAM_MANIFEST).read_text())
    assert stored["receiver"] == "receiver" and [s["name"] for s in stored["sharers"]] == ["A", "B"]
    manifest = read_team(root)
    assert all(str(root) in s.fuser for s in manifest.sharers)  # relative paths, read from the folder
    # the two sharers differ in architecture and depth
    a, b = (json.loads((root / f"sharer_{n}" / "config.json").read_text()) for n in ("A", "B"))
    assert a["model_type"] != b["model_type"] and a["num_hidden_layers"] != b["num_hidden_layers"]


def test_demo_eval_team_json_has_every_mode_and_split():
    proc = subprocess.run([sys.executable, "-m", "fusers.cli", "demo", "eval", "--team", "--json", "--limit", "2"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["accuracy"]) == set(MODES) == set(result["latency_s"])
    for mode in MODES:
        assert set(result["accuracy"][mode]) == set(SPLITS)
        assert all(0 <= v <= 1 for v in result["accuracy"][mode].values())
        assert result["latency_s"][mode] > 0
    assert result["questions"] == {s: 2 for s in SPLITS}
    shipped = json.loads((team_root() / METRICS_NAME).read_text())
    assert set(shipped["accuracy"]) == set(MODES)


def test_the_recipe_runs_whole_at_a_tiny_scale_and_writes_a_team_folder(tmp_path):
    """Every stage of `python -m fusers.demo.team` (receiver, both specialists, the team's fusers with their
    single-sharer rows, the evaluation), each a few steps: the folder it writes loads as a team."""
    from fusers.demo.team import TeamRecipe, build
    from fusers.pair import Placement, load_pair

    manifest = build(tmp_path / "team", TeamRecipe(threads=1).scaled(0.01), work=tmp_path / "work",
                     evaluate_limit=1)
    out = tmp_path / "team"
    assert set(manifest["timings_s"]) == {"receiver", "sharer_A", "sharer_B", "team_fuser", "evaluation", "total"}
    assert set(manifest["cpu_s"]) == set(manifest["timings_s"]) - {"total"}
    assert manifest["total_bytes"] == sum(manifest["files"].values()) and manifest["reused"] == []
    assert manifest["recipe"]["fuser"]["steps"] == 5 and manifest["versions"]["tokenizers"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    metrics = json.loads((out / METRICS_NAME).read_text())
    assert set(metrics["accuracy"]) == set(MODES) and metrics["questions"] == {s: 1 for s in SPLITS}
    team = load_pair(None, None, out, defaults=Placement("cpu"))
    assert [m.name for m in team.members] == ["A", "B"]
    team.close()
