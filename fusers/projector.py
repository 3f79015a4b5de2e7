"""The C2CProjector: one fuser per receiver layer, in the published layout.

The maths and parameter names follow ``published-fusers.md`` exactly, so a
published state dict loads with no renaming. Shapes in comments: B batch,
H KV heads, N positions, D head dim; ``s``/``t`` mark sharer/receiver.
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
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class FFNBlock(nn.Module):
    """Pre-norm residual block: ``x + w2(gelu(w1(rmsnorm(x))))``."""

    def __init__(self, dim: int, inner: int, dropout: float):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.w1 = nn.Linear(dim, inner, bias=False)
        self.w2 = nn.Linear(inner, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.w2(F.gelu(self.w1(self.norm(x)))))


class FFNStack(nn.Module):
    def __init__(self, dim: int, inner: int, num_blocks: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(FFNBlock(dim, inner, dropout) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class C2CProjector(nn.Module):
    """Maps one sharer layer's K/V into one receiver layer's K/V space (a residual)."""

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        self.config = config
        c = config
        for kind in ("key", "value"):
            setattr(self, f"{kind}_in", nn.Linear(c.source_width + c.target_width, c.hidden_dim))
            setattr(self, f"{kind}_mlp1", FFNStack(c.hidden_dim, c.intermediate_dim, 1, c.dropout))
            setattr(self, f"{kind}_scalar_mlp2", FFNStack(c.hidden_dim, c.hidden_dim, 1, c.dropout))
            setattr(self, f"{kind}_scalar_head", nn.Linear(c.hidden_dim, c.target_num_heads))
            setattr(self, f"{kind}_proj_mlp2", FFNStack(c.hidden_dim, c.intermediate_dim, c.num_layers - 2, c.dropout))
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

    def residual(self, kind: str, sharer: torch.Tensor, receiver: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w * proj, w)`` for one of K or V, before the gate.

        sharer: (B, Hs, N, Ds); receiver: (B, Ht, N, Dt).
        Returns the residual (B, Ht, N, Dt) and the weights (B, Ht, N, 1).
        """
        c = self.config
        b, _, n, _ = receiver.shape
        s_flat = sharer.transpose(1, 2).reshape(b, n, c.source_width)  # (B, N, Hs*Ds), head-major
        t_flat = receiver.transpose(1, 2).reshape(b, n, c.target_width)  # (B, N, Ht*Dt)
        h = getattr(self, f"{kind}_in")(torch.cat([s_flat, t_flat], dim=-1))  # (B, N, hidden)
        h = getattr(self, f"{kind}_mlp1")(h)
        proj = getattr(self, f"{kind}_proj_out")(getattr(self, f"{kind}_proj_mlp2")(h))  # (B, N, Ht*Dt)
        proj = proj.view(b, n, c.target_num_heads, c.target_dim).transpose(1, 2)  # (B, Ht, N, Dt)
        w = torch.sigmoid(getattr(self, f"{kind}_scalar_head")(getattr(self, f"{kind}_scalar_mlp2")(h)))  # (B, N, Ht)
        w = w.transpose(1, 2).unsqueeze(-1)  # (B, Ht, N, 1)
        return w * proj, w

    def fuse(self, kind: str, sharer: torch.Tensor, receiver: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One fused layer's K or V, the published step 7: ``receiver + gate * w * proj``.

        sharer: (B, Hs, N, Ds); receiver: (B, Ht, N, Dt). Returns the fused (B, Ht, N, Dt) and
        ``w`` (B, Ht, N, 1). Training and inference both fuse through here (``Fuser.fuse``).
        """
        res, w = self.residual(kind, sharer, receiver)
        return receiver + self.gate(kind).to(receiver.dtype) * res, w

    def forward(
        self, sharer_k: torch.Tensor, sharer_v: torch.Tensor, receiver_k: torch.Tensor, receiver_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused (K, V), each (B, Ht, N, Dt)."""
        return self.fuse("key", sharer_k, receiver_k)[0], self.fuse("value", sharer_v, receiver_v)[0]


def gate_open(logit: torch.Tensor) -> torch.Tensor:
    """The inference gate: open where the logit is positive (bool, same shape)."""
    return logit > 0
