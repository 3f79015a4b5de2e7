"""Resident memory that loading the real pair leaves behind, against the models' reported footprints.

    python benchmarks/load_memory.py [--json] [--settings none,8bit,4bit] [--dtype bfloat16] [--rounds 1]
    python benchmarks/load_memory.py --onto cuda [--json]

The pair is the real one of ``fusers.real_models`` (SmolLM2-135M-Instruct receiver, Gemma-3-270M sharer,
GGUF files), loaded on the CPU through ``fusers.pair.load_model`` as the app and ``c2c`` load it (a GGUF file
is converted once into a plain folder in the cache, in a child process; the parent does that first). Every
setting runs in a fresh process, so one setting's allocator state never hides or inflates another's:

1. the stack is imported and warmed (torch, transformers, fusers, bitsandbytes when quantizing, both
   models' classes built once on the meta device, so their modules are imported: no weights), and the
   baseline RSS is read;
2. both models are loaded (``tokenizers``: only the two tokenizers, to take their share out);
3. RSS after the load, the peak RSS during it, and RSS after a 4-token answer of each model are read.

``models`` = (RSS after load - baseline) - (the same for the tokenizers alone); the ratio is that over the
sum of ``LoadedModel.memory_bytes`` (transformers' ``get_memory_footprint``). Goal: <= 1.25 in every setting.
Unquantized weights are the converted folder's memory-mapped file: they become resident as they are first
used, so the goal is judged on the larger of the two readings, after the load and after an answer.

``--onto cuda``: the host's side of loading onto a GPU. A Qwen3-0.6B-shaped model (random weights, bfloat16) is
saved to a temporary folder, then loaded onto the GPU through ``load_model`` in a fresh process; reported: the
peak host RSS during the load over the weights' size (goal <= 1.2: no whole copy of the model on the host).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.25


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(setting: str, dtype: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from fusers import gguf, real_models
    from fusers.chat import user
    from fusers.engine import Engine, Mode
    from fusers.generation import GenerationSettings
    from fusers.libraries import quiet_libraries
    from fusers.pair import ModelSpec, Pair, load_model

    torch.set_num_threads(2)
    quiet_libraries()
    paths = [real_models.smollm2_path(), real_models.gemma3_path()]
    if setting in ("8bit", "4bit"):
        from fusers.libraries import import_bitsandbytes

        import_bitsandbytes()  # part of the stack when quantizing
        import transformers.integrations.bitsandbytes  # noqa: F401
    for path in paths:  # import every module a load needs, with no weights
        folder, _ = gguf.convert(path, dtype, "model")  # converted by the parent already: the cache's folder
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    start = time.perf_counter()
    out: dict = {"setting": setting, "dtype": dtype}
    if setting == "tokenizers":  # what load_model loads besides the weights
        keep = [AutoTokenizer.from_pretrained(gguf.convert(p, dtype, "model")[0]) for p in paths]
        footprint = 0
    else:
        keep = [load_model(ModelSpec(str(p), "cpu", dtype, setting), role) for p, role in zip(paths, ("receiver", "sharer"))]
        footprint = sum(m.memory_bytes for m in keep)
    out["load_s"] = time.perf_counter() - start
    # no gc.collect() here: the app loads on its models' thread, where the engine does not collect either
    out.update(baseline_bytes=base, after_bytes=_status("VmRSS"), peak_bytes=_status("VmHWM"), footprint_bytes=footprint)
    if setting != "tokenizers":
        engine = Engine(Pair(keep[0], keep[1]))
        for mode in (Mode.RECEIVER, Mode.SHARER):
            engine.answer(mode, user("What is the capital of Japan?"), GenerationSettings(max_new_tokens=4))
        gc.collect()
        out["after_answer_bytes"] = _status("VmRSS")
    return out


def onto_child(folder: str, device_name: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fusers.devices import resolve_device
    from fusers.libraries import quiet_libraries
    from fusers.pair import ModelSpec, load_model

    quiet_libraries()
    device = resolve_device(device_name)
    torch.zeros(1, device=device)  # the CUDA context is the stack's, not the load's
    with torch.device("meta"):
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    loaded = load_model(ModelSpec(folder, str(device), "bfloat16"), "receiver")
    seconds = time.perf_counter() - start
    on_device = {str(t.device) for t in loaded.model.parameters()}
    return {"device": str(device), "load_s": seconds, "weights_bytes": loaded.memory_bytes,
            "host_peak_bytes": _status("VmHWM") - base, "host_after_bytes": _status("VmRSS") - base,
            "parameter_devices": sorted(on_device),
            "device_bytes": int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0}


def onto(device_name: str) -> dict:
    """Save a Qwen3-0.6B-shaped bfloat16 model, then load it onto ``device_name`` in a fresh process."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from fusers import tiny
    from fusers.devices import resolve_device
    from modes import QWEN3_0_6B

    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory(prefix="c2c-onto-") as folder:
        tok = tiny.word_tokenizer(QWEN3_0_6B["vocab_size"])
        config = Qwen3Config(**QWEN3_0_6B, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        with device:  # random weights made on the device: the parent's host memory stays out of it
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, __file__, "--onto-child", folder, "--onto", str(device)], env=env,
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the load onto {device} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["host_peak_over_weights"] = out["host_peak_bytes"] / out["weights_bytes"]
    return out


