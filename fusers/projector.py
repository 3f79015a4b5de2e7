"""The C2CProjector: one fuser per receiver layer, in the published layout.

The maths and parameter names follow ``published-fusers.md`` exactly, so a
published state dict loads with no renaming. The modules hold the weights under
those names; the maths is :func:`stacked_residual`, which runs many projectors'
paths of one shape as one batched pass (``Fuser.fuse`` calls it). Shapes in
comments: G paths, B batch, H KV heads, N (or M) positions, D head dim;
``s``/``t`` mark sharer/receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .config import ConfigBase, option, required


@dataclass
class ProjectorConfig(ConfigBase):
    """Hyperparameters of one C2CProjector (the published ``init_args``)."""

    config_name: ClassVar[str] = "projector arguments"

    source_dim: int = required("Sharer head dim.")
    target_dim: int = required("Receiver head dim.")
    source_num_heads: int = required("Sharer KV head count.")
    target_num_heads: int = required("Receiver KV head count.")
    hidden_dim: int = option(1024, "Width of the fuser's hidden stream.")
    intermediate_dim: int = option(1024, "Inner width of the FFN blocks.")
    num_layers: int = option(3, "Depth of the projection path; the published fusers use 3 (must be >= 3).")
    dropout: float = option(0.1, "Dropout inside the FFN blocks during training.")
    initial_temperature: float = option(1.0, "Gumbel-sigmoid gate temperature at the start of training.")
    final_temperature: float = option(0.001, "Gate temperature reached after anneal_steps (geometric annealing).")
    anneal_steps: int = option(1000, "Training steps over which the gate temperature anneals.")
    dtype: str = option("float32", "Dtype the checkpoint was trained in (weights are cast to the receiver's at load).")
    zero_init: bool = option(False, "Start the projection outputs at zero so an untrained fuser changes nothing.")

    def __post_init__(self) -> None:
        for name in ("source_dim", "target_dim", "source_num_heads", "target_num_heads", "hidden_dim",
                     "intermediate_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"projector {name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_layers, int) or self.num_layers < 3:
            raise ValueError(f"projector num_layers must be >= 3, got {self.num_layers!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"projector dropout must be in [0, 1), got {self.dropout!r}")
        if self.initial_temperature <= 0 or self.final_temperature <= 0:
            raise ValueError("projector gate temperatures must be positive")
        if self.anneal_steps < 0:
            raise ValueError("projector anneal_steps must be >= 0")
        self.dtype = str(self.dtype).removeprefix("torch.")

    @property
    def source_width(self) -> int:
        return self.source_dim * self.source_num_heads

    @property
    def target_width(self) -> int:
        return self.target_dim * self.target_num_heads


class RMSNorm(nn.Module):
    """Holds a learnable RMSNorm weight under the published name; the maths is :func:`_rmsnorm`."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))


