"""The batched fuser pass: equal to one path after another, in inference and training, and its packed weights."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from fusers import fuser as fuser_module
from fusers import tiny
from fusers.checkpoint import load_fuser, save_fuser, save_published
from fusers.fuser import Fuser, cache_kv
from fusers.generation import prefill
from fusers.projector import C2CProjector

from . import spec_reference as ref


@pytest.fixture(scope="module")
def caches():
    """Configs and real caches of a Qwen3 receiver (4 layers) and a Qwen2 sharer (3 layers)."""
    tok = tiny.bpe_tokenizer(400)
    rcfg = tiny.tiny_config("qwen3", len(tok), layers=4, hidden_size=64, heads=4, kv_heads=2, head_dim=16, tokenizer=tok)
    scfg = tiny.tiny_config("qwen2", len(tok), layers=3, hidden_size=48, heads=4, kv_heads=1, tokenizer=tok)
    ids = torch.tensor([tok("Which river flows through the capital of the fictional land of Orlan?")["input_ids"]])
    return rcfg, scfg, prefill(tiny.build_model(rcfg, 1), ids), prefill(tiny.build_model(scfg, 2), ids)


def _fuser(rcfg, scfg, **kwargs) -> Fuser:
    return tiny.random_fuser(rcfg, scfg, hidden_dim=24, intermediate_dim=40, num_layers=4, **kwargs)


def _two_shapes(rcfg, scfg) -> Fuser:
    """Layers 0 and 2 with one projector shape, 1 and 3 with another: two batched groups."""
    fuser = _fuser(rcfg, scfg)
    wide = replace(fuser.projectors[0].config, hidden_dim=32)
    torch.manual_seed(9)
    for i in (1, 3):
        proj = C2CProjector(wide)
        with torch.no_grad():
            proj.key_gate_logit.fill_(1.0)
            proj.value_gate_logit.fill_(1.0)
        fuser.projectors[i] = proj
    return fuser.eval()


def _fused(fuser, rcache, scache, per_pass=None):
    fuser.paths_per_pass = per_pass
    kv, weights = fuser.fuse(cache_kv(rcache), cache_kv(scache))
    return kv, torch.stack(weights)


def _spec(fuser, rcache, scache):
    """The spec's maths, one path after another (tests/engine/spec_reference.py, no fusers.projector)."""
    out = []
    for link in fuser.layer_map:
        proj = fuser.projectors[link.fuser_index]
        state = {k: v.detach() for k, v in proj.state_dict().items()}
        args = proj.config.to_dict()
        r, s = rcache.layers[link.receiver_layer], scache.layers[link.sharer_layer]
        out.append((ref.fuse(state, args, "key", s.keys, r.keys), ref.fuse(state, args, "value", s.values, r.values)))
    return out


