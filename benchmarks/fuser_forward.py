"""The fusers' forward alone: one batched pass against one path after another.

    python benchmarks/fuser_forward.py [--json] [--device cpu|cuda] [--setups qwen,tiny] [--dtypes float32,bfloat16]

``qwen``: 28 published-shape fusers (the Qwen3-0.6B receiver / Qwen2.5-0.5B sharer pairs: receiver 8 KV heads
x 128, sharer 2 x 64, hidden 1024, intermediate 1024, 3 layers, gates open); ``tiny``: the 4 fusers of
``benchmarks/modes.py``'s tiny pair (receiver 2 x 32, sharer 1 x 24, width 64). Caches of 127 positions with
random values, fused through ``Fuser.fuse_cache`` as cache fusion calls it. ``per_path`` runs its 56 K and V paths one after
another (``paths_per_pass = 1``, as the reference does); ``batched`` runs them as one pass. Both are timed in
the same run, interleaved, device-synchronised; medians reported, with the largest difference between their
outputs. On a CUDA device ``captured`` runs the batched pass as a replayed CUDA graph (fusers.fuser_graphs, what
loading a pair on a GPU sets up), copies in and out included. Goals: batched / per-path <= 0.8 (CPU float32);
captured <= 2 ms (GPU bfloat16). ``replay_s``: the captured pass's replay alone, by CUDA events: what fusing in
place over the static caches costs (``Fuser.fuse_static``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusers.devices import resolve_device, synchronize  # noqa: E402
from fusers.fuser import Fuser, FuserInfo  # noqa: E402
from fusers.layer_map import build_layer_map  # noqa: E402
from fusers.projector import C2CProjector, ProjectorConfig  # noqa: E402

POSITIONS = 127
# layers, sharer layers, receiver (KV heads, head dim), sharer (KV heads, head dim), fuser width
SETUPS = {
    "qwen": (28, 24, (8, 128), (2, 64), 1024),  # Qwen3-0.6B and Qwen2.5-0.5B, the published fusers
    "tiny": (4, 3, (2, 32), (1, 24), 64),
}


def published_fuser(setup: str, device: torch.device, dtype: torch.dtype) -> Fuser:
    layers, sharer_layers, receiver_kv, sharer_kv, width = SETUPS[setup]
    cfg = ProjectorConfig(source_dim=sharer_kv[1], target_dim=receiver_kv[1], source_num_heads=sharer_kv[0],
                          target_num_heads=receiver_kv[0], hidden_dim=width, intermediate_dim=width, num_layers=3,
                          dropout=0.0)
    torch.manual_seed(3)
    projectors = []
    for _ in range(layers):
        proj = C2CProjector(cfg)
        with torch.no_grad():
            proj.key_gate_logit.fill_(1.0)
            proj.value_gate_logit.fill_(1.0)
        projectors.append(proj)
    info = FuserInfo(receiver=f"{setup}-receiver", sharer=f"{setup}-sharer", receiver_layers=layers,
                     sharer_layers=sharer_layers)
    return Fuser(projectors, build_layer_map("last_aligned", layers, sharer_layers), info).to(device, dtype).eval()


def random_cache(layers: int, kv: tuple[int, int], device: torch.device, dtype: torch.dtype):
    from transformers import DynamicCache

    cache = DynamicCache()
    gen = torch.Generator().manual_seed(layers)
    for i in range(layers):
        k, v = (torch.randn(1, kv[0], POSITIONS, kv[1], generator=gen).to(device, dtype) for _ in range(2))
        cache.update(k, v, i)
    return cache


def time_fuse(fuser: Fuser, receiver_cache, sharer_cache, device: torch.device) -> tuple[float, list]:
    cache = copy.deepcopy(receiver_cache)  # fusing works in place: every round starts from the prefill
    synchronize(device)
    t0 = time.perf_counter()
    fuser.fuse_cache(cache, sharer_cache)
    synchronize(device)
    return time.perf_counter() - t0, [(layer.keys, layer.values) for layer in cache.layers]


def run(setup: str, device: torch.device, dtype_name: str, rounds: int) -> dict:
    dtype = getattr(torch, dtype_name)
    layers, sharer_layers, receiver_kv, sharer_kv, _ = SETUPS[setup]
    fuser = published_fuser(setup, device, dtype)
    receiver_cache = random_cache(layers, receiver_kv, device, dtype)
    sharer_cache = random_cache(sharer_layers, sharer_kv, device, dtype)
    kinds = [("per_path", 1), ("batched", None)]
    graphs = None
    if device.type == "cuda":
        from fusers.fuser import ModelShape
        from fusers.fuser_graphs import FuserGraphs

        graphs = FuserGraphs(fuser, ModelShape(layers, *receiver_kv), ModelShape(sharer_layers, *sharer_kv), dtype,
                             device)
        graphs.prepare(count=2)  # 64 and 128 positions: the 127 here pad to 128
        kinds.append(("captured", None))
    times: dict[str, list[float]] = {mode: [] for mode, _ in kinds}
    outputs = {}

    def one(mode: str, per_pass: int | None):
        fuser.paths_per_pass = per_pass
        fuser.graphs = graphs if mode == "captured" else None
        try:
            return time_fuse(fuser, receiver_cache, sharer_cache, device)
        finally:
            fuser.graphs = None

    for mode, per_pass in kinds:  # warm-up: allocator, kernels, the packed weights
        one(mode, per_pass)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(rounds):
        for mode, per_pass in kinds:
            seconds, outputs[mode] = one(mode, per_pass)
            times[mode].append(seconds)
    diff = max(float((a - b).abs().max()) for pa, pb in zip(outputs["per_path"], outputs["batched"])
               for a, b in zip(pa, pb))
    out = {
        "setup": setup, "device": str(device), "dtype": dtype_name, "rounds": rounds, "layers": layers,
        "positions": POSITIONS,
        "threads": torch.get_num_threads(), "fuser_parameters": fuser.parameter_count(),
        "per_path_s": statistics.median(times["per_path"]), "batched_s": statistics.median(times["batched"]),
        "max_abs_diff": diff,
    }
    out["batched_over_per_path"] = out["batched_s"] / out["per_path_s"]
    if graphs is not None:
        # the captured pass alone, as fusing in place over the static caches runs it (no copies in or out, no
        # gate read): device time of the replay, by CUDA events
        replay = graphs._by_length[128].graph
        starts, ends = [torch.cuda.Event(enable_timing=True) for _ in range(rounds)], \
            [torch.cuda.Event(enable_timing=True) for _ in range(rounds)]
        for a, b in zip(starts, ends):
            a.record()
            replay.replay()
            b.record()
        torch.cuda.synchronize(device)
        out["replay_s"] = statistics.median(a.elapsed_time(b) / 1000 for a, b in zip(starts, ends))
        out["captured_s"] = statistics.median(times["captured"])
        out["captured_over_batched"] = out["captured_s"] / out["batched_s"]
        out["captured_max_abs_diff"] = max(float((a - b).abs().max()) for pa, pb in
                                           zip(outputs["captured"], outputs["batched"]) for a, b in zip(pa, pb))
    if device.type == "cuda":
        out["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["fuser_bytes"] = fuser.nbytes()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--setups", default="qwen,tiny")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the CPU tables use 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    for setup in args.setups.split(","):
        for dtype in args.dtypes.split(","):
            r = run(setup, device, dtype, args.rounds)
            if args.json:
                print(json.dumps(r), flush=True)
                continue
            print(f"{setup} {r['device']} {dtype}: per path {r['per_path_s'] * 1000:.1f} ms, batched {r['batched_s'] * 1000:.1f} ms, "
                  f"batched / per path {r['batched_over_per_path']:.2f}, largest difference {r['max_abs_diff']:.2e}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
