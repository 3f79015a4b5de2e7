"""Decoding on a static cache (fusers.static_decode) gives generate's answers token for token, in every mode.

On a GPU each step is a replayed CUDA graph (tests/engine/test_cuda.py and benchmarks/gpu_check.sh check that
there); here the same loop runs without graphs, on tiny Qwen3, Llama and sliding-window Gemma-3 models, with
prompts past Gemma's window, one turn and several.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from fusers import tiny
from fusers.engine import Engine, Mode
from fusers.generation import GenerationSettings
from fusers.pair import LoadedModel, ModelSpec, Pair, load_pair
from fusers.fuser_graphs import FuserGraphs
from fusers.static_decode import StaticDecoder, prepare

WINDOW = 8
LONG = ("The receiver answers the user, the sharer shares what it knows, and the fuser carries the cache between "
        "them. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.")
ONE_TURN = [{"role": "user", "content": LONG}]
MULTI_TURN = [
    {"role": "user", "content": LONG},
    {"role": "assistant", "content": "Machine learning models read tokens and write tokens; " * 3},
    {"role": "user", "content": "What is the capital of Italy? " + LONG},
]
SHAPES = {
    "qwen3": dict(layers=3, hidden_size=48, heads=4, kv_heads=2, head_dim=12),
    "llama": dict(layers=2, hidden_size=64, heads=4, kv_heads=2),
    "gemma3": dict(layers=3, hidden_size=64, heads=4, kv_heads=1, head_dim=16, sliding_window=WINDOW),
}


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer(400)


def _loaded(tok, arch: str, role: str, seed: int) -> LoadedModel:
    model = tiny.build_model(tiny.tiny_config(arch, len(tok), tokenizer=tok, **SHAPES[arch]), seed=seed)
    return LoadedModel.from_model(model, tok, role, f"tiny-{arch}", torch.device("cpu"), torch.float32)


def _with_static(pair: Pair, tokens: int = 512, compile: str | None = None) -> Pair:
    """The same models and fuser, each model with a static decoder (no graphs on the CPU): prompts prefill into
    its static cache, padded to a bucket."""
    models = [dataclasses.replace(m, decoder=StaticDecoder(m.model, tokens, graphs=False, compile=compile,
                                                           buckets=(16, 64, 256, 448)))
              for m in (pair.receiver, pair.sharer)]
    return Pair(*models, pair.fuser)


def _with_static_fusion(pair: Pair) -> Pair:
    """:func:`_with_static`, and a copy of the fuser whose passes run in place over the two static caches."""
    static = _with_static(pair)
    fuser = copy.deepcopy(pair.fuser)
    fuser.graphs = FuserGraphs(fuser, static.receiver.shape, static.sharer.shape, torch.float32,
                               torch.device("cpu"), graphs=False, buckets=(16, 64, 256, 448))
    fuser.graphs.prepare(2, static.receiver.decoder, static.sharer.decoder)
    return Pair(static.receiver, static.sharer, fuser)


@pytest.mark.parametrize("receiver_arch,sharer_arch", [("qwen3", "llama"), ("gemma3", "qwen3"), ("llama", "gemma3")])
@pytest.mark.parametrize("messages", [ONE_TURN, MULTI_TURN], ids=["one-turn", "multi-turn"])
def test_every_mode_answers_on_the_static_cache_as_generate_does(tok, receiver_arch, sharer_arch, messages):
    receiver, sharer = _loaded(tok, receiver_arch, "receiver", 1), _loaded(tok, sharer_arch, "sharer", 2)
    fuser = tiny.random_fuser(receiver.model.config, sharer.model.config, seed=3)
    dynamic, static = Pair(receiver, sharer, fuser), _with_static(Pair(receiver, sharer, fuser))
    settings = GenerationSettings(max_new_tokens=12, hint_max_new_tokens=10, ignore_eos=True)
    used = []
    for decoder in (static.receiver.decoder, static.sharer.decoder):  # the static loop really answers
        original = decoder.decode
        decoder.decode = lambda *a, _o=original, **k: used.append(1) or _o(*a, **k)
    for mode in Mode:
        want = Engine(dynamic).answer(mode, messages, settings)
        got = Engine(static).answer(mode, messages, settings)
        assert got.token_ids == want.token_ids, mode
        assert got.hint_token_ids == want.hint_token_ids, mode
        assert got.timing.tokens_in > 3 * WINDOW  # past the sliding window
        assert want.timing.decode_path == "generate"
    # one decode per mode, two where the sharer writes a hint (relay's and hybrid's hint and answer): 7
    assert len(used) == sum(2 if mode.writes_hint else 1 for mode in Mode) == 7
    assert Engine(static).answer(Mode.RECEIVER, messages, settings).timing.decode_path == "static cache"


@pytest.mark.parametrize("receiver_arch,sharer_arch", [("qwen3", "llama"), ("gemma3", "qwen3")])
def test_cache_fusion_prefills_and_fuses_in_place_in_the_static_caches(tok, receiver_arch, sharer_arch):
    """On a GPU cache fusion replays both prefills into the static caches and the fuser's pass over them, in
    place (fusers.fuser_graphs.FuserGraphs.fuse_static); here the same padded passes run without graphs."""
    receiver, sharer = _loaded(tok, receiver_arch, "receiver", 8), _loaded(tok, sharer_arch, "sharer", 9)
    fuser = tiny.random_fuser(receiver.model.config, sharer.model.config, seed=10)
    dynamic, static = Pair(receiver, sharer, fuser), _with_static_fusion(Pair(receiver, sharer, fuser))
    in_place = []
    original = static.fuser.fuse_static
    static.fuser.fuse_static = lambda *a: in_place.append(1) or original(*a)
    settings = GenerationSettings(max_new_tokens=12, hint_max_new_tokens=10, ignore_eos=True)
    for messages in (ONE_TURN, MULTI_TURN):
        for mode in (Mode.FUSION, Mode.HYBRID):
            want = Engine(dynamic).answer(mode, messages, settings)
            got = Engine(static).answer(mode, messages, settings)
            assert got.token_ids == want.token_ids, mode
            assert got.timing.prefills == "sequential" and got.timing.decode_path.endswith("static cache")
            for g, w in zip(got.fusion, want.fusion):
                assert (g.key_gate_open, g.value_gate_open) == (w.key_gate_open, w.value_gate_open)
                assert g.key_weight == pytest.approx(w.key_weight, rel=1e-4, abs=1e-6)
    assert len(in_place) == 4
    # both decoders were handed back: another answer runs on them again
    assert not static.receiver.decoder.lock.locked() and not static.sharer.decoder.lock.locked()


def test_a_cancelled_static_prefill_hands_the_decoder_back(tok):
    import threading

    receiver, sharer = _loaded(tok, "qwen3", "receiver", 11), _loaded(tok, "llama", "sharer", 12)
    fuser = tiny.random_fuser(receiver.model.config, sharer.model.config, seed=13)
    static = _with_static_fusion(Pair(receiver, sharer, fuser))
    for mode in (Mode.RECEIVER, Mode.FUSION):
        cancel = threading.Event()
        answer = Engine(static).answer(mode, ONE_TURN, GenerationSettings(max_new_tokens=8),
                                       on_event=lambda e: cancel.set(), cancel=cancel)  # cancel at the first event
        assert answer.finish_reason == "cancelled"
        assert not static.receiver.decoder.lock.locked() and not static.sharer.decoder.lock.locked()


def test_a_compiled_decode_step_answers_as_generate_does(tok):
    """torch.compile traces the step (the CPU checks the trace with the aot_eager backend; on a GPU Inductor
    compiles it, checked by tests/engine/test_cuda.py)."""
    receiver, sharer = _loaded(tok, "gemma3", "receiver", 14), _loaded(tok, "qwen3", "sharer", 15)
    dynamic, static = Pair(receiver, sharer), _with_static(Pair(receiver, sharer), compile="aot_eager")
    settings = GenerationSettings(max_new_tokens=12, ignore_eos=True)
    for mode in (Mode.RECEIVER, Mode.RELAY):
        assert (Engine(static).answer(mode, MULTI_TURN, settings).token_ids
                == Engine(dynamic).answer(mode, MULTI_TURN, settings).token_ids)
    assert static.receiver.decoder.compiled == "aot_eager"


def test_sampling_and_end_of_sequence_follow_generate(tok):
    receiver, sharer = _loaded(tok, "qwen3", "receiver", 4), _loaded(tok, "llama", "sharer", 5)
    dynamic, static = Pair(receiver, sharer), _with_static(Pair(receiver, sharer))
    for settings in (GenerationSettings(max_new_tokens=16, do_sample=True, temperature=1.3, top_p=0.9, top_k=50,
                                        seed=7),
                     GenerationSettings(max_new_tokens=16)):  # greedy, stopping at end-of-sequence
        for mode in (Mode.RECEIVER, Mode.RELAY):
            want = Engine(dynamic).answer(mode, ONE_TURN, settings)
            got = Engine(static).answer(mode, ONE_TURN, settings)
            assert (got.token_ids, got.finish_reason) == (want.token_ids, want.finish_reason)
    sampled = Engine(static).answer(Mode.RECEIVER, ONE_TURN, GenerationSettings(max_new_tokens=16, do_sample=True))
    assert sampled.token_ids != Engine(static).answer(Mode.RECEIVER, ONE_TURN,
                                                      GenerationSettings(max_new_tokens=16)).token_ids


def test_an_answer_that_outgrows_the_static_cache_decodes_the_dynamic_way(tok):
    receiver, sharer = _loaded(tok, "gemma3", "receiver", 6), _loaded(tok, "qwen3", "sharer", 7)
    small = _with_static(Pair(receiver, sharer), tokens=40)
    settings = GenerationSettings(max_new_tokens=30, ignore_eos=True)
    got = Engine(small).answer(Mode.RECEIVER, ONE_TURN, settings)  # prompt + 30 > 40 positions
    assert got.token_ids == Engine(Pair(receiver, sharer)).answer(Mode.RECEIVER, ONE_TURN, settings).token_ids


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_the_decode_step_and_the_prefills_never_read_a_value_on_the_host(tok, arch):
    """A CUDA graph cannot hold a step that reads a tensor's value on the host (``.item()``, ``if tensor``): on
    the meta device every such read raises, so a step that runs there can be captured."""
    config = tiny.tiny_config(arch, len(tok), tokenizer=tok, **SHAPES[arch])
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config).eval()
    decoder = StaticDecoder(model, tokens=64, graphs=False)
    with torch.inference_mode():
        logits = decoder._step()
        decoder._prefill_bucket(16).run()  # a captured prefill too (past Gemma's window of 8)
    assert logits.shape == (1, len(tok)) and logits.device.type == "meta"
    with pytest.raises(Exception):  # the check can fail: a host read on meta raises
        bool(logits.sum() > 0)


def test_cuda_graphs_fall_back_with_the_reason_said_once(tiny_dirs):
    pair = load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"),
                     tiny_dirs.published)
    assert [p.describe() for p in pair.decode_paths] == [
        "receiver: transformers' generate (CUDA graphs need a CUDA device, not cpu)",
        "sharer: transformers' generate (CUDA graphs need a CUDA device, not cpu)",
        "fuser: its eager pass (CUDA graphs need a CUDA device, not cpu)"]
    assert pair.fuser.graphs is None
    assert pair.receiver.decoder is None and pair.sharer.decoder is None
    assert pair.describe()[-1] == ("decoding: receiver: transformers' generate, sharer: transformers' generate, "
                                   "fuser: its eager pass (CUDA graphs need a CUDA device, not cpu)")  # said once
    decoder, path = prepare(pair.receiver.model, "receiver", quantized=False, enabled=False)
    assert decoder is None and path.reason == "turned off"


def test_the_cli_turns_cuda_graphs_off_and_says_so(tiny_dirs, capsys):
    from fusers.cli import main

    main(["compare", "--receiver", str(tiny_dirs.receiver), "--sharer", str(tiny_dirs.sharer), "--fuser",
          str(tiny_dirs.published), "--device", "cpu", "--modes", "fusion", "--max-new-tokens", "3", "--prompt", "Hi",
          "--no-cuda-graphs"])
    out = capsys.readouterr()
    assert "sharer: transformers' generate, fuser: its eager pass (turned off)" in out.out + out.err
