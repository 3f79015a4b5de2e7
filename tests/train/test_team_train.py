"""Training a team's fusers jointly (fusers.train.team): the output is a team folder, and resume is exact."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file

from fusers.engine import Engine
from fusers.errors import Cancelled, TrainingError
from fusers.pair import ModelSpec, Placement, load_model, load_pair
from fusers.team import TEAM_MANIFEST, read_team
from fusers.train import TrainConfig
from fusers.train.team import train_team

from .conftest import FAST

CONFIG = dict(steps=12, batch_size=8, lr=5e-3, hidden_dim=16, intermediate_dim=16, dropout=0.1, gate_init=1.0,
              warmup_steps=2, eval_split=0.1, eval_every=4, log_every=2, save_every=4, keep_checkpoints=5)


@pytest.fixture(scope="module")
def team_models(task_dirs):
    """The task's receiver; sharer "keys" (tells the keys apart) and sharer "blind" (the receiver's own model,
    which cannot)."""
    receiver = load_model(ModelSpec(str(task_dirs.receiver), "cpu"), "receiver")
    return receiver, {"keys": load_model(ModelSpec(str(task_dirs.sharer), "cpu"), "sharer"),
                      "blind": load_model(ModelSpec(str(task_dirs.receiver), "cpu"), "sharer")}


def team_weights(folder):
    return {s.name: load_file(str(s.fuser) + "/fuser.safetensors") for s in read_team(folder).sharers}


def test_the_team_learns_what_only_one_sharer_knows_and_loads_as_a_team(task_dirs, team_models, tmp_path):
    receiver, sharers = team_models
    config = TrainConfig(steps=150, eval_split=0.1, log_every=50, **FAST)
    report = train_team(receiver, sharers, task_dirs.data, config, tmp_path / "team")
    fused, alone = report.eval["fuser"], report.eval["receiver"]
    assert fused["first_token_accuracy"] > alone["first_token_accuracy"] + 0.3, report.eval
    assert fused["first_token_accuracy"] >= 0.8, report.eval
    manifest = json.loads((tmp_path / "team" / TEAM_MANIFEST).read_text())
    assert [s["name"] for s in manifest["sharers"]] == ["keys", "blind"]
    assert manifest["sharers"][0]["fuser"] == "fuser-keys"  # relative: the folder moves whole

    team = load_pair(None, None, tmp_path / "team", defaults=Placement("cpu"))
    assert [m.name for m in team.members] == ["keys", "blind"]
    answer = Engine(team).answer("fusion", [{"role": "user", "content": "w40 w12 w41"}])
    assert answer.text.split()[0] == "w32" and answer.sharers == ["keys", "blind"]


def test_a_team_run_resumes_exactly(task_dirs, team_models, tmp_path):
    receiver, sharers = team_models
    config = TrainConfig(**CONFIG)
    train_team(receiver, sharers, task_dirs.small, config, tmp_path / "whole")
    cancel = threading.Event()

    def stop_after_six(p):
        if p.event == "log" and p.step == 6:
            cancel.set()

    with pytest.raises(Cancelled, match="after step 6 of 12"):
        train_team(receiver, sharers, task_dirs.small, config, tmp_path / "split", progress=stop_after_six,
                   cancel=cancel)
    assert (tmp_path / "split" / "checkpoints" / "step-000006" / TEAM_MANIFEST).is_file()
    assert not (tmp_path / "split" / TEAM_MANIFEST).exists()
    resumed = train_team(receiver, sharers, task_dirs.small, config, tmp_path / "split", resume=True)
    assert resumed.resumed_from == 6
    whole, split = team_weights(tmp_path / "whole"), team_weights(tmp_path / "split")
    assert whole.keys() == split.keys() == {"keys", "blind"}
    for name in whole:
        for key in whole[name]:
            assert torch.equal(whole[name][key], split[name][key]), (name, key)
    with pytest.raises(TrainingError, match="already complete"):
        train_team(receiver, sharers, task_dirs.small, config, tmp_path / "split", resume=True)
    with pytest.raises(TrainingError, match="same sharers"):
        train_team(receiver, dict(reversed(sharers.items())), task_dirs.small, config, tmp_path / "split",
                   resume=True)


def test_c2c_train_trains_a_team_from_sharers_given_several_times_and_resumes_it(task_dirs, tmp_path):
    def c2c(*args):
        proc = subprocess.run([sys.executable, "-m", "fusers.cli", "train", "--data", str(task_dirs.small),
                               "--out", str(tmp_path / "run"), "--device", "cpu", "--batch-size", "8",
                               "--hidden-dim", "16", "--intermediate-dim", "16", "--json", *args],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]

    lines = c2c("--receiver", str(task_dirs.receiver), "--sharer", f"keys={task_dirs.sharer}",
                "--sharer", f"blind={task_dirs.receiver}", "--steps", "4", "--save-every", "2")
    assert lines[-1]["event"] == "report" and lines[-1]["steps"] == 4
    assert [s.name for s in read_team(tmp_path / "run").sharers] == ["keys", "blind"]
    # as if stopped after step 2: the last checkpoint and the final team gone; --resume names no sharer
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-000004")
    (tmp_path / "run" / TEAM_MANIFEST).unlink()
    lines = c2c("--resume")
    assert lines[-1]["event"] == "report" and lines[-1]["resumed_from"] == 2
    assert [s.name for s in read_team(tmp_path / "run").sharers] == ["keys", "blind"]
