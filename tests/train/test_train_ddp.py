"""Two processes on gloo (torchrun + accelerate DDP) follow one process with twice the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fusers.checkpoint import load_fuser
from fusers.train import TrainConfig, train

from .test_train_cli import options

# dropout off: its masks depend on each process's batch shape; the gate noise is shared by the global batch
SETTINGS = dict(steps=6, grad_accum=2, lr=5e-3, hidden_dim=16, intermediate_dim=16, dropout=0.0, gate_init=1.0,
                warmup_steps=1, eval_split=0.0, log_every=1)


def test_two_processes_match_one_with_twice_the_batch(task_dirs, task_models, tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fusers.cli",
            "train", "--receiver", str(task_dirs.receiver), "--sharer", str(task_dirs.sharer), "--data",
            str(task_dirs.small), "--out", str(tmp_path / "ddp"), "--device", "cpu", "--batch-size", "4", "--json",
            *options(SETTINGS)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ddp_logs, ddp_report = [line for line in lines if line["event"] == "log"], lines[-1]
    # the baseline in this process, through the Python API
    one = train(*task_models, task_dirs.small, TrainConfig(batch_size=8, **SETTINGS), tmp_path / "one")
    one_logs = [h for h in one.history if h["event"] == "log"]
    assert ddp_report["world_size"] == 2 and one.world_size == 1
    assert [x["step"] for x in ddp_logs] == [x["step"] for x in one_logs] == list(range(1, 7))
    # only the main process reports: one line per step, not two
    ddp_losses, one_losses = [x["loss"] for x in ddp_logs], [x["loss"] for x in one_logs]
    assert ddp_losses == pytest.approx(one_losses, rel=1e-4)
    assert ddp_losses[-1] < ddp_losses[0]  # it trained, so the comparison covers updated weights
    a, b = load_fuser(tmp_path / "ddp").state_dict(), load_fuser(tmp_path / "one").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
