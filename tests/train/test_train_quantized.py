"""The GPU recipe's pieces on the CPU: frozen models in bfloat16 (autocast) or quantized by bitsandbytes."""

from __future__ import annotations

import math

import pytest
import torch

from fusers.checkpoint import load_fuser
from fusers.pair import ModelSpec, load_model
from fusers.train import TrainConfig, train


@pytest.mark.parametrize("quantize, layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_training_backpropagates_through_quantized_frozen_models(task_dirs, tmp_path, quantize, layer):
    receiver = load_model(ModelSpec(str(task_dirs.receiver), "cpu", quantize=quantize), "receiver")
    sharer = load_model(ModelSpec(str(task_dirs.sharer), "cpu", quantize=quantize), "sharer")
    assert type(receiver.model.model.layers[0].self_attn.q_proj).__name__ == layer
    config = TrainConfig(steps=4, batch_size=8, lr=1e-2, hidden_dim=16, intermediate_dim=16, dropout=0.0,
                         gate_init=1.0, warmup_steps=0, eval_split=0.25, log_every=1)
    report = train(receiver, sharer, task_dirs.small, config, tmp_path / quantize)
    losses = [h["loss"] for h in report.history]
    assert all(math.isfinite(x) for x in losses)
    assert all(h["grad_norm"] > 0 for h in report.history)  # the gradient reached the fuser through the receiver
    fuser = load_fuser(tmp_path / quantize)
    # zero-initialised outputs have moved: every step updated them
    assert all(p.key_proj_out.weight.abs().sum() > 0 and p.value_proj_out.weight.abs().sum() > 0
               for p in fuser.projectors)
    assert report.eval["fuser"]["loss"] != report.eval["receiver"]["loss"]
    assert not any(p.requires_grad for p in receiver.model.parameters())  # still frozen
    assert torch.isfinite(torch.tensor(report.eval["fuser"]["loss"]))


def test_bfloat16_frozen_models_train_a_float32_fuser(task_dirs, tmp_path):
    receiver = load_model(ModelSpec(str(task_dirs.receiver), "cpu", dtype="bfloat16"), "receiver")
    sharer = load_model(ModelSpec(str(task_dirs.sharer), "cpu", dtype="bfloat16"), "sharer")
    config = TrainConfig(steps=3, batch_size=8, lr=1e-2, hidden_dim=16, intermediate_dim=16, dropout=0.0,
                         gate_init=1.0, warmup_steps=0, eval_split=0.25, log_every=1)
    report = train(receiver, sharer, task_dirs.small, config, tmp_path / "bf16")
    assert all(math.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in report.history)
    fuser = load_fuser(tmp_path / "bf16")
    assert fuser.dtype == torch.float32  # master weights stay float32; the matmuls ran in bfloat16
    assert report.eval["fuser"]["loss"] != report.eval["receiver"]["loss"]
