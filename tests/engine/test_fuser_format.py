"""Published layout, our format, conversion, and the spec's maths."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from fusers import tiny
from fusers.checkpoint import MANIFEST_NAME, WEIGHTS_NAME, convert, detect_format, load_fuser, save_fuser
from fusers.errors import FuserFormatError, PairMismatchError, UnsafeCheckpointError
from fusers.fuser import ModelShape
from fusers.generation import prefill
from fusers.layer_map import build_layer_map, k_nearest, last_aligned

from . import spec_reference as ref


def test_layer_maps_follow_the_spec():
    # receiver t takes sharer clamp(t + S - T, 0, S - 1)
    assert last_aligned(28, 24) == [0, 0, 0, 0, 0] + list(range(1, 24))
    assert last_aligned(3, 5) == [2, 3, 4]
    assert last_aligned(4, 4) == [0, 1, 2, 3]
    assert k_nearest(3, 5) == [0, 2, 4]
    assert k_nearest(5, 3) == [0, 0, 1, 1, 2]  # ties go to the lower sharer layer
    assert [l.fuser_index for l in build_layer_map("k_nearest", 4, 2)] == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def mixed_pair(tmp_path_factory):
    """A Qwen3 receiver and a Qwen2 sharer that differ in layers, KV heads and head dims, with real caches."""
    root = tmp_path_factory.mktemp("mixed")
    tok = tiny.bpe_tokenizer(400)
    rcfg = tiny.tiny_config("qwen3", len(tok), layers=3, hidden_size=64, heads=4, kv_heads=2, head_dim=16, tokenizer=tok)
    scfg = tiny.tiny_config("qwen2", len(tok), layers=5, hidden_size=48, heads=4, kv_heads=1, tokenizer=tok)
    receiver, sharer = tiny.build_model(rcfg, 1), tiny.build_model(scfg, 2)
    ids = torch.tensor([tok("What is the capital of the fictional land of Orlan?")["input_ids"]])
    return root, rcfg, scfg, prefill(receiver, ids), prefill(sharer, ids)


def _args(rcfg, scfg, **over):
    r, s = ModelShape.of(rcfg), ModelShape.of(scfg)
    args = dict(source_dim=s.head_dim, target_dim=r.head_dim, source_num_heads=s.kv_heads,
                target_num_heads=r.kv_heads, hidden_dim=24, intermediate_dim=40, num_layers=4, dropout=0.1,
                initial_temperature=1.0, final_temperature=0.05, anneal_steps=100, dtype="float32")
    args.update(over)
    return args


def _published(root, rcfg, scfg, gates=(1.0, -1.0), name="pub"):
    args = _args(rcfg, scfg)
    g = torch.Generator().manual_seed(7)
    T, S = rcfg.num_hidden_layers, scfg.num_hidden_layers
    states = [ref.random_state(args, g, gate_key=gates[0] if t % 2 == 0 else 1.0, gate_value=gates[1] if t % 2 else 1.0)
              for t in range(T)]
    layer_map = list(enumerate(last_aligned(T, S)))
    path = ref.write_published(root / name, "test/receiver-qwen3", "test/sharer-qwen2", layer_map, args, states)
    return path, args, states, layer_map


def _fused(fuser, rcache, scache):
    import copy

    r = copy.deepcopy(rcache)
    fuser.fuse_cache(r, scache)
    return [(layer.keys.clone(), layer.values.clone()) for layer in r.layers]


def test_published_fuser_forward_matches_spec_formulas(mixed_pair):
    root, rcfg, scfg, rcache, scache = mixed_pair
    path, args, states, layer_map = _published(root, rcfg, scfg)
    fuser = load_fuser(path)
    assert detect_format(path) == "published"
    assert fuser.info.receiver == "test/receiver-qwen3" and fuser.info.sharer == "test/sharer-qwen2"
    fused = _fused(fuser, rcache, scache)
    some_open = some_closed = False
    for (t, s), state, (k, v) in zip(layer_map, states, fused):
        rk, rv = rcache.layers[t].keys, rcache.layers[t].values
        sk, sv = scache.layers[s].keys, scache.layers[s].values
        torch.testing.assert_close(k, ref.fuse(state, args, "key", sk, rk), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, ref.fuse(state, args, "value", sv, rv), rtol=1e-5, atol=1e-5)
        some_open |= not torch.equal(k, rk)
        some_closed |= torch.equal(v, rv)
    assert some_open and some_closed  # both gate states were exercised


def test_published_to_ours_and_back_gives_identical_fused_caches(mixed_pair, tmp_path):
    root, rcfg, scfg, rcache, scache = mixed_pair
    path, *_ = _published(root, rcfg, scfg, name="pub-roundtrip")
    convert(path, tmp_path / "ours")
    assert detect_format(tmp_path / "ours") == "c2c-playground"
    manifest = json.loads((tmp_path / "ours" / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 1 and manifest["receiver"] == "test/receiver-qwen3"
    assert list(manifest) == sorted(manifest)
    convert(tmp_path / "ours", tmp_path / "back")
    assert detect_format(tmp_path / "back") == "published"
    a, b, c = (_fused(load_fuser(p), rcache, scache) for p in (path, tmp_path / "ours", tmp_path / "back"))
    for x, y, z in zip(a, b, c):
        for i in range(2):
            assert torch.equal(x[i], y[i]) and torch.equal(x[i], z[i])
    assert load_fuser(tmp_path / "back").layer_map == load_fuser(path).layer_map


def test_bfloat16_checkpoint_keeps_its_dtype_until_placed(mixed_pair, tmp_path):
    root, rcfg, scfg, *_ = mixed_pair
    args = _args(rcfg, scfg, dtype="bfloat16")
    g = torch.Generator().manual_seed(1)
    states = [{k: v.to(torch.bfloat16) for k, v in ref.random_state(args, g, 1, 1).items()} for _ in range(3)]
    path = ref.write_published(tmp_path / "bf16", "r", "s", list(enumerate(last_aligned(3, 5))), args, states)
    assert load_fuser(path).dtype == torch.bfloat16
    assert load_fuser(path, dtype=torch.float32).dtype == torch.float32


def test_missing_projector_file_is_named(mixed_pair, tmp_path):
    root, rcfg, scfg, *_ = mixed_pair
    path, *_ = _published(tmp_path, rcfg, scfg)
    (path / "final" / "projector_1.pt").unlink()
    with pytest.raises(FuserFormatError, match=r"missing projector_1\.pt.*Download the pair again"):
        load_fuser(path)


def test_missing_and_unexpected_keys_are_errors(mixed_pair, tmp_path):
    root, rcfg, scfg, *_ = mixed_pair
    path, args, states, _ = _published(tmp_path, rcfg, scfg)
    bad = dict(states[0])
    bad.pop("value_proj_out.bias")
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, path / "final" / "projector_0.pt")
    with pytest.raises(FuserFormatError, match=r"missing keys value_proj_out\.bias.*unexpected keys extra\.weight"):
        load_fuser(path)


def test_wrong_shape_is_an_error(mixed_pair, tmp_path):
    root, rcfg, scfg, *_ = mixed_pair
    path, args, states, _ = _published(tmp_path, rcfg, scfg)
    bad = dict(states[2])
    bad["key_in.weight"] = torch.zeros(3, 3)
    torch.save(bad, path / "final" / "projector_2.pt")
    with pytest.raises(FuserFormatError, match=r"key_in\.weight has shape \(3, 3\)"):
        load_fuser(path)


def test_truncated_pt_is_a_clear_error(mixed_pair, tmp_path):
    root, rcfg, scfg, *_ = mixed_pair
    path, *_ = _published(tmp_path, rcfg, scfg)
    pt = path / "final" / "projector_0.pt"
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with pytest.raises(FuserFormatError, match=r"projector_0\.pt is truncated or corrupt"):
        load_fuser(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_never_runs(mixed_pair, tmp_path):
    root, rcfg, scfg, *_ = mixed_pair
    path, args, states, _ = _published(tmp_path, rcfg, scfg)
    marker = tmp_path / "pwned"
    evil = dict(states[0])
    evil["key_in.bias"] = _RunsCode(marker)
    torch.save(evil, path / "final" / "projector_0.pt")
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        load_fuser(path)
    assert not marker.exists()


def test_our_format_rejects_foreign_tensors_and_newer_versions(tiny_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    fuser = load_fuser(tiny_dirs.ours)
    save_fuser(fuser, tmp_path / "f")
    tensors = load_file(str(tmp_path / "f" / WEIGHTS_NAME))
    tensors["projectors.0.sneaky"] = torch.zeros(2)
    save_file(tensors, str(tmp_path / "f" / WEIGHTS_NAME))
    with pytest.raises(FuserFormatError, match="unexpected keys sneaky"):
        load_fuser(tmp_path / "f")
    save_fuser(fuser, tmp_path / "g")
    manifest = json.loads((tmp_path / "g" / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (tmp_path / "g" / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(FuserFormatError, match="format version 99"):
        load_fuser(tmp_path / "g")


def test_not_a_fuser_folder(tmp_path):
    with pytest.raises(FuserFormatError, match="does not exist"):
        load_fuser(tmp_path / "nope")
    with pytest.raises(FuserFormatError, match="holds no fuser"):
        load_fuser(tmp_path)


def test_fuser_for_another_pair_names_both_pairs(mixed_pair):
    root, rcfg, scfg, *_ = mixed_pair
    fuser = tiny.random_fuser(rcfg, scfg, receiver="org/receiver-A", sharer="org/sharer-B")
    other = tiny.tiny_config("qwen3", 400, layers=2, hidden_size=64, heads=4, kv_heads=4, head_dim=8)
    with pytest.raises(PairMismatchError) as err:
        fuser.check_pair(ModelShape.of(other), ModelShape.of(scfg), "my/receiver", "my/sharer")
    msg = str(err.value)
    assert "org/receiver-A" in msg and "org/sharer-B" in msg and "my/receiver" in msg and "my/sharer" in msg
    assert "3 receiver layers, the receiver has 2" in msg
    fuser.check_pair(ModelShape.of(rcfg), ModelShape.of(scfg), "r", "s")  # the right pair passes


def test_a_model_folder_given_as_fuser_says_so(tiny_dirs):
    with pytest.raises(FuserFormatError, match="holds a model, not a fuser; pass it as --receiver or --sharer"):
        load_fuser(tiny_dirs.receiver)
