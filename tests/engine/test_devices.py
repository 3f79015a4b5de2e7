"""Where models are placed, which devices a run times and measures, and overlapped prefills (CPU side)."""

from __future__ import annotations

import gc

import pytest
import torch

from fusers import tiny
from fusers.pair import ModelSpec, load_model, placement


def _rss(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))


@pytest.fixture(scope="module")
def float32_model(tmp_path_factory):
    """A 90 MiB float32 model on disk (safetensors), to be loaded in bfloat16: loading must convert every weight."""
    tok = tiny.bpe_tokenizer(400)
    path = tiny.save_model(tmp_path_factory.mktemp("f32") / "model", "qwen3", tok, seed=1, layers=6, hidden_size=512,
                           heads=8, kv_heads=4, head_dim=64, intermediate_size=2048)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):  # import the model's modules now, so their memory is not the load's
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return path


def test_placement_names_the_device_for_every_weight():
    assert placement(torch.device("cuda", 1)) == {"": "cuda:1"}
    assert placement(torch.device("cpu")) == {"": "cpu"}


def test_weights_load_straight_onto_their_device_with_no_host_copy(float32_model):
    """The meta device stands in for a GPU here: memory there is not the host's. Loaded weight by weight onto it,
    the host never holds the model; loaded on the host and then moved (``.to(device)``), it held a whole copy."""
    gc.collect()
    before = _rss("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
    placed = load_model(ModelSpec(str(float32_model), "meta", "bfloat16"), "receiver")
    peak = _rss("VmHWM") - before
    assert {p.device.type for p in placed.model.parameters()} == {"meta"}
    assert placed.device == torch.device("meta") and placed.dtype == torch.bfloat16
    assert placed.memory_bytes > 40 * 2**20
    assert peak < 0.25 * placed.memory_bytes, f"the host peaked {peak / 2**20:.0f} MiB above its start"


def test_a_model_loaded_on_the_cpu_has_every_weight_there_as_saved(float32_model):
    from safetensors.torch import load_file

    loaded = load_model(ModelSpec(str(float32_model), "cpu", "float32"), "receiver")
    saved = load_file(str(float32_model / "model.safetensors"))
    state = loaded.model.state_dict()
    assert {t.device.type for t in state.values()} == {"cpu"}
    assert all(torch.equal(state[name], tensor) for name, tensor in saved.items())
