"""On a CUDA GPU: every mode in bfloat16, models on one GPU and split between the GPU and the CPU, 8-bit and
4-bit, the batched fuser against one path at a time, overlapped prefills against sequential ones, and loading
straight onto the GPU. Marked ``cuda``: skipped, saying why, where torch sees no GPU (``benchmarks/gpu_check.sh``
runs them on one). Enough of them to catch a device mix-up: a tensor left on the wrong device fails loudly on
CUDA, and every record names its devices."""

from __future__ import annotations

import gc

import pytest
import torch
from transformers import AutoConfig

from fusers import tiny
from fusers.checkpoint import save_published
from fusers.chat import encode, user
from fusers.engine import Engine, Mode
from fusers.fuser import cache_kv
from fusers.generation import GenerationSettings, prefill
from fusers.pair import ModelSpec, load_model, load_pair

from . import spec_reference as ref

pytestmark = pytest.mark.cuda

GPU = "cuda:0"
SETTINGS = GenerationSettings(max_new_tokens=8, hint_max_new_tokens=8, ignore_eos=True)
QUESTION = user("What is the capital of France?")


def _on(model, device: str) -> bool:
    return all(str(t.device) == device for t in list(model.parameters()) + list(model.buffers()))


def _gpu_pair(tiny_dirs, sharer_device=GPU, dtype="bfloat16", quantize="none", fuser=None, cuda_graphs=True,
              compile=False):
    """Not compiled unless asked: compiling costs seconds a model, and one test checks it."""
    return load_pair(ModelSpec(str(tiny_dirs.receiver), GPU, dtype, quantize),
                     ModelSpec(str(tiny_dirs.sharer), sharer_device, dtype if sharer_device == GPU else "float32",
                               quantize), fuser or tiny_dirs.published, cuda_graphs=cuda_graphs, compile=compile)


@pytest.fixture(scope="module")
def closed_fuser(tiny_dirs, tmp_path_factory):
    rcfg, scfg = AutoConfig.from_pretrained(tiny_dirs.receiver), AutoConfig.from_pretrained(tiny_dirs.sharer)
    fuser = tiny.random_fuser(rcfg, scfg, receiver=str(tiny_dirs.receiver), sharer=str(tiny_dirs.sharer),
                              gates_open=False)
    return save_published(fuser, tmp_path_factory.mktemp("closed-cuda") / "fuser")


def test_every_mode_runs_in_bfloat16_with_both_models_on_one_gpu(tiny_dirs, closed_fuser):
    pair = _gpu_pair(tiny_dirs)
    assert pair.receiver.device == pair.sharer.device == torch.device(GPU)  # "cuda" is named by number
    assert _on(pair.receiver.model, GPU) and _on(pair.sharer.model, GPU) and _on(pair.fuser, GPU)
    assert pair.receiver.model.dtype == torch.bfloat16 and pair.fuser.dtype == torch.bfloat16
    engine = Engine(pair)
    for mode in Mode:
        answer = engine.answer(mode, QUESTION, SETTINGS)
        t = answer.timing
        assert len(answer.token_ids) == 8, mode
        assert list(t.peak_memory_by_device) == [GPU] and t.peak_memory_bytes > 0, mode
        assert 0 < t.ttft <= t.total
    fused = engine.answer(Mode.FUSION, QUESTION, SETTINGS)
    assert all(f.key_gate_open for f in fused.fusion) and fused.timing.fuse > 0
    # closed gates: cache fusion is the receiver alone, which is the model's own generate (on generate's path:
    # in bfloat16 the static cache's attention kernels round otherwise; its own test runs in float32)
    closed = Engine(_gpu_pair(tiny_dirs, fuser=closed_fuser, cuda_graphs=False))
    ids = torch.tensor([encode(closed.pair.receiver.tokenizer, QUESTION)], device=GPU)
    plain = closed.pair.receiver.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                                min_new_tokens=8, do_sample=False, pad_token_id=0)
    expected = plain[0, ids.shape[1]:].tolist()
    assert closed.answer(Mode.FUSION, QUESTION, SETTINGS).token_ids == expected
    assert closed.answer(Mode.RECEIVER, QUESTION, SETTINGS).token_ids == expected


