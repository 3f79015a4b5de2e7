"""The product on two real pretrained models: SmolLM2-135M-Instruct (receiver, chat template, Llama) and
Gemma-3-270M (sharer: a base model without a chat template, sliding window 512, another tokenizer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusers.engine import Engine, Mode
from fusers.generation import GenerationSettings
from fusers.pair import Pair

JAPAN = [{"role": "user", "content": "What is the capital of Japan?"}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
SETTINGS = GenerationSettings(max_new_tokens=24, hint_max_new_tokens=32)
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
            ("Greece", "Athens"), ("Chile", "Santiago")]


@pytest.fixture(scope="session")
def real_engine(real_models_loaded):
    receiver, sharer = real_models_loaded
    return Engine(Pair(receiver, sharer))


def test_the_models_are_what_the_issue_says(real_models_loaded):
    receiver, sharer = real_models_loaded
    assert type(receiver.model).__name__ == "LlamaForCausalLM" and receiver.shape.layers == 30
    assert type(sharer.model).__name__ == "Gemma3ForCausalLM" and sharer.shape.layers == 18
    assert sharer.model.config.sliding_window == 512 and "sliding_attention" in sharer.model.config.layer_types
    assert not receiver.fallback_template and sharer.fallback_template  # Gemma-3-270M is a base model
    assert "no chat template" in sharer.describe()


def test_receiver_sharer_and_text_relay_answer_readably(real_engine):
    receiver = real_engine.answer(Mode.RECEIVER, JAPAN, SETTINGS)
    assert "Tokyo" in receiver.text, receiver.text
    sharer = real_engine.answer(Mode.SHARER, FRANCE, SETTINGS)
    assert "Paris" in sharer.text, sharer.text
    # the base model ends where it would begin a new turn, and never saw a ChatML marker
    assert sharer.finish_reason == "eos" and "Question" not in sharer.text and "<|im_" not in sharer.text
    relay = real_engine.answer(Mode.RELAY, JAPAN, SETTINGS)
    assert "Tokyo" in relay.text, (relay.hint, relay.text)
    assert relay.hint.strip() and "<|im_" not in relay.hint and "Question:" not in relay.hint


def test_the_tokenizers_align_both_ways_without_losing_a_position(real_models_loaded):
    from fusers.alignment import TokenAligner

    receiver, sharer = real_models_loaded
    text = ("Zürich, São Paulo and Kraków: 1848, 3.14159, 2,147,483,647 and 10^12. Ünïcödé — “quotes”, "
            "emoji 🙂🚀, 日本語のテキスト, Ελληνικά, русский текст, العربية. ") * 4
    messages = [{"role": "user", "content": text}]
    for a, b in ((receiver, sharer), (sharer, receiver)):
        aligned = TokenAligner(a.tokenizer, b.tokenizer, "longest").align_chat(messages)
        assert len(aligned.receiver_ids) > 200
        assert len(aligned.sharer_ids) == len(aligned.receiver_ids)  # one entry per position
        vocab = len(b.tokenizer)
        assert all(0 <= i < vocab for i in aligned.sharer_ids)
        unk = b.tokenizer.unk_token_id
        # every digit and letter keeps a real token of the other model (no unknowns)
        assert sum(i == unk for i in aligned.sharer_ids) == 0 or unk is None


def test_cache_fusion_on_a_prompt_longer_than_gemmas_window(real_models_loaded):
    from transformers import AutoConfig  # noqa: F401  (configs come from the loaded models)

    from fusers import tiny

    receiver, sharer = real_models_loaded
    prompt = " ".join(f"Fact {i}: the river number {i} flows into lake {i * 7 % 13}." for i in range(60))
    messages = [{"role": "user", "content": prompt + " Which lake does river 3 flow into?"}]
    settings = GenerationSettings(max_new_tokens=8, ignore_eos=True)
    alone = Engine(Pair(receiver, sharer)).answer(Mode.RECEIVER, messages, settings)
    assert alone.timing.tokens_in > 700  # past the 512-position window of Gemma's sliding layers
    for gates_open in (False, True):
        fuser = tiny.random_fuser(receiver.model.config, sharer.model.config, hidden_dim=32, intermediate_dim=32,
                                  gates_open=gates_open, alignment="longest")
        fused = Engine(Pair(receiver, sharer, fuser)).answer(Mode.FUSION, messages, settings)
        assert fused.timing.tokens_in == alone.timing.tokens_in and len(fused.token_ids) == 8
        if not gates_open:  # closed gates: exactly the receiver alone
            assert fused.token_ids == alone.token_ids
        else:
            assert all(f.key_gate_open for f in fused.fusion) and len(fused.fusion) == 30


@pytest.fixture(scope="session")
def trained_fuser(real_models_loaded, tmp_path_factory):
    """A fuser trained a few steps on the real pair (what `c2c train` runs, on the models already loaded)."""
    from fusers.train.config import TrainConfig
    from fusers.train.trainer import train

    receiver, sharer = real_models_loaded
    root = tmp_path_factory.mktemp("real-train")
    data = root / "capitals.jsonl"
    data.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"What is the capital of {country}?"},
                                 {"role": "assistant", "content": f"The capital of {country} is {city}."}]}) + "\n"
        for country, city in CAPITALS))
    config = TrainConfig(steps=8, batch_size=4, lr=1e-3, warmup_steps=1, hidden_dim=128, intermediate_dim=128,
                         eval_split=0.0, log_every=1, gate_init=2.0, dropout=0.0)
    report = train(receiver, sharer, data, config, root / "fuser", eval_data=data)
    return root / "fuser", report


def test_c2c_train_lowers_the_loss_on_the_real_pair(trained_fuser):
    _, report = trained_fuser
    assert report.alignment == "longest"  # the tokenizers differ: chosen automatically
    assert report.steps == 8
    initial, final = report.eval["initial"]["loss"], report.eval["fuser"]["loss"]
    assert final < initial, report.eval


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fusers.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_the_trained_fuser_loads_alone_in_the_cli(trained_fuser):
    folder, _ = trained_fuser
    proc = _cli("compare", "--fuser", str(folder), "--device", "cpu", "--prompt", "What is the capital of Japan?",
                "--modes", "fusion", "--max-new-tokens", "16", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["mode"] == "fusion" and answer["text"].strip(), answer
    assert all(f["key_gate_open"] for f in answer["fusion"])


def test_the_app_loads_the_trained_fuser_alone_and_answers_headless(trained_fuser, tmp_path):
    from PySide6.QtGui import QImage

    from tests.app.test_headless import playground

    folder, _ = trained_fuser
    shot = tmp_path / "real.png"
    proc = playground("--pair", str(folder), "--device", "cpu", "--prompt", "What is the capital of Japan?",
                      "--modes", "receiver,sharer,relay,fusion", "--max-new-tokens", "24",
                      "--hint-max-new-tokens", "32", "--screenshot", str(shot), "--exit", tmp_path=tmp_path,
                      timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    image = QImage(str(shot))
    assert not image.isNull() and image.width() > 0


def test_the_real_pair_is_a_preset_when_installed(real_paths):
    from fusers.presets import REAL_LABEL, find_preset

    preset = find_preset("real")
    assert preset is not None and preset.label == REAL_LABEL == "SmolLM2-135M \u2190 Gemma-3-270M (real models, offline)"
    assert (Path(preset.receiver), Path(preset.sharer)) == real_paths and preset.fuser == ""


def test_a_gguf_file_loads_8bit_on_top_and_still_answers(real_paths):
    from fusers.pair import ModelSpec, load_model

    from fusers.devices import file_backed

    receiver = load_model(ModelSpec(str(real_paths[0]), "cpu", "auto", "8bit"), "receiver")
    assert receiver.quantize == "8bit" and "8bit" in receiver.describe()
    assert type(receiver.model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
    assert file_backed(receiver.model.parameters()) == []  # the converted folder's file is let go (load_memory.py)
    answer = Engine(Pair(receiver, receiver)).answer(Mode.RECEIVER, JAPAN, SETTINGS)
    assert "Tokyo" in answer.text, answer.text


def test_a_gguf_file_is_converted_once_and_loads_as_its_direct_read(real_models_loaded, real_paths, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusers import gguf
    from fusers.chat import encode
    from fusers.pair import ModelSpec, load_model

    smollm2 = real_paths[0]
    assert gguf.is_converted(smollm2, "float32")  # by the fixture's load
    conversions = []
    convert = gguf._run_converter
    monkeypatch.setattr(gguf, "_run_converter", lambda *args: conversions.append(args) or convert(*args))
    again = load_model(ModelSpec(str(smollm2), "cpu", "float32"), "receiver")
    assert conversions == []  # the second load reads the converted folder

    direct = AutoModelForCausalLM.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name, dtype=torch.float32)
    direct_tokenizer = AutoTokenizer.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name)
    ours = again.model.state_dict()
    theirs = direct.state_dict()
    assert sorted(ours) == sorted(theirs)
    different = [name for name, tensor in theirs.items() if not torch.equal(tensor, ours[name])]
    assert different == []
    assert again.tokenizer.chat_template == direct_tokenizer.chat_template
    for messages in (JAPAN, [{"role": "user", "content": "Zürich, 東京 and naïve café\n\tok?"}]):
        assert encode(again.tokenizer, messages) == encode(direct_tokenizer, messages)
