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
from fusers import tiny
from fusers.fuser import cache_kv
from fusers.generation import prefill
from fusers.team import combine
from fusers.train.team import TeamFuser, TeamFusionModule, train_team

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


def test_a_row_that_names_sharers_gets_only_their_residuals(team_models):
    """The data's "sharers": in one batch, a row without sharer "keys" gets exactly the cache fusion from "blind"
    alone gives it (the engine's ``fusion:blind``), and a row with both the whole team's."""
    receiver, sharers = team_models
    fusers = {name: tiny.random_fuser(receiver.model.config, s.model.config, seed=i)
              for i, (name, s) in enumerate(sharers.items())}
    module = TeamFusionModule(TeamFuser(fusers)).eval()
    ids = torch.tensor([[40, 12, 41, 43], [44, 15, 40, 46]])  # (B=2, L)
    r_kv = cache_kv(prefill(receiver.model, ids))
    s_kvs = [cache_kv(prefill(s.model, ids)) for s in sharers.values()]
    with torch.no_grad():
        mixed = module(r_kv, *s_kvs, rows=torch.tensor([[True, False], [True, True]]))  # (sharers, B): keys in row 0 only
        keys_alone = fusers["keys"].fuse(r_kv, s_kvs[0])[0]
        whole = combine(r_kv, [f.fuse(r_kv, kv)[0] for f, kv in zip(fusers.values(), s_kvs)])
        blind_alone = fusers["blind"].fuse(r_kv, s_kvs[1])[0]
    for layer in range(len(r_kv)):
        for j in range(2):
            torch.testing.assert_close(mixed[layer][j][0], whole[layer][j][0])
            torch.testing.assert_close(mixed[layer][j][1], blind_alone[layer][j][1])
            assert not torch.allclose(mixed[layer][j][1], whole[layer][j][1])  # keys' residual really left out
            assert not torch.allclose(keys_alone[layer][j][1], blind_alone[layer][j][1])


def test_a_team_trains_on_rows_that_name_sharers_and_refuses_names_it_lacks(task_dirs, team_models, tmp_path):
    """Rows naming only "blind" (which cannot tell the keys apart) teach nothing about the keys; rows naming "keys"
    do, so a team trained on both learns the task through ``fusion:keys``."""
    receiver, sharers = team_models
    records = [json.loads(line) for line in task_dirs.data.read_text().splitlines()]
    with pytest.raises(TrainingError, match='names sharers law in "sharers", but the team\'s sharers are keys, '
                                            'blind'):
        train_team(receiver, sharers, [{**records[0], "sharers": ["law"]}] * 8, TrainConfig(**CONFIG),
                   tmp_path / "bad")
    assert not (tmp_path / "bad" / TEAM_MANIFEST).exists()
    data = [{**r, "sharers": ["keys"] if i % 4 else ["blind"]} for i, r in enumerate(records)]
    config = TrainConfig(steps=150, eval_split=0.1, log_every=50, **FAST)
    train_team(receiver, sharers, data, config, tmp_path / "team")
    team = load_pair(None, None, tmp_path / "team", defaults=Placement("cpu"))
    engine = Engine(team)
    right = {mode: 0 for mode in ("fusion:keys", "fusion:blind")}
    for record in records[:40]:
        question, expected = record["messages"][0], record["messages"][1]["content"]
        for mode in right:
            right[mode] += (engine.answer(mode, [question]).text.split() or [""])[0] == expected
    assert right["fusion:keys"] >= 24 and right["fusion:blind"] <= 12, right  # a guess: 5 of 40
