"""Cache fusion with sliding-window models (a tiny Gemma-3, window 8) in either role, prompts longer than the window.

References are computed here with transformers directly: closed gates must give the receiver's own
``generate``; open gates must give the published maths (``spec_reference.fuse``) applied to caches that
keep every position, then greedy decoding on that fused cache.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, DynamicCache, GenerationConfig

from fusers import tiny
from fusers.chat import encode
from fusers.checkpoint import load_fuser
from fusers.engine import Engine, Mode
from fusers.errors import PairMismatchError, UnsupportedModelError
from fusers.fuser import ModelShape
from fusers.generation import GenerationSettings
from fusers.layer_map import last_aligned
from fusers.libraries import cache_kwargs
from fusers.pair import LoadedModel, Pair, check_cache_layout

from . import spec_reference as ref

WINDOW = 8
NEW = 6
LONG = ("The receiver answers the user, the sharer shares what it knows, and the fuser carries the cache "
        "between them. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.")
MULTI_TURN = [
    {"role": "user", "content": LONG},
    {"role": "assistant", "content": "Machine learning models read tokens and write tokens; " * 3},
    {"role": "user", "content": "What is the capital of Italy? " + LONG},
]


@pytest.fixture(scope="module")
def models():
    tok = tiny.bpe_tokenizer(400)
    gemma = tiny.build_model(tiny.tiny_config("gemma3", len(tok), layers=3, hidden_size=64, heads=4, kv_heads=1,
                                              head_dim=16, sliding_window=WINDOW, tokenizer=tok), seed=11)
    qwen = tiny.build_model(tiny.tiny_config("qwen3", len(tok), layers=2, hidden_size=48, heads=4, kv_heads=2,
                                             head_dim=12, tokenizer=tok), seed=12)
    assert "sliding_attention" in gemma.config.layer_types
    return tok, gemma, qwen


def _loaded(model, tok, role):
    return LoadedModel.from_model(model, tok, role, f"tiny-{model.config.model_type}", torch.device("cpu"),
                                  torch.float32)


def _published_fuser(tmp_path, receiver, sharer, gate: float):
    r, s = ModelShape.of(receiver.config), ModelShape.of(sharer.config)
    args = dict(source_dim=s.head_dim, target_dim=r.head_dim, source_num_heads=s.kv_heads,
                target_num_heads=r.kv_heads, hidden_dim=24, intermediate_dim=32, num_layers=3, dropout=0.0,
                initial_temperature=1.0, final_temperature=0.05, anneal_steps=10, dtype="float32")
    g = torch.Generator().manual_seed(5)
    states = [ref.random_state(args, g, gate_key=gate, gate_value=gate) for _ in range(r.layers)]
    layer_map = list(enumerate(last_aligned(r.layers, s.layers)))
    path = ref.write_published(tmp_path / f"fuser{gate}", "tiny-receiver", "tiny-sharer", layer_map, args, states)
    return load_fuser(path), args, states, layer_map


def _own_generate(model, ids):
    config = GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
    out = model.generate(input_ids=torch.tensor([ids]), generation_config=config)
    return out[0, len(ids):].tolist()


@torch.no_grad()
def _published_maths(receiver, sharer, ids, args, states, layer_map):
    """Full caches (plain DynamicCache), every position fused by the spec's formulas, greedy decoding."""
    prefix = torch.tensor([ids[:-1]])
    r_cache, s_cache = DynamicCache(), DynamicCache()
    receiver.model(input_ids=prefix, use_cache=True, **cache_kwargs(receiver.model, r_cache))
    sharer.model(input_ids=prefix, use_cache=True, **cache_kwargs(sharer.model, s_cache))
    assert r_cache.get_seq_length() == s_cache.get_seq_length() == len(ids) - 1
    for (t, s), state in zip(layer_map, states):
        rl, sl = r_cache.layers[t], s_cache.layers[s]
        rl.keys = ref.fuse(state, args, "key", sl.keys, rl.keys)
        rl.values = ref.fuse(state, args, "value", sl.values, rl.values)
    out, token = [], torch.tensor([ids[-1:]])
    for _ in range(NEW):
        logits = receiver(input_ids=token, use_cache=True, **cache_kwargs(receiver, r_cache)).logits
        token = logits[:, -1:].argmax(-1)
        out.append(int(token))
    return out


@pytest.mark.parametrize("gemma_role", ["receiver", "sharer"])
@pytest.mark.parametrize("messages", [[{"role": "user", "content": LONG}], MULTI_TURN], ids=["one-turn", "multi-turn"])
def test_fusion_with_a_sliding_window_model_matches_the_references(models, tmp_path, gemma_role, messages):
    tok, gemma, qwen = models
    receiver, sharer = (gemma, qwen) if gemma_role == "receiver" else (qwen, gemma)
    ids = encode(tok, messages)
    assert len(ids) > 3 * WINDOW
    settings = GenerationSettings(max_new_tokens=NEW, ignore_eos=True)
    for gate in (-1.0, 1.0):
        fuser, args, states, layer_map = _published_fuser(tmp_path, receiver, sharer, gate)
        pair = Pair(_loaded(receiver, tok, "receiver"), _loaded(sharer, tok, "sharer"), fuser)
        answer = Engine(pair).answer(Mode.FUSION, messages, settings)
        if gate < 0:  # closed gates: the receiver alone, as its own generate answers
            assert answer.token_ids == _own_generate(receiver, ids)
        else:
            assert all(f.key_gate_open and f.value_gate_open for f in answer.fusion)
            expected = _published_maths(receiver, sharer, ids, args, states, layer_map)
            assert answer.token_ids == expected
            assert expected != _own_generate(receiver, ids)  # the fusion changed the answer: the test can tell


def test_caches_of_different_lengths_are_a_typed_error(models, tmp_path):
    tok, gemma, qwen = models
    fuser, *_ = _published_fuser(tmp_path, qwen, gemma, 1.0)
    r_cache, s_cache = DynamicCache(), DynamicCache(config=gemma.config)  # the sliding layers drop old positions
    with torch.no_grad():
        qwen.model(input_ids=torch.tensor([encode(tok, [{"role": "user", "content": LONG}])]), **cache_kwargs(qwen.model, r_cache))
        gemma.model(input_ids=torch.tensor([encode(tok, [{"role": "user", "content": LONG}])]), **cache_kwargs(gemma.model, s_cache))
    with pytest.raises(PairMismatchError, match="one sharer entry per receiver position"):
        fuser.fuse_cache(r_cache, s_cache)


def test_layers_without_keys_of_their_own_are_refused_naming_the_layer_type():
    from transformers import AutoModelForCausalLM, Qwen3NextConfig

    tok = tiny.bpe_tokenizer(400)
    config = Qwen3NextConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, intermediate_size=64, num_experts=2,
                             num_experts_per_tok=1, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                             linear_num_value_heads=2, linear_num_key_heads=2, linear_key_head_dim=16,
                             linear_value_head_dim=16)
    loaded = _loaded(AutoModelForCausalLM.from_config(config).eval(), tok, "sharer")
    with pytest.raises(UnsupportedModelError, match="3 layers of type linear_attention"):
        check_cache_layout(loaded)
    check_cache_layout(_loaded(tiny.build_model(tiny.tiny_config("gemma3", len(tok), tokenizer=tok)), tok, "receiver"))
