"""The GPU recipe's pieces on the CPU: frozen models in bfloat16 (autocast) or quantized by bitsandbytes."""

from __future__ import annotations

import math

import pytest
import torch

from fusers.checkpoint import load_fuser
from fusers.pair import ModelSpec, load_model
from fusers.errors import TrainingError
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


def packable_receiver(root) -> str:
    """A receiver whose 4-bit layers bitsandbytes can repack for its AVX512-BF16 CPU kernel: every output size a
    multiple of 32 and every input size a multiple of the quantization block (64)."""
    from fusers import tiny

    from .conftest import VOCAB

    tok = tiny.word_tokenizer(VOCAB)
    config = tiny.tiny_config("qwen3", VOCAB, layers=2, hidden_size=64, heads=2, kv_heads=2, head_dim=32,
                              intermediate_size=128, tokenizer=tok)
    tiny.build_model(config, seed=3).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def test_4bit_training_reaches_the_fuser_through_layers_the_cpu_kernel_could_repack(task_dirs, tmp_path):
    import bitsandbytes as bnb

    receiver = load_model(ModelSpec(packable_receiver(tmp_path / "receiver"), "cpu", quantize="4bit"), "receiver")
    sharer = load_model(ModelSpec(str(task_dirs.sharer), "cpu", quantize="4bit"), "sharer")
    config = TrainConfig(steps=3, batch_size=8, lr=1e-2, hidden_dim=16, intermediate_dim=16, dropout=0.0,
                         gate_init=1.0, warmup_steps=0, eval_split=0.25, eval_every=1, log_every=1)
    report = train(receiver, sharer, task_dirs.small, config, tmp_path / "run")
    # on an AVX512-BF16 CPU a repacked layer has no autograd: the gradient would silently be zero
    assert all(h["grad_norm"] > 0 for h in report.history if h.get("event") == "log"), report.history
    layers = [m for m in receiver.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)


def test_training_refuses_a_receiver_whose_4bit_layers_were_repacked(task_dirs, tmp_path):
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    receiver = load_model(ModelSpec(packable_receiver(tmp_path / "receiver"), "cpu", quantize="4bit"), "receiver")
    sharer = load_model(ModelSpec(str(task_dirs.sharer), "cpu", quantize="4bit"), "sharer")
    # what the first no-grad call of a 4-bit layer does on an AVX512-BF16 CPU
    layer = receiver.model.model.layers[0].mlp.up_proj
    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data,
                                                                                 layer.weight.quant_state)
    config = TrainConfig(steps=1, batch_size=8, warmup_steps=0, eval_split=0.25)
    with pytest.raises(TrainingError, match="repacked .* Load the model again"):
        train(receiver, sharer, task_dirs.small, config, tmp_path / "run")


def test_4bit_layers_too_small_to_repack_keep_the_generic_kernel(task_dirs):
    import bitsandbytes as bnb

    receiver = load_model(ModelSpec(str(task_dirs.receiver), "cpu", quantize="4bit"), "receiver")
    small = [m for m in receiver.model.modules() if isinstance(m, bnb.nn.Linear4bit)
             and (m.out_features % 32 or m.in_features % m.weight.quant_state.blocksize)]
    assert small and not any(m.support_avx512bf16_for_cpu for m in small)
