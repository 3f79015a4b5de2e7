"""Checkpoints, exact resume, cancel, fine-tuning from a published fuser, and the Python API's guards."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from safetensors.torch import load_file

from fusers.checkpoint import load_fuser
from fusers.errors import Cancelled, TrainingError
from fusers.pair import ModelSpec, load_model
from fusers.train import TrainConfig, train

# dropout on, so the restored RNG state matters; eval and checkpoints inside the run
CONFIG = dict(steps=12, batch_size=8, lr=5e-3, hidden_dim=16, intermediate_dim=16, dropout=0.1, gate_init=1.0,
              warmup_steps=2, eval_split=0.1, eval_every=4, log_every=2, save_every=4, keep_checkpoints=5)


def weights(path):
    return load_file(str(path / "fuser.safetensors"))


def test_resume_continues_exactly(task_dirs, task_models, tmp_path):
    receiver, sharer = task_models
    config = TrainConfig(**CONFIG)
    whole = train(receiver, sharer, task_dirs.small, config, tmp_path / "whole")

    cancel = threading.Event()
    seen = []

    def stop_after_six(p):
        seen.append(p)
        if p.event == "log" and p.step == 6:
            cancel.set()

    with pytest.raises(Cancelled, match="after step 6 of 12.*--resume"):
        train(receiver, sharer, task_dirs.small, config, tmp_path / "split", progress=stop_after_six, cancel=cancel)
    assert (tmp_path / "split" / "checkpoints" / "step-000006").is_dir()
    assert not (tmp_path / "split" / "fuser.safetensors").exists()  # no final fuser from a cancelled run
    resumed = train(receiver, sharer, task_dirs.small, config, tmp_path / "split", resume=True)

    assert resumed.resumed_from == 6 and whole.resumed_from is None
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = load_file(str(tmp_path / "whole/checkpoints/step-000012/optimizer.safetensors"))
    opt_b = load_file(str(tmp_path / "split/checkpoints/step-000012/optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a) and opt_a.keys() == opt_b.keys()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.eval == whole.eval
    # the step-4 checkpoint is a fuser in its own right, different from the final one
    early = load_fuser(tmp_path / "whole/checkpoints/step-000004")
    assert not torch.equal(early.projectors[0].key_proj_out.weight, load_fuser(tmp_path / "whole").projectors[0]
                           .key_proj_out.weight)
    state = json.loads((tmp_path / "whole/checkpoints/step-000004/trainer_state.json").read_text())
    assert state["step"] == 4 and state["config"]["lr"] == 5e-3


def test_runs_are_not_overwritten_and_resume_needs_the_same_settings(task_dirs, task_models, tmp_path):
    receiver, sharer = task_models
    config = TrainConfig(**{**CONFIG, "steps": 2, "save_every": 0, "eval_split": 0.0})
    train(receiver, sharer, task_dirs.small, config, tmp_path / "run")
    with pytest.raises(TrainingError, match="already holds a training run; pass --resume"):
        train(receiver, sharer, task_dirs.small, config, tmp_path / "run")
    with pytest.raises(TrainingError, match=r"these differ: lr: 0\.001 \(saved run: 0\.005\)"):
        train(receiver, sharer, task_dirs.small, TrainConfig(**{**config.to_dict(), "lr": 1e-3}), tmp_path / "run",
              resume=True)
    with pytest.raises(TrainingError, match="already complete"):
        train(receiver, sharer, task_dirs.small, config, tmp_path / "run", resume=True)
    # cancelled in the final evaluation: the steps are kept, and a resume only finishes the run
    cancel = threading.Event()
    with_eval = TrainConfig(**{**config.to_dict(), "eval_split": 0.1})

    def cancel_when_done_training(p):
        if p.event == "log" and p.step == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="after step 2 of 2"):
        train(receiver, sharer, task_dirs.small, with_eval, tmp_path / "late", progress=cancel_when_done_training,
              cancel=cancel)
    # a checkpoint without this process's RNG state cannot resume exactly: an error, not another random stream
    shutil.copytree(tmp_path / "late", tmp_path / "no-rng")
    next((tmp_path / "no-rng" / "checkpoints").glob("*/rng-rank0.safetensors")).unlink()
    with pytest.raises(TrainingError, match="rng-rank0.safetensors is missing"):
        train(receiver, sharer, task_dirs.small, with_eval, tmp_path / "no-rng", resume=True)
    finished = train(receiver, sharer, task_dirs.small, with_eval, tmp_path / "late", resume=True)
    assert finished.resumed_from == 2 and finished.eval["fuser"]["samples"] == 6
    assert (tmp_path / "late" / "fuser.safetensors").is_file()
    with pytest.raises(TrainingError, match="holds no checkpoint to resume"):
        train(receiver, sharer, task_dirs.small, config, tmp_path / "empty", resume=True)
    with pytest.raises(TrainingError, match="training split has only 4"):
        train(receiver, sharer, [{"messages": [{"role": "user", "content": "w10"},
                                               {"role": "assistant", "content": "w30"}]}] * 4,
              config, tmp_path / "tiny")


def test_fine_tuning_starts_from_a_published_fuser(tiny_dirs, tmp_path):
    receiver = load_model(ModelSpec(str(tiny_dirs.receiver), "cpu"), "receiver")
    sharer = load_model(ModelSpec(str(tiny_dirs.sharer), "cpu"), "sharer")
    published = load_fuser(tiny_dirs.published)
    data = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("What is the capital of France?", "Paris."), ("What is the capital of Italy?", "Rome."),
                         ("Where does the Seine run?", "Through Paris."), ("Hello, how are you?", "I am fine.")] * 3]
    config = TrainConfig(steps=2, batch_size=4, lr=1e-3, eval_split=0.25, init=str(tiny_dirs.published),
                         dropout=0.0)
    report = train(receiver, sharer, data, config, tmp_path / "tuned")
    tuned = load_fuser(tmp_path / "tuned")
    # the published fuser's shape and layer map are kept (not the config's 1024-wide defaults)
    assert tuned.layer_map == published.layer_map
    assert tuned.projectors[0].config.hidden_dim == published.projectors[0].config.hidden_dim
    assert tuned.info.extra["fine_tuned_from"] == str(tiny_dirs.published)
    # it started from the published weights: open gates and random weights score unlike the receiver alone
    assert report.eval["initial"] != report.eval["receiver"]
    moved = [not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), published.state_dict().values())]
    assert any(moved)
