"""Resident memory that loading the real pair leaves behind, against the models' reported footprints.

    python benchmarks/load_memory.py [--json] [--settings none,8bit,4bit] [--dtype bfloat16] [--rounds 1]

The pair is the real one of ``fusers.real_models`` (SmolLM2-135M-Instruct receiver, Gemma-3-270M sharer,
GGUF files), loaded on the CPU through ``fusers.pair.load_model`` as the app and ``c2c`` load it. Every
setting runs in a fresh process, so one setting's allocator state never hides or inflates another's:

1. the stack is imported and warmed (torch, transformers, fusers, bitsandbytes when quantizing, both
   models' classes built once on the meta device, so their modules are imported: no weights), and the
   baseline RSS is read;
2. both models are loaded (``tokenizers``: only the two tokenizers, to take their share out);
3. RSS after the load, the peak RSS during it, and RSS after a 4-token answer of each model are read.

``models`` = (RSS after load - baseline) - (the same for the tokenizers alone); the ratio is that over the
sum of ``LoadedModel.memory_bytes`` (transformers' ``get_memory_footprint``). Goal: <= 1.25 in every setting.
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

    from fusers import real_models
    from fusers.chat import user
    from fusers.engine import Engine, Mode
    from fusers.generation import GenerationSettings
    from fusers.pair import ModelSpec, Pair, load_model, quiet_libraries

    torch.set_num_threads(2)
    quiet_libraries()
    paths = [real_models.smollm2_path(), real_models.gemma3_path()]
    if setting in ("8bit", "4bit"):
        import bitsandbytes  # noqa: F401  (part of the stack when quantizing)
        import transformers.integrations.bitsandbytes  # noqa: F401
    for path in paths:  # import every module a load needs, with no weights
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    start = time.perf_counter()
    out: dict = {"setting": setting, "dtype": dtype}
    if setting == "tokenizers":
        keep = [AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name) for p in paths]
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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dtype)), flush=True)
        return 0

    mib = 2**20
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
            "load_s": statistics.median(r["load_s"] for r in rs),
        })
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    print(f"baseline (stack imported, no model): {results[0]['baseline_mib']:.0f} MiB; tokenizers: "
          f"{tokenizers / mib:.0f} MiB; dtype {args.dtype}; {args.rounds} fresh process(es) per setting")
    print("| quantize | footprint | after load | over footprint | peak while loading | after an answer | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        flag = "" if r["after_load_over_footprint"] <= GOAL else f" (goal <= {GOAL})"
        print(f"| {r['setting']} | {r['footprint_mib']:.0f} MiB | {r['models_after_load_mib']:.0f} MiB | "
              f"{r['after_load_over_footprint']:.2f}{flag} | {r['models_peak_mib']:.0f} MiB ({r['peak_over_footprint']:.2f}x) | "
              f"{r['models_after_answer_mib']:.0f} MiB ({r['after_answer_over_footprint']:.2f}x) | {r['load_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
