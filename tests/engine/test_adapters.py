"""A model can be a base plus a PEFT (LoRA) adapter: real peft adapters on tiny models, saved and loaded."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from fusers import tiny
from fusers.errors import AdapterError, AdapterMismatchError
from fusers.pair import ModelSpec, load_model

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


def make_adapter(base: Path, out: Path, targets=("q_proj", "v_proj", "down_proj"), rank: int = 4, seed: int = 0) -> Path:
    """A LoRA adapter as peft's save_pretrained writes it, with random (not zero) B matrices so it changes the
    model's output."""
    import peft
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=8, target_modules=list(targets)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    wrapped.save_pretrained(out)
    return out


def unmerged_logits(base: Path, adapter: Path) -> torch.Tensor:
    """What peft itself computes with the adapter beside the base weights: the reference."""
    import peft
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    tok = tiny.bpe_tokenizer(400)
    base = tiny.save_model(root / "base", "llama", tok, seed=1, layers=2, hidden_size=64, heads=4, kv_heads=2)
    adapter = make_adapter(base, root / "adapter")
    return base, adapter


def test_an_adapter_folder_names_its_base_and_loads_merged(base_and_adapter):
    base, adapter = base_and_adapter
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).resolve() == base.resolve()
    assert not (adapter / "adapter_model.bin").exists() and (adapter / "adapter_model.safetensors").is_file()

    loaded = load_model(ModelSpec(str(adapter), "cpu"), "sharer")
    plain = load_model(ModelSpec(str(base), "cpu"), "sharer")
    assert loaded.adapter == str(adapter) and plain.adapter == ""
    # named by its base and the adapter's folder (tmp/adapter), not "adapter + adapter adapter"
    assert f"sharer base + adapter {adapter.parent.name}/adapter:" in loaded.describe(), loaded.describe()
    # merged: plain linear layers again, no LoRA modules left, and the output is peft's own
    assert not any("lora" in name for name, _ in loaded.model.named_modules())
    assert type(loaded.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    torch.testing.assert_close(logits(loaded.model), unmerged_logits(base, adapter), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits(loaded.model), logits(plain.model), atol=1e-3)
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_an_adapter_given_beside_a_base_overrides_the_base_it_names(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    moved = shutil.copytree(base, tmp_path / "elsewhere")
    config_path = adapter.parent / "renamed-adapter"
    shutil.copytree(adapter, config_path)
    cfg = json.loads((config_path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nowhere/this-base-is-gone"
    (config_path / "adapter_config.json").write_text(json.dumps(cfg))
    loaded = load_model(ModelSpec(str(moved), "cpu", adapter=str(config_path)), "sharer")
    assert loaded.source == str(moved) and loaded.adapter == str(config_path)
    torch.testing.assert_close(logits(loaded.model), unmerged_logits(base, adapter), atol=1e-4, rtol=1e-4)
    # the adapter alone names a base that is gone: the error says which folder is missing
    with pytest.raises(Exception, match="this-base-is-gone"):
        load_model(ModelSpec(str(config_path), "cpu"), "sharer")


def test_a_base_beside_its_adapter_is_found_relative_to_it(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    shipped = tmp_path / "shipped"
    shutil.copytree(base, shipped / "base")
    shutil.copytree(adapter, shipped / "adapter")
    cfg = json.loads((shipped / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "../base"
    (shipped / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    loaded = load_model(ModelSpec(str(shipped / "adapter"), "cpu"), "receiver")
    torch.testing.assert_close(logits(loaded.model), unmerged_logits(base, adapter), atol=1e-4, rtol=1e-4)


def test_an_adapter_for_another_base_is_a_typed_error_naming_both(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    tok = tiny.bpe_tokenizer(400)
    wider = tiny.save_model(tmp_path / "wider", "llama", tok, seed=2, layers=2, hidden_size=96, heads=4, kv_heads=2)
    with pytest.raises(AdapterMismatchError) as err:
        load_model(ModelSpec(str(wider), "cpu", adapter=str(adapter)), "sharer")
    message = str(err.value)
    assert str(adapter) in message and str(wider) in message and "shapes" in message
    # target modules the base does not have (GPT-2 style names on a Llama)
    foreign = shutil.copytree(adapter, tmp_path / "foreign")
    cfg = json.loads((foreign / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn"]
    (foreign / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterMismatchError, match="c_attn") as err:
        load_model(ModelSpec(str(base), "cpu", adapter=str(foreign)), "sharer")
    assert str(foreign) in str(err.value) and str(base) in str(err.value)
    # fewer layers than the adapter was made for: its extra tensors name layers the base lacks
    shallow = tiny.save_model(tmp_path / "shallow", "llama", tok, seed=2, layers=1, hidden_size=64, heads=4, kv_heads=2)
    with pytest.raises(AdapterMismatchError, match="layers the base does not have"):
        load_model(ModelSpec(str(shallow), "cpu", adapter=str(adapter)), "sharer")


def test_adapter_weights_load_from_safetensors_only(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    pickled = shutil.copytree(adapter, tmp_path / "pickled")
    (pickled / "adapter_model.safetensors").unlink()

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    torch.save({"x": Boom()}, pickled / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        load_model(ModelSpec(str(pickled), "cpu"), "sharer")
    (pickled / "adapter_model.bin").unlink()
    with pytest.raises(AdapterError, match="no adapter_model.safetensors"):
        load_model(ModelSpec(str(pickled), "cpu"), "sharer")
    broken = shutil.copytree(adapter, tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="safetensors"):
        load_model(ModelSpec(str(broken), "cpu"), "sharer")
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="JSON"):
        load_model(ModelSpec(str(base), "cpu", adapter=str(broken)), "sharer")
    with pytest.raises(AdapterError, match="does not exist"):
        load_model(ModelSpec(str(base), "cpu", adapter=str(tmp_path / "missing")), "sharer")


@pytest.mark.parametrize("quantize, layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_on_a_quantized_base_the_adapter_stays_beside_the_quantized_weights(base_and_adapter, quantize, layer):
    base, adapter = base_and_adapter
    loaded = load_model(ModelSpec(str(base), "cpu", quantize=quantize, adapter=str(adapter)), "sharer")
    q_proj = loaded.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == layer and hasattr(q_proj, "lora_A")  # peft's LoRA for bitsandbytes
    plain = load_model(ModelSpec(str(base), "cpu", quantize=quantize), "sharer")
    reference = unmerged_logits(base, adapter)
    with_adapter, without = logits(loaded.model), logits(plain.model)
    # quantization moves the output a little; the adapter moves it much more, towards peft's float result
    assert (with_adapter - reference).abs().mean() < 0.5 * (without - reference).abs().mean()


def test_the_cli_puts_an_adapter_on_the_sharer_and_training_records_it(tiny_dirs, tmp_path, capsys):
    from fusers.cli import main

    adapter = make_adapter(tiny_dirs.sharer, tmp_path / "sharer-adapter", targets=("q_proj", "k_proj", "v_proj"))
    args = ["compare", "--receiver", str(tiny_dirs.receiver), "--sharer", str(tiny_dirs.sharer), "--prompt", "Hello",
            "--modes", "sharer", "--max-new-tokens", "6", "--ignore-eos", "--json", "--device", "cpu"]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args + ["--sharer-adapter", str(adapter)]) == 0
    adapted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert adapted["token_ids"] != alone["token_ids"]

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Hello {i}"},
                                                     {"role": "assistant", "content": "Hi."}]}) + "\n" for i in range(4)))
    assert main(["train", "--receiver", str(tiny_dirs.receiver), "--sharer", str(tiny_dirs.sharer), "--sharer-adapter",
                 str(adapter), "--data", str(data), "--out", str(tmp_path / "fuser"), "--steps", "1", "--batch-size",
                 "2", "--hidden-dim", "16", "--intermediate-dim", "16", "--eval-split", "0", "--device", "cpu",
                 "--json"]) == 0
    capsys.readouterr()
    recorded = json.loads((tmp_path / "fuser" / "fuser.json").read_text())
    # the fuser names the adapter folder, which names its base: --fuser alone loads the whole pair again
    assert Path(recorded["sharer"]).resolve() == adapter.resolve()
    assert main(["compare", "--fuser", str(tmp_path / "fuser"), "--prompt", "Hello", "--modes", "sharer",
                 "--max-new-tokens", "6", "--ignore-eos", "--json", "--device", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["token_ids"] == adapted["token_ids"]


def test_adapter_rows_runs_each_row_through_its_own_adapter(base_and_adapter, tmp_path):
    """Several adapters beside one copy of the base: each row of a batch gives what that adapter alone gives
    (merged, as inference loads it); an unknown name is a typed error, not a silently plain row."""
    import peft
    from transformers import AutoModelForCausalLM

    from fusers.adapters import adapter_names, adapter_rows

    base, adapter = base_and_adapter
    other = make_adapter(base, tmp_path / "other", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter),
                                                 adapter_name="first")
        wrapped.load_adapter(str(other), adapter_name="second")
    model = wrapped.get_base_model().eval()
    assert adapter_names(model) == ["first", "second"]
    with torch.no_grad(), adapter_rows(model, ["second", None, "first"]):
        mixed = model(input_ids=IDS.repeat(3, 1)).logits
    alone = {name: logits(load_model(ModelSpec(str(base), "cpu", adapter=str(folder)), "sharer").model)
             for name, folder in (("first", adapter), ("second", other))}
    torch.testing.assert_close(mixed[0:1], alone["second"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[1:2], alone["first"], atol=1e-4, rtol=1e-4)  # None: the active one
    torch.testing.assert_close(mixed[2:3], alone["first"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(alone["first"], alone["second"], atol=1e-3)
    with pytest.raises(AdapterError, match="'third'"), adapter_rows(model, ["third", "first", "first"]):
        pass