def test_the_sharer_on_the_cpu_and_the_receiver_on_the_gpu(tiny_dirs):
    pair = _gpu_pair(tiny_dirs, sharer_device="cpu")
    assert _on(pair.sharer.model, "cpu") and _on(pair.receiver.model, GPU) and _on(pair.fuser, GPU)
    engine = Engine(pair)
    assert engine.overlaps_prefills()  # a GPU takes part
    for mode in (Mode.RELAY, Mode.FUSION):
        answer = engine.answer(mode, QUESTION, SETTINGS)
        assert len(answer.token_ids) == 8, mode
        peaks = answer.timing.peak_memory_by_device
        assert list(peaks) == [GPU, "cpu"] and all(v > 0 for v in peaks.values()), (mode, peaks)
        assert answer.timing.sharer_prefill > 0 and answer.timing.receiver_prefill > 0
    assert Engine(pair).answer(Mode.SHARER, QUESTION, SETTINGS).timing.peak_memory_by_device.keys() == {"cpu"}
    sequential = Engine(pair, prefills="sequential").answer(Mode.FUSION, QUESTION, SETTINGS)
    overlapped = engine.answer(Mode.FUSION, QUESTION, SETTINGS)
    assert overlapped.token_ids == sequential.token_ids
    # sequential: the fuser's captured pass over the static caches, padded; overlapped: the pass over copies
    for o, q in zip(overlapped.fusion, sequential.fusion):
        assert (o.receiver_layer, o.key_gate_open, o.value_gate_open) == (q.receiver_layer, q.key_gate_open,
                                                                          q.value_gate_open)
        assert (o.key_weight, o.value_weight) == pytest.approx((q.key_weight, q.value_weight), rel=1e-4, abs=1e-6)


def test_overlapped_prefills_on_one_gpu_equal_sequential_ones(tiny_dirs):
    pair = _gpu_pair(tiny_dirs, dtype="float32")
    question = user("Tell me a short story about a small red fox, please.")
    sequential = Engine(pair).answer(Mode.FUSION, question, SETTINGS)  # one GPU: sequential by default
    overlapped = Engine(pair, prefills="overlap").answer(Mode.FUSION, question, SETTINGS)
    assert (sequential.timing.prefills, overlapped.timing.prefills) == ("sequential", "overlapped")
    assert overlapped.token_ids == sequential.token_ids
    # sequential: the fuser's captured pass over the static caches, padded; overlapped: the pass over copies
    for o, q in zip(overlapped.fusion, sequential.fusion):
        assert (o.receiver_layer, o.key_gate_open, o.value_gate_open) == (q.receiver_layer, q.key_gate_open,
                                                                          q.value_gate_open)
        assert (o.key_weight, o.value_weight) == pytest.approx((q.key_weight, q.value_weight), rel=1e-4, abs=1e-6)
    phases = {p.name: p for p in overlapped.timing.phases}
    assert phases["receiver_prefill"].start < phases["sharer_prefill"].end  # both ran at once
    seq = {p.name: p for p in sequential.timing.phases}
    assert seq["sharer_prefill"].end <= seq["receiver_prefill"].start