@torch.no_grad()
def test_one_batched_pass_equals_one_path_after_another_and_the_spec(caches):
    rcfg, scfg, rcache, scache = caches
    for fuser in (_fuser(rcfg, scfg), _two_shapes(rcfg, scfg)):
        batched, w_batched = _fused(fuser, rcache, scache)
        alone, w_alone = _fused(fuser, rcache, scache, per_pass=1)
        for (bk, bv), (ak, av), (sk, sv) in zip(batched, alone, _spec(fuser, rcache, scache)):
            torch.testing.assert_close(bk, ak, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bv, av, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bk, sk, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(bv, sv, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w_batched, w_alone)
        assert (w_batched > 0).all()


@torch.no_grad()
def test_a_long_prompt_runs_in_several_passes_with_the_same_result(caches, monkeypatch):
    rcfg, scfg, rcache, scache = caches
    fuser = _fuser(rcfg, scfg)
    whole, _ = _fused(fuser, rcache, scache)
    positions = rcache.layers[0].keys.shape[2]
    widest = fuser_module._widest(fuser.projectors[0].config)
    monkeypatch.setattr(fuser_module, "PASS_ELEMENTS", 3 * positions * widest)  # 3 paths a pass: 8 in 3 passes
    calls = []
    original = fuser_module.stacked_residual
    monkeypatch.setattr(fuser_module, "stacked_residual", lambda w, x, *a: calls.append(x.shape[0]) or original(w, x, *a))
    split, _ = _fused(fuser, rcache, scache)
    assert calls == [3, 3, 2]
    # Not bitwise: a pass of 3 paths is a GEMM of another shape than one of 8, and CPUs (AVX2, AVX-512, their
    # BF16 units) block and accumulate each shape their own way. float32 rounding keeps such differences near
    # 1e-7 of the values (|values| ~ 1 here); a path fused with another path's weights or positions is off by
    # ~1, so these bounds (those of the batched-against-one-path test above) still catch it.
    for (a, b), (c, d) in zip(whole, split):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(d, b, rtol=1e-5, atol=1e-6)


def test_training_gradients_reach_every_projector_as_one_path_at_a_time_gives_them(caches):
    rcfg, scfg, rcache, scache = caches
    grads = []
    for per_pass in (None, 1):
        fuser = _two_shapes(rcfg, scfg).train()
        for proj in fuser.projectors:
            proj.config.dropout = 0.0  # no dropout draws, so both runs see the same noise-free paths
        torch.manual_seed(0)  # the Gumbel gates' draws
        kv, _ = _fused(fuser, rcache, scache, per_pass)
        sum(k.square().sum() + v.square().sum() for k, v in kv).backward()
        grads.append({name: p.grad.clone() for name, p in fuser.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == sum(1 for _ in fuser.parameters())
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


@torch.no_grad()
def test_inference_packs_the_weights_once_as_views_and_saving_writes_each_projector_alone(caches, tmp_path):
    rcfg, scfg, rcache, scache = caches
    fuser = _fuser(rcfg, scfg, gates_open=True)
    plain = copy.deepcopy(fuser)
    size = fuser.nbytes()
    with torch.inference_mode():
        before, _ = _fused(fuser, rcache, scache)
    weight = fuser.projectors[2].key_mlp1.blocks[0].w1.weight
    stack = fuser._packs[next(iter(fuser._packs))].stacks["mlp1.blocks.0.w1.weight"]
    assert weight.untyped_storage().data_ptr() == stack.untyped_storage().data_ptr()  # a view: no second copy
    assert not weight.is_inference()  # training can still update it
    assert fuser.nbytes() == size
    # saved, a projector's file holds its own weights only (torch.save would write a view's whole storage)
    published = save_published(fuser, tmp_path / "published")
    sizes = [f.stat().st_size for f in sorted((published / "final").glob("projector_*.pt"))]
    save_published(plain, tmp_path / "plain")
    assert sizes == [f.stat().st_size for f in sorted((tmp_path / "plain" / "final").glob("projector_*.pt"))]
    for path in (published, save_fuser(fuser, tmp_path / "ours")):
        again, _ = _fused(load_fuser(path), rcache, scache)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(before, again))
    # weights changed in place (an optimizer step, load_state_dict) are what the next pass uses
    plain.projectors[1].value_proj_out.weight.mul_(2.0)
    fuser.load_state_dict(plain.state_dict())
    for fused in (fuser, plain):
        after, _ = _fused(fused, rcache, scache)
        torch.testing.assert_close(after[1][1], _spec(plain, rcache, scache)[1][1], rtol=1e-5, atol=1e-5)
    assert not torch.equal(after[1][1], before[1][1])
    # ... and so are new tensors put in the parameters' place (load_state_dict(assign=True))
    state = {k: v * 0.5 if k == "key_in.weight" else v.clone() for k, v in plain.projectors[0].state_dict().items()}
    fuser.projectors[0].load_state_dict(state, assign=True)
    plain.projectors[0].load_state_dict(state)
    assigned, _ = _fused(fuser, rcache, scache)
    torch.testing.assert_close(assigned[0][0], _spec(plain, rcache, scache)[0][0], rtol=1e-5, atol=1e-5)
    # a gate that closes takes its path out of the pass; moving the fuser packs again, in the new dtype
    fuser.projectors[3].key_gate_logit.fill_(-1.0)
    closed, _ = _fused(fuser, rcache, scache)
    assert torch.equal(closed[3][0], rcache.layers[3].keys)
    wide = fuser.to(torch.float64)
    assert wide._packs == {}
    double = [[(k.double(), v.double()) for k, v in cache_kv(c)] for c in (rcache, scache)]
    kv, _ = wide.fuse(*double)
    torch.testing.assert_close(kv[0][0].float(), closed[0][0], rtol=1e-5, atol=1e-5)
    assert {s.dtype for p in wide._packs.values() for s in p.stacks.values()} == {torch.float64}
