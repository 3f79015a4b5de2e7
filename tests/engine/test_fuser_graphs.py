"""The fuser's passes padded to fixed lengths for CUDA graphs (fusers.fuser_graphs) fuse as the eager pass does.

On a GPU each padded pass is a replayed graph (tests/engine/test_cuda.py); here the same padded passes run
without capture, which is what the padding, the copies in and out and the mean over real positions need."""

from __future__ import annotations

import copy

import pytest
import torch

from fusers import tiny
from fusers.fuser import ModelShape
from fusers.fuser_graphs import FuserGraphs
from fusers.generation import prefill


@pytest.fixture(scope="module")
def setup():
    tok = tiny.bpe_tokenizer(400)
    rcfg = tiny.tiny_config("qwen3", len(tok), layers=4, hidden_size=64, heads=4, kv_heads=2, head_dim=16, tokenizer=tok)
    scfg = tiny.tiny_config("llama", len(tok), layers=3, hidden_size=48, heads=4, kv_heads=1, tokenizer=tok)
    receiver, sharer = tiny.build_model(rcfg, 1), tiny.build_model(scfg, 2)
    fuser = tiny.random_fuser(rcfg, scfg, hidden_dim=24, intermediate_dim=40, seed=3)
    fuser.projectors[1].value_gate_logit.data.fill_(-1.0)  # one closed path: it is left out of the pass
    return tok, receiver, sharer, fuser, ModelShape.of(rcfg), ModelShape.of(scfg)


def _caches(tok, receiver, sharer, n):
    ids = torch.tensor([tok("The rivers of Orlan and the founders of Deirovia, " * 8)["input_ids"][:n]])
    return prefill(receiver, ids), prefill(sharer, ids)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 16])
def test_a_padded_pass_fuses_as_the_eager_pass(setup, n):
    tok, receiver, sharer, fuser, rshape, sshape = setup
    graphs = FuserGraphs(fuser, rshape, sshape, torch.float32, torch.device("cpu"), graphs=False, buckets=(8, 16))
    rcache, scache = _caches(tok, receiver, sharer, n)
    want_cache = copy.deepcopy(rcache)
    want = fuser.fuse_cache(want_cache, scache)
    fuser.graphs = graphs
    try:
        got = fuser.fuse_cache(rcache, scache)
    finally:
        fuser.graphs = None
    assert len(graphs._by_length) == 1  # the padded pass ran, in the bucket of n
    for a, b in zip(rcache.layers, want_cache.layers):
        assert a.keys.shape == b.keys.shape == (1, rshape.kv_heads, n, rshape.head_dim)
        # other shapes than the eager pass's: float rounding, not bitwise (1e-5 of values ~1)
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)
    assert [(f.key_gate_open, f.value_gate_open) for f in got] == [(f.key_gate_open, f.value_gate_open) for f in want]
    assert not got[1].value_gate_open and got[1].value_weight == 0.0
    for f, w in zip(got, want):  # the mean w over the real positions only, not the padding
        assert f.key_weight == pytest.approx(w.key_weight, rel=1e-4)
        assert f.value_weight == pytest.approx(w.value_weight, rel=1e-4)


def test_longer_prompts_take_the_eager_pass_and_changed_gates_capture_again(setup):
    tok, receiver, sharer, fuser, rshape, sshape = setup
    graphs = FuserGraphs(fuser, rshape, sshape, torch.float32, torch.device("cpu"), graphs=False, buckets=(8,))
    rcache, scache = _caches(tok, receiver, sharer, 12)
    assert graphs.fuse(rcache, scache) is None  # past the last bucket
    rcache, scache = _caches(tok, receiver, sharer, 6)
    assert graphs.fuse(rcache, scache) is not None
    made_for = graphs._made_for
    fuser.projectors[2].key_gate_logit.data.fill_(-3.0)
    try:
        rcache2, scache2 = _caches(tok, receiver, sharer, 6)
        reference = copy.deepcopy(rcache2)
        weights, gates = graphs.fuse(rcache2, scache2)
        assert graphs._made_for != made_for and gates[4] is False  # link 2's key path, now closed
        torch.testing.assert_close(rcache2.layers[2].keys, reference.layers[2].keys)  # left as it was
    finally:
        fuser.projectors[2].key_gate_logit.data.fill_(2.0)