@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_models_on_the_gpu_run_every_mode(tiny_dirs, quantize):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed: the quantized CUDA path is not run")
    pair = _gpu_pair(tiny_dirs, quantize=quantize)
    linear = type(pair.receiver.model.model.layers[0].mlp.down_proj).__name__
    assert linear == ("Linear8bitLt" if quantize == "8bit" else "Linear4bit")
    assert _on(pair.receiver.model, GPU) and _on(pair.sharer.model, GPU)
    full = load_model(ModelSpec(str(tiny_dirs.receiver), GPU, "bfloat16"), "receiver")
    assert pair.receiver.memory_bytes < full.memory_bytes
    engine = Engine(pair)
    for mode in Mode:
        answer = engine.answer(mode, QUESTION, SETTINGS)
        assert len(answer.token_ids) == 8 and list(answer.timing.peak_memory_by_device) == [GPU], mode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_batched_fuser_equals_one_path_at_a_time_on_the_gpu(dtype):
    tok = tiny.bpe_tokenizer(400)
    rcfg = tiny.tiny_config("qwen3", len(tok), layers=4, hidden_size=64, heads=4, kv_heads=2, head_dim=16, tokenizer=tok)
    scfg = tiny.tiny_config("qwen2", len(tok), layers=3, hidden_size=48, heads=4, kv_heads=1, tokenizer=tok)
    ids = torch.tensor([tok("Which river flows through the capital of the fictional land of Orlan?")["input_ids"]])
    rcache, scache = prefill(tiny.build_model(rcfg, 1), ids), prefill(tiny.build_model(scfg, 2), ids)
    fuser = tiny.random_fuser(rcfg, scfg, hidden_dim=32, intermediate_dim=48)
    reference = [(ref.fuse({k: v.detach() for k, v in fuser.projectors[link.fuser_index].state_dict().items()},
                           fuser.projectors[link.fuser_index].config.to_dict(), kind, s, r))
                 for link in fuser.layer_map
                 for kind, s, r in (("key", scache.layers[link.sharer_layer].keys, rcache.layers[link.receiver_layer].keys),
                                    ("value", scache.layers[link.sharer_layer].values,
                                     rcache.layers[link.receiver_layer].values))]
    fuser = fuser.to(GPU, dtype)
    receiver_kv = [(k.to(GPU, dtype), v.to(GPU, dtype)) for k, v in cache_kv(rcache)]
    sharer_kv = [(k.to(GPU, dtype), v.to(GPU, dtype)) for k, v in cache_kv(scache)]
    outs = []
    with torch.no_grad():
        for per_pass in (None, 1):
            fuser.paths_per_pass = per_pass
            kv, _ = fuser.fuse(receiver_kv, sharer_kv)
            outs.append([t for pair in kv for t in pair])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for batched, alone, spec in zip(outs[0], outs[1], reference):
        assert batched.device == torch.device(GPU) and batched.dtype == dtype
        torch.testing.assert_close(batched, alone, **tol)
        torch.testing.assert_close(batched.float().cpu(), spec, **tol)


def _rss(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))