class FFNBlock(nn.Module):
    """Pre-norm residual block ``x + w2(gelu(w1(rmsnorm(x))))``: its weights, under the published names."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.w1 = nn.Linear(dim, inner, bias=False)
        self.w2 = nn.Linear(inner, dim, bias=False)


class FFNStack(nn.Module):
    def __init__(self, dim: int, inner: int, num_blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(FFNBlock(dim, inner) for _ in range(num_blocks))


class C2CProjector(nn.Module):
    """Maps one sharer layer's K/V into one receiver layer's K/V space (a residual)."""

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        self.config = config
        c = config
        for kind in ("key", "value"):
            setattr(self, f"{kind}_in", nn.Linear(c.source_width + c.target_width, c.hidden_dim))
            setattr(self, f"{kind}_mlp1", FFNStack(c.hidden_dim, c.intermediate_dim, 1))
            setattr(self, f"{kind}_scalar_mlp2", FFNStack(c.hidden_dim, c.hidden_dim, 1))
            setattr(self, f"{kind}_scalar_head", nn.Linear(c.hidden_dim, c.target_num_heads))
            setattr(self, f"{kind}_proj_mlp2", FFNStack(c.hidden_dim, c.intermediate_dim, c.num_layers - 2))
            setattr(self, f"{kind}_proj_out", nn.Linear(c.hidden_dim, c.target_width))
            setattr(self, f"{kind}_gate_logit", nn.Parameter(torch.zeros(())))
        self.register_buffer("gate_temperature", torch.tensor(float(c.initial_temperature)))
        if c.zero_init:
            self.zero_outputs()

    @torch.no_grad()
    def zero_outputs(self) -> None:
        """Zero the projection outputs: the fuser then leaves the receiver's cache unchanged."""
        for kind in ("key", "value"):
            out = getattr(self, f"{kind}_proj_out")
            out.weight.zero_()
            out.bias.zero_()

    @torch.no_grad()
    def set_anneal_step(self, step: int) -> float:
        """Geometric annealing from initial to final temperature over ``anneal_steps``."""
        c = self.config
        frac = 1.0 if c.anneal_steps == 0 else min(max(step / c.anneal_steps, 0.0), 1.0)
        temp = c.initial_temperature * (c.final_temperature / c.initial_temperature) ** frac
        self.gate_temperature.fill_(temp)
        return temp

    def gate(self, kind: str) -> torch.Tensor:
        """() float32 gate of K or V: Gumbel-sigmoid while training, the hard threshold at inference."""
        logit = getattr(self, f"{kind}_gate_logit")
        if self.training:
            # Gumbel-sigmoid: logistic noise on the logit, squashed at the annealed temperature
            u = torch.rand((), device=logit.device, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)
            return torch.sigmoid((logit.float() + noise) / self.gate_temperature.float())
        return gate_open(logit).float()

    def weights(self, kind: str) -> dict[str, torch.Tensor]:
        """The K or V path's parameters by their names without the ``key_``/``value_`` prefix (``in.weight``,
        ``mlp1.blocks.0.w1.weight``...), the gate logit aside: what :func:`stacked_residual` reads."""
        prefix = f"{kind}_"
        return {name[len(prefix):]: param for name, param in self.named_parameters()
                if name.startswith(prefix) and name != f"{kind}_gate_logit"}


def stacked_residual(
    weights: dict[str, torch.Tensor], x: torch.Tensor, num_layers: int, dropout: float = 0.0, training: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The published steps 3-5 for G projector paths at once (each a layer's K or V path).

    ``weights``: :meth:`C2CProjector.weights` names, each stacked along a leading axis of G paths of one shape;
    ``x``: (G, M, Ws+Wt), sharer then receiver, flattened head-major (steps 1-2), M positions.
    Returns ``proj`` (G, M, Wt) and ``w`` (G, M, Ht) (before the sigmoid's product and the gate).
    One batched matmul per weight for all G paths: a fuser's passes are small, so on a GPU one pass per path
    is launch-bound, and on a CPU its per-call overheads add up.
    """
    def ffn(h: torch.Tensor, name: str, blocks: int) -> torch.Tensor:
        for j in range(blocks):
            block = f"{name}.blocks.{j}."
            y = _linear(F.gelu(_linear(_rmsnorm(h, weights[block + "norm.weight"]), weights[block + "w1.weight"])),
                        weights[block + "w2.weight"])
            h = h + F.dropout(y, dropout, training)
        return h

    h = ffn(_linear(x, weights["in.weight"], weights["in.bias"]), "mlp1", 1)  # (G, M, hidden)
    proj = _linear(ffn(h, "proj_mlp2", num_layers - 2), weights["proj_out.weight"], weights["proj_out.bias"])
    w = torch.sigmoid(_linear(ffn(h, "scalar_mlp2", 1), weights["scalar_head.weight"], weights["scalar_head.bias"]))
    return proj, w


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(G, M, in) @ (G, out, in)^T (+ (G, out)) -> (G, M, out)."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm in float32, cast back, times the (G, dim) weight."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight.unsqueeze(1) * x32.to(x.dtype)


def gate_open(logit: torch.Tensor) -> torch.Tensor:
    """The inference gate: open where the logit is positive (bool, same shape)."""
    return logit > 0
