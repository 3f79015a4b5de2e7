"""The published fuser maths, written from the spec with plain tensor ops (no fusers.projector).

Tests compare the engine against this, and write published checkpoints with it, so a mistake
in the engine's modules cannot hide behind itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

FFN_NAMES = ("mlp1", "scalar_mlp2", "proj_mlp2")


def ffn_blocks(args: dict, name: str) -> int:
    return args["num_layers"] - 2 if name == "proj_mlp2" else 1


def ffn_inner(args: dict, name: str) -> int:
    return args["hidden_dim"] if name == "scalar_mlp2" else args["intermediate_dim"]


def random_state(args: dict, generator: torch.Generator, gate_key: float, gate_value: float) -> dict:
    """A state dict with the spec's names and shapes, random values (norm weights not all ones)."""
    src = args["source_dim"] * args["source_num_heads"]
    tgt = args["target_dim"] * args["target_num_heads"]
    hid = args["hidden_dim"]

    def rnd(*shape, scale=None):
        scale = scale if scale is not None else 1 / math.sqrt(shape[-1])
        return torch.randn(*shape, generator=generator) * scale

    state = {}
    for kind, gate in (("key", gate_key), ("value", gate_value)):
        state[f"{kind}_in.weight"] = rnd(hid, src + tgt)
        state[f"{kind}_in.bias"] = rnd(hid, scale=0.1)
        for name in FFN_NAMES:
            inner = ffn_inner(args, name)
            for j in range(ffn_blocks(args, name)):
                state[f"{kind}_{name}.blocks.{j}.norm.weight"] = 1 + 0.3 * torch.randn(hid, generator=generator)
                state[f"{kind}_{name}.blocks.{j}.w1.weight"] = rnd(inner, hid)
                state[f"{kind}_{name}.blocks.{j}.w2.weight"] = rnd(hid, inner)
        state[f"{kind}_scalar_head.weight"] = rnd(args["target_num_heads"], hid)
        state[f"{kind}_scalar_head.bias"] = rnd(args["target_num_heads"], scale=0.1)
        state[f"{kind}_proj_out.weight"] = rnd(tgt, hid)
        state[f"{kind}_proj_out.bias"] = rnd(tgt, scale=0.1)
        state[f"{kind}_gate_logit"] = torch.tensor(float(gate))
    state["gate_temperature"] = torch.tensor(float(args.get("initial_temperature", 1.0)))
    return state


def _rmsnorm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _ffn(state, prefix, blocks, x):
    for j in range(blocks):
        y = _rmsnorm(x, state[f"{prefix}.blocks.{j}.norm.weight"])
        x = x + _gelu(y @ state[f"{prefix}.blocks.{j}.w1.weight"].T) @ state[f"{prefix}.blocks.{j}.w2.weight"].T
    return x


def fuse(state: dict, args: dict, kind: str, sharer: torch.Tensor, receiver: torch.Tensor) -> torch.Tensor:
    """Steps 1-7 of the spec for K (kind="key") or V: sharer (B,Hs,N,Ds), receiver (B,Ht,N,Dt)."""
    b, ht, n, dt = receiver.shape
    s_flat = sharer.permute(0, 2, 1, 3).reshape(b, n, -1)
    r_flat = receiver.permute(0, 2, 1, 3).reshape(b, n, -1)
    x = torch.cat([s_flat, r_flat], dim=-1)
    h = x @ state[f"{kind}_in.weight"].T + state[f"{kind}_in.bias"]
    h = _ffn(state, f"{kind}_mlp1", 1, h)
    p = _ffn(state, f"{kind}_proj_mlp2", args["num_layers"] - 2, h)
    proj = p @ state[f"{kind}_proj_out.weight"].T + state[f"{kind}_proj_out.bias"]
    proj = proj.reshape(b, n, ht, dt).permute(0, 2, 1, 3)
    s = _ffn(state, f"{kind}_scalar_mlp2", 1, h)
    w = torch.sigmoid(s @ state[f"{kind}_scalar_head.weight"].T + state[f"{kind}_scalar_head.bias"])
    w = w.permute(0, 2, 1).unsqueeze(-1)
    g = 1.0 if float(state[f"{kind}_gate_logit"]) > 0 else 0.0
    return receiver + g * w * proj


def write_published(path: Path, receiver: str, sharer: str, layer_map: list[tuple[int, int]], args: dict,
                    states: list[dict], *, alignment: str | None = None, mapping: str = "last_aligned") -> Path:
    """Write a pair folder exactly as the spec describes the published layout."""
    final = path / "final"
    final.mkdir(parents=True, exist_ok=True)
    json_args = dict(args)
    json_args["dtype"] = {"__type__": "torch.dtype", "value": str(args.get("dtype", "float32"))}
    config = {
        "model": {
            "base_model": receiver,
            "teacher_model": sharer,
            "is_do_alignment": alignment is not None,
            "alignment_strategy": alignment or "first",
            "mapping": mapping,
            "projector": {"type": "C2CProjector", "params": json_args},
        }
    }
    (path / "config.json").write_text(json.dumps(config))
    links = {str(t): [[s, i]] for i, (t, s) in enumerate(layer_map)}
    (final / "projector_config.json").write_text(json.dumps({"0": {"1": links}}))
    for i, state in enumerate(states):
        (final / f"projector_{i}.json").write_text(json.dumps({"class": "C2CProjector", "init_args": json_args}))
        torch.save(state, final / f"projector_{i}.pt")
    return path