def test_a_model_loads_straight_onto_the_gpu_with_no_host_copy(tmp_path):
    """A float32 file loaded in bfloat16: the host reads the file (its pages count as resident) and holds no
    converted copy besides; the old load-then-move held one, 1.5x the file."""
    tok = tiny.bpe_tokenizer(400)
    path = tiny.save_model(tmp_path / "model", "qwen3", tok, seed=1, layers=6, hidden_size=512, heads=8, kv_heads=4,
                           head_dim=64, intermediate_size=2048)
    file_bytes = (path / "model.safetensors").stat().st_size
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    torch.cuda.init()
    gc.collect()
    before = _rss("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    loaded = load_model(ModelSpec(str(path), GPU, "bfloat16"), "receiver")
    peak = _rss("VmHWM") - before
    assert _on(loaded.model, GPU)
    assert peak <= 1.2 * file_bytes, f"the host peaked {peak / 2**20:.0f} MiB for a {file_bytes / 2**20:.0f} MiB file"


LONG_TURNS = [
    {"role": "user", "content": "Tell me about the rivers of a country you invent, with names and lengths. " * 3},
    {"role": "assistant", "content": "The Umber flows 300 km to the sea; the Tarn joins it at the capital. " * 2},
    {"role": "user", "content": "Which of them is longer, and where do they meet?"},
]


def test_cuda_graph_decoding_answers_as_generate_does_in_every_mode(tiny_dirs):
    """float32: the static cache's attention (a masked 4,096-position cache) and generate's round alike enough
    that greedy tokens agree; bfloat16 would flip near-ties of a tiny random model."""
    graphs = _gpu_pair(tiny_dirs, dtype="float32")
    assert [p.graphs for p in graphs.decode_paths] == [True, True, True], graphs.describe()  # and the fuser's
    assert graphs.fuser.graphs is not None
    plain = _gpu_pair(tiny_dirs, dtype="float32", cuda_graphs=False)
    settings = GenerationSettings(max_new_tokens=24, hint_max_new_tokens=12, ignore_eos=True)
    for messages in (QUESTION, LONG_TURNS):
        for mode in Mode:
            got, want = Engine(graphs).answer(mode, messages, settings), Engine(plain).answer(mode, messages, settings)
            assert got.token_ids == want.token_ids, mode
            assert got.timing.decode_path == "cuda graphs" and want.timing.decode_path == "generate", mode
    sampled = GenerationSettings(max_new_tokens=16, do_sample=True, seed=5, temperature=1.2)
    assert (Engine(graphs).answer(Mode.RECEIVER, QUESTION, sampled).token_ids
            == Engine(plain).answer(Mode.RECEIVER, QUESTION, sampled).token_ids)
    seen = []

    def cancel_after_three(event):
        if getattr(event, "part", None) == "answer":
            seen.append(event)
            if len(seen) == 3:
                cancel.set()

    import threading

    cancel = threading.Event()
    stopped = Engine(graphs).answer(Mode.FUSION, QUESTION, settings, on_event=cancel_after_three, cancel=cancel)
    assert stopped.finish_reason == "cancelled" and len(stopped.token_ids) == 3


def test_compiled_decode_steps_answer_as_generate_does_in_every_mode(tiny_dirs):
    """Inductor-compiled steps in CUDA graphs, captured prefills and the fuser's pass in place over the static
    caches: greedy tokens equal generate's (float32), and the load says what it compiled."""
    compiled = _gpu_pair(tiny_dirs, dtype="float32", compile=True)
    assert [p.graphs for p in compiled.decode_paths] == [True, True, True], compiled.describe()
    assert compiled.receiver.decoder.compiled == "inductor" and compiled.sharer.decoder.compiled == "inductor"
    assert "compiled, on a static cache" in compiled.describe()[-1]
    assert "in place over the static caches" in compiled.describe()[-1]
    plain = _gpu_pair(tiny_dirs, dtype="float32", cuda_graphs=False)
    settings = GenerationSettings(max_new_tokens=24, hint_max_new_tokens=12, ignore_eos=True)
    for messages in (QUESTION, LONG_TURNS):
        for mode in Mode:
            got, want = Engine(compiled).answer(mode, messages, settings), Engine(plain).answer(mode, messages,
                                                                                              settings)
            assert got.token_ids == want.token_ids, mode
            if mode.needs_fuser:
                assert got.timing.prefills == "sequential"
                assert [f.key_weight for f in got.fusion] == pytest.approx([f.key_weight for f in want.fusion],
                                                                            rel=1e-3, abs=1e-5)


def test_cuda_graphs_decode_a_sliding_window_model_past_its_window(tmp_path):
    tok = tiny.bpe_tokenizer(400)
    gemma = tiny.save_model(tmp_path / "gemma", "gemma3", tok, seed=4, layers=3, hidden_size=64, heads=4,
                            kv_heads=1, head_dim=16, sliding_window=8)
    qwen = tiny.save_model(tmp_path / "qwen", "qwen3", tok, seed=5, layers=2, hidden_size=48, heads=4, kv_heads=2,
                           head_dim=12)
    settings = GenerationSettings(max_new_tokens=20, ignore_eos=True)
    answers = []
    for cuda_graphs in (True, False):
        pair = load_pair(ModelSpec(str(gemma), GPU, "float32"), ModelSpec(str(qwen), GPU, "float32"),
                         cuda_graphs=cuda_graphs, compile=cuda_graphs)  # Gemma 3's sliding layers compiled too
        answers.append(Engine(pair).answer(Mode.RECEIVER, LONG_TURNS, settings))
    assert answers[0].timing.decode_path == "cuda graphs" and answers[0].timing.tokens_in > 40
    assert answers[0].token_ids == answers[1].token_ids


def test_capturing_cuda_graphs_is_a_step_of_the_load(tiny_dirs):
    steps = []
    pair = load_pair(ModelSpec(str(tiny_dirs.receiver), GPU), ModelSpec(str(tiny_dirs.sharer), "cpu"),
                     tiny_dirs.published, progress=steps.append)
    assert [s.message for s in steps][-2] == "Compiling and capturing CUDA graphs for the receiver"
    assert {s.total for s in steps} == {len(steps) - 1}  # the total was known from the first step
    assert [p.graphs for p in pair.decode_paths] == [True, False, False]
    assert pair.decode_paths[1].reason == "CUDA graphs need a CUDA device, not cpu"
    assert pair.decode_paths[2].reason == "the sharer is on another device" and pair.fuser.graphs is None