def run_child(setting: str, dtype: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "--child", setting, "--dtype", dtype], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {setting} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="none,8bit,4bit")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per setting; medians reported")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--onto", help="cuda or cuda:N: measure the host's side of loading onto that GPU instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--onto-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dtype)), flush=True)
        return 0
    if args.onto_child:
        print(json.dumps(onto_child(args.onto_child, args.onto)), flush=True)
        return 0
    if args.onto:
        r = onto(args.onto)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"onto {r['device']}: weights {r['weights_bytes'] / 2**20:.0f} MiB; host peak while loading "
                  f"{r['host_peak_bytes'] / 2**20:.0f} MiB = {r['host_peak_over_weights']:.2f}x the weights (goal <= 1.2); "
                  f"on the device {r['device_bytes'] / 2**20:.0f} MiB; {r['load_s']:.1f} s")
        return 0

    mib = 2**20
    sys.path.insert(0, str(ROOT))
    from fusers import gguf, real_models

    for path in (real_models.smollm2_path(), real_models.gemma3_path()):
        gguf.convert(path, args.dtype, "model")  # once, into the cache (a child process): not what is measured
    runs = {s: [run_child(s, args.dtype) for _ in range(args.rounds)] for s in ["tokenizers", *args.settings.split(",")]}
    tokenizers = statistics.median(r["after_bytes"] - r["baseline_bytes"] for r in runs["tokenizers"])
    results = []
    for setting, rs in runs.items():
        if setting == "tokenizers":
            continue
        after = [r["after_bytes"] - r["baseline_bytes"] - tokenizers for r in rs]
        peak = [r["peak_bytes"] - r["baseline_bytes"] - tokenizers for r in rs]
        answered = [r["after_answer_bytes"] - r["baseline_bytes"] - tokenizers for r in rs]
        footprint = rs[0]["footprint_bytes"]
        results.append({
            "setting": setting, "dtype": args.dtype, "rounds": len(rs), "footprint_mib": footprint / mib,
            "baseline_mib": statistics.median(r["baseline_bytes"] for r in rs) / mib, "tokenizers_mib": tokenizers / mib,
            "models_after_load_mib": statistics.median(after) / mib, "models_after_load_range_mib": [min(after) / mib, max(after) / mib],
            "models_peak_mib": statistics.median(peak) / mib,
            "models_after_answer_mib": statistics.median(answered) / mib,
            "after_load_over_footprint": statistics.median(after) / footprint,
            "peak_over_footprint": statistics.median(peak) / footprint,
            "after_answer_over_footprint": statistics.median(answered) / footprint,
            "over_footprint": max(statistics.median(after), statistics.median(answered)) / footprint,
            "load_s": statistics.median(r["load_s"] for r in rs),
        })
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    print(f"baseline (stack imported, no model): {results[0]['baseline_mib']:.0f} MiB; tokenizers: "
          f"{tokenizers / mib:.0f} MiB; dtype {args.dtype}; {args.rounds} fresh process(es) per setting")
    print("| quantize | footprint | after load | after an answer | over footprint (the larger) | peak while loading | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        flag = "" if r["over_footprint"] <= GOAL else f" (goal <= {GOAL})"
        print(f"| {r['setting']} | {r['footprint_mib']:.0f} MiB | {r['models_after_load_mib']:.0f} MiB | "
              f"{r['models_after_answer_mib']:.0f} MiB | {r['over_footprint']:.2f}{flag} | "
              f"{r['models_peak_mib']:.0f} MiB ({r['peak_over_footprint']:.2f}x) | {r['load_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
