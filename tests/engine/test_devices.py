"""Where models are placed, which devices a run times and measures, and overlapped prefills (CPU side)."""

from __future__ import annotations

import gc

import pytest
import torch

from fusers import tiny
from fusers.pair import ModelSpec, load_model, placement


def _rss(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))


@pytest.fixture(scope="module")
def float32_model(tmp_path_factory):
    """A 90 MiB float32 model on disk (safetensors), to be loaded in bfloat16: loading must convert every weight."""
    tok = tiny.bpe_tokenizer(400)
    path = tiny.save_model(tmp_path_factory.mktemp("f32") / "model", "qwen3", tok, seed=1, layers=6, hidden_size=512,
                           heads=8, kv_heads=4, head_dim=64, intermediate_size=2048)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):  # import the model's modules now, so their memory is not the load's
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return path


def test_placement_names_the_device_for_every_weight():
    assert placement(torch.device("cuda", 1)) == {"": "cuda:1"}
    assert placement(torch.device("cpu")) == {"": "cpu"}


def test_weights_load_straight_onto_their_device_with_no_host_copy(float32_model):
    """The meta device stands in for a GPU here: memory there is not the host's. Loaded weight by weight onto it,
    the host never holds the model; loaded on the host and then moved (``.to(device)``), it held a whole copy."""
    gc.collect()
    before = _rss("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
    placed = load_model(ModelSpec(str(float32_model), "meta", "bfloat16"), "receiver")
    peak = _rss("VmHWM") - before
    assert {p.device.type for p in placed.model.parameters()} == {"meta"}
    assert placed.device == torch.device("meta") and placed.dtype == torch.bfloat16
    assert placed.memory_bytes > 40 * 2**20
    assert peak < 0.25 * placed.memory_bytes, f"the host peaked {peak / 2**20:.0f} MiB above its start"


def test_a_model_loaded_on_the_cpu_has_every_weight_there_as_saved(float32_model):
    from safetensors.torch import load_file

    loaded = load_model(ModelSpec(str(float32_model), "cpu", "float32"), "receiver")
    saved = load_file(str(float32_model / "model.safetensors"))
    state = loaded.model.state_dict()
    assert {t.device.type for t in state.values()} == {"cpu"}
    assert all(torch.equal(state[name], tensor) for name, tensor in saved.items())


def test_a_run_uses_the_devices_of_the_models_it_runs(tiny_pair):
    """Which devices a run clocks and measures: on a CPU-only machine a sharer elsewhere is stood in for by a
    record on the meta device (the run itself is not made; the CUDA tests run the real mix)."""
    import dataclasses

    from fusers.engine import Engine, Mode
    from fusers.pair import Pair

    cpu, meta = torch.device("cpu"), torch.device("meta")
    same = Engine(tiny_pair)
    assert all(same.devices(mode) == [cpu] for mode in Mode)
    mixed = Engine(Pair(tiny_pair.receiver, dataclasses.replace(tiny_pair.sharer, device=meta), tiny_pair.fuser))
    assert mixed.devices(Mode.RECEIVER) == [cpu] and mixed.devices(Mode.SHARER) == [meta]
    assert mixed.devices(Mode.RELAY) == mixed.devices(Mode.FUSION) == [cpu, meta]


def test_a_cpu_only_run_reports_one_peak_for_the_cpu(tiny_pair):
    from fusers.chat import user
    from fusers.engine import Engine, Mode
    from fusers.generation import GenerationSettings

    engine = Engine(tiny_pair)
    for mode in Mode:
        t = engine.answer(mode, user("Hello"), GenerationSettings(max_new_tokens=3)).timing
        assert t.peak_memory_by_device == {"cpu": t.peak_memory_bytes}, mode
        assert t.peak_memory_bytes >= 0.5 * _rss("VmRSS")  # the process's peak RSS, not a share of it
        assert t.to_dict()["peak_memory_by_device"] == {"cpu": t.peak_memory_bytes}


def test_peak_memory_and_the_recorder_take_each_device_once():
    from fusers.devices import PeakMemory
    from fusers.timing import Recorder

    cpu = torch.device("cpu")
    with PeakMemory(cpu, cpu) as peak:
        block = torch.ones(16 * 2**20 // 4)  # 16 MiB, written: resident
    assert list(peak.by_device) == ["cpu"] and peak.peak_bytes == peak.by_device["cpu"] >= block.nbytes
    assert Recorder([cpu, cpu]).devices == [cpu] and Recorder(cpu).devices == [cpu]
    with pytest.raises(ValueError, match="at least one device"):
        PeakMemory()


def _phase(timing, name):
    return next(p for p in timing.phases if p.name == name)


def test_cache_fusion_overlaps_its_prefills_only_across_devices_with_a_gpu(tiny_pair):
    import dataclasses

    from fusers.engine import Engine
    from fusers.pair import Pair

    assert not Engine(tiny_pair).overlaps_prefills()  # the CPU: both prefills would only share its cores
    gpu = dataclasses.replace(tiny_pair.receiver, device=torch.device("cuda", 0))  # records: nothing runs on them
    gpu_sharer = dataclasses.replace(tiny_pair.sharer, device=torch.device("cuda", 0))
    second = dataclasses.replace(tiny_pair.sharer, device=torch.device("cuda", 1))
    assert Engine(Pair(gpu, tiny_pair.sharer, tiny_pair.fuser)).overlaps_prefills()  # a GPU and the CPU
    assert Engine(Pair(gpu, second, tiny_pair.fuser)).overlaps_prefills()  # two GPUs
    assert not Engine(Pair(gpu, gpu_sharer, tiny_pair.fuser)).overlaps_prefills()  # one GPU: one after the other
    assert Engine(Pair(tiny_pair.receiver, tiny_pair.sharer), prefills="overlap").overlaps_prefills()
    assert not Engine(Pair(gpu, tiny_pair.sharer, tiny_pair.fuser), prefills="sequential").overlaps_prefills()
    with pytest.raises(ValueError, match="prefills must be one of auto, overlap, sequential"):
        Engine(tiny_pair, prefills="parallel")
    from fusers.chat import user
    from fusers.engine import Mode
    from fusers.generation import GenerationSettings

    assert Engine(tiny_pair).answer(Mode.FUSION, user("Hello"), GenerationSettings(max_new_tokens=2)
                                    ).timing.prefills == "sequential"
    assert Engine(tiny_pair, prefills="overlap").answer(Mode.FUSION, user("Hello"), GenerationSettings(
        max_new_tokens=2)).timing.prefills == "overlapped"


def test_overlapped_prefills_fuse_and_answer_exactly_as_sequential_ones(tiny_pair):
    """Forced on the CPU (threads, no streams), overlapping changes no token and no fused value; the sequential
    fallback runs one prefill after the other."""
    from fusers.chat import user
    from fusers.engine import Engine, Mode
    from fusers.generation import GenerationSettings

    settings = GenerationSettings(max_new_tokens=8, ignore_eos=True)
    question = user("Tell me a short story about a small red fox.")
    one_by_one = Engine(tiny_pair).answer(Mode.FUSION, question, settings)
    together = Engine(tiny_pair, prefills="overlap").answer(Mode.FUSION, question, settings)
    assert together.token_ids == one_by_one.token_ids and len(together.token_ids) == 8
    assert [vars(f) for f in together.fusion] == [vars(f) for f in one_by_one.fusion]
    sharer, receiver = _phase(one_by_one.timing, "sharer_prefill"), _phase(one_by_one.timing, "receiver_prefill")
    assert sharer.end <= receiver.start
    sharer, receiver = _phase(together.timing, "sharer_prefill"), _phase(together.timing, "receiver_prefill")
    assert sharer.start <= receiver.start < sharer.end and receiver.start < receiver.end  # both ran at once
    assert together.timing.sharer_prefill == pytest.approx(sharer.end - sharer.start)
    assert [p.name for p in together.timing.phases] == ["tokenize", "sharer_prefill", "receiver_prefill", "fuse",
                                                          "decode"]


def test_overlapped_prefills_can_be_cancelled_and_pass_errors_on(tiny_pair):
    import threading

    from fusers.chat import user
    from fusers.devices import overlapped
    from fusers.engine import Engine, Mode, PhaseEvent
    from fusers.generation import GenerationSettings

    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, PhaseEvent) and event.phase == "receiver_prefill" and event.end is None:
            cancel.set()  # Stop pressed while both prompts are being read

    answer = Engine(tiny_pair, prefills="overlap").answer(Mode.FUSION, user("Hello"), GenerationSettings(),
                                                          on_event=on_event, cancel=cancel)
    assert answer.finish_reason == "cancelled" and answer.token_ids == []
    cpu = torch.device("cpu")
    ran = []

    def fails():
        raise KeyError("from the worker")

    with pytest.raises(KeyError, match="from the worker"):
        overlapped(fails, cpu, lambda: ran.append("second"), cpu)
    assert ran == ["second"]  # the calling thread's work ran to its end first
    first, first_end, second, second_end = overlapped(lambda: 1, cpu, lambda: 2, cpu)
    assert (first, second) == (1, 2) and first_end > 0 and second_end > 0


def test_freed_memory_goes_back_to_the_system():
    """glibc keeps freed heap memory for reuse; release_freed_memory hands it back. Real malloc in a fresh
    process, so that the heap's layout is known: 100 blocks of 2 MiB, each pinned in place by a small block
    after it, freed."""
    import subprocess
    import sys

    code = """
import ctypes
from fusers.devices import release_freed_memory
libc = ctypes.CDLL(None)
if not hasattr(libc, "malloc_trim"):
    print("no-glibc"); raise SystemExit
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) // 1024
big = libc.malloc(8 << 20); ctypes.memset(big, 1, 8 << 20); libc.free(big)  # glibc's mmap threshold rises to 8 MiB
start = rss()
blocks = []
pins = []
for _ in range(100):
    blocks.append(libc.malloc(2 << 20)); ctypes.memset(blocks[-1], 1, 2 << 20); pins.append(libc.malloc(300 << 10))
for block in blocks:
    libc.free(block)
held = rss() - start
release_freed_memory()
print(held, rss() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out == ["no-glibc"]:
        pytest.skip("this C library has no malloc_trim (not glibc): nothing to hand back")
    held, after = map(int, out)
    assert held >= 150, f"the set-up did not leave freed memory in the heap ({held} MiB)"
    assert after <= 20, f"{after} of {held} MiB stayed"


def test_a_quantized_model_keeps_none_of_its_weights_in_the_file(tiny_dirs):
    """Unquantized, the weights are the memory-mapped file itself (no copy). Quantized, the weights
    bitsandbytes leaves alone (embeddings, norms) get memory of their own, so the file, every page of it that
    quantizing read, is let go."""
    from fusers.devices import file_backed

    plain = load_model(ModelSpec(str(tiny_dirs.receiver), "cpu", "float32"), "receiver")
    assert file_backed(plain.model.parameters())  # straight from the file
    quantized = load_model(ModelSpec(str(tiny_dirs.receiver), "cpu", "float32", "8bit"), "receiver")
    embedding = quantized.model.get_input_embeddings().weight
    assert embedding.dtype == torch.float32 and not embedding.is_meta
    assert file_backed(list(quantized.model.parameters()) + list(quantized.model.buffers())) == []
    torch.testing.assert_close(embedding, plain.model.get_input_embeddings().weight, rtol=0, atol=0)
