"""A fuser: one C2CProjector per receiver layer, a layer map, and what pair it is for."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import PairMismatchError
from .layer_map import LayerLink
from .projector import C2CProjector

if TYPE_CHECKING:
    from transformers import Cache, PretrainedConfig

ALIGNMENT_STRATEGIES = ("first", "longest")


@dataclass
class ModelShape:
    """What a fuser needs to know of a model: its layers and KV geometry."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: "PretrainedConfig") -> "ModelShape":
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(int(text.num_hidden_layers), int(kv_heads), int(head_dim))

    def describe(self) -> str:
        return f"{self.layers} layers, {self.kv_heads} KV heads x {self.head_dim}"


@dataclass
class FuserInfo:
    """Which pair a fuser was made for and how it maps and aligns tokens."""

    receiver: str
    sharer: str
    receiver_layers: int
    sharer_layers: int | None = None  # None: the published format does not record it
    mapping: str = "last_aligned"
    is_do_alignment: bool = False
    alignment_strategy: str = "first"
    format: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.alignment_strategy not in ALIGNMENT_STRATEGIES:
            raise ValueError(
                f"alignment_strategy must be one of {', '.join(ALIGNMENT_STRATEGIES)}, got {self.alignment_strategy!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerFusion:
    """What the fuser did at one receiver layer on the last prompt."""

    receiver_layer: int
    sharer_layer: int
    key_gate_open: bool
    value_gate_open: bool
    key_weight: float  # mean of gate * w over heads and positions
    value_weight: float


class Fuser(nn.Module):
    def __init__(self, projectors: list[C2CProjector], layer_map: list[LayerLink], info: FuserInfo):
        super().__init__()
        self.projectors = nn.ModuleList(projectors)
        self.layer_map = list(layer_map)
        self.info = info
        if sorted(link.fuser_index for link in layer_map) != sorted(set(link.fuser_index for link in layer_map)):
            # one projector may not serve two receiver layers: its gate statistics would be ambiguous
            raise ValueError("the layer map uses a fuser index twice")
        for link in layer_map:
            if not 0 <= link.fuser_index < len(projectors):
                raise ValueError(f"layer map names fuser {link.fuser_index}, but there are {len(projectors)}")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def gates(self) -> list[tuple[int, bool, bool]]:
        """(receiver layer, key gate open, value gate open) for each link."""
        flags = self._gate_flags()
        return [(link.receiver_layer, flags[2 * i], flags[2 * i + 1]) for i, link in enumerate(self.layer_map)]

    def check_pair(self, receiver: ModelShape, sharer: ModelShape, receiver_name: str, sharer_name: str) -> None:
        """Raise :class:`PairMismatchError` unless this fuser fits the loaded pair."""
        problems = []
        info = self.info
        covered = sorted(link.receiver_layer for link in self.layer_map)
        if info.receiver_layers != receiver.layers or covered != list(range(receiver.layers)):
            problems.append(f"the fuser covers {info.receiver_layers} receiver layers, the receiver has {receiver.layers}")
        max_sharer = max(link.sharer_layer for link in self.layer_map)
        if info.sharer_layers is not None and info.sharer_layers != sharer.layers:
            problems.append(f"the fuser reads {info.sharer_layers} sharer layers, the sharer has {sharer.layers}")
        elif max_sharer >= sharer.layers:
            problems.append(f"the fuser reads sharer layer {max_sharer}, the sharer has only {sharer.layers}")
        cfg = self.projectors[self.layer_map[0].fuser_index].config
        for link in self.layer_map:
            c = self.projectors[link.fuser_index].config
            if (c.target_num_heads, c.target_dim) != (receiver.kv_heads, receiver.head_dim):
                problems.append(
                    f"receiver layer {link.receiver_layer}: the fuser expects {c.target_num_heads} KV heads x "
                    f"{c.target_dim}, the receiver has {receiver.kv_heads} x {receiver.head_dim}"
                )
                break
            if (c.source_num_heads, c.source_dim) != (sharer.kv_heads, sharer.head_dim):
                problems.append(
                    f"receiver layer {link.receiver_layer}: the fuser expects sharer KV {c.source_num_heads} heads x "
                    f"{c.source_dim}, the sharer has {sharer.kv_heads} x {sharer.head_dim}"
                )
                break
        if problems:
            made_for = (
                f"receiver {info.receiver} ({info.receiver_layers} layers, {cfg.target_num_heads} KV heads x "
                f"{cfg.target_dim}) and sharer {info.sharer} ("
                + (f"{info.sharer_layers} layers, " if info.sharer_layers else "")
                + f"{cfg.source_num_heads} KV heads x {cfg.source_dim})"
            )
            loaded = f"receiver {receiver_name} ({receiver.describe()}) and sharer {sharer_name} ({sharer.describe()})"
            raise PairMismatchError(
                f"This fuser was made for {made_for}, but the loaded pair is {loaded}: "
                + "; ".join(problems)
                + ". Load the pair the fuser was made for, or pick a fuser for this pair."
            )

    @torch.no_grad()
    def fuse_cache(self, receiver_cache: "Cache", sharer_cache: "Cache", start: int = 0) -> list[LayerFusion]:
        """Fuse every receiver layer in place from positions ``start`` on; return per-layer statistics.

        Both caches must hold the same positions (one sharer entry per receiver position).
        Closed gates skip their path entirely: ``0 * w * proj`` is zero, so this is exact.
        """
        dtype, device = self.dtype, self.device
        gates = self._gate_flags()  # one device sync for all gates, not one per layer
        weights: list[torch.Tensor] = []
        zero = torch.zeros((), device=device, dtype=torch.float32)
        for i, link in enumerate(self.layer_map):
            proj = self.projectors[link.fuser_index]
            r_layer = receiver_cache.layers[link.receiver_layer]
            s_layer = sharer_cache.layers[link.sharer_layer]
            for j, (kind, attr) in enumerate((("key", "keys"), ("value", "values"))):
                if not gates[2 * i + j]:
                    weights.append(zero)
                    continue
                r = getattr(r_layer, attr)  # (B, Ht, N, Dt)
                s = getattr(s_layer, attr)  # (B, Hs, N, Ds)
                r_part = r[:, :, start:]
                s_part = s[:, :, start:].to(device=device, dtype=dtype)
                if r_part.shape[2] != s_part.shape[2]:
                    raise PairMismatchError(
                        f"Receiver layer {link.receiver_layer} holds {r_part.shape[2]} positions and sharer layer "
                        f"{link.sharer_layer} {s_part.shape[2]}: cache fusion needs one sharer entry per receiver "
                        "position. Prefill both models into full caches (fusers.generation.new_cache)."
                    )
                res, w = proj.residual(kind, s_part, r_part.to(dtype))
                fused = (r_part.to(dtype) + res).to(r.dtype).contiguous()  # (B, Ht, N, Dt), like the cache
                if start == 0:
                    setattr(r_layer, attr, fused)
                else:
                    r[:, :, start:] = fused
                weights.append(w.float().mean())
        values = torch.stack(weights).tolist() if weights else []
        return [
            LayerFusion(link.receiver_layer, link.sharer_layer, gates[2 * i], gates[2 * i + 1],
                        values[2 * i], values[2 * i + 1])
            for i, link in enumerate(self.layer_map)
        ]

    def _gate_flags(self) -> list[bool]:
        """[key open, value open] per link, in layer-map order."""
        logits = []
        for link in self.layer_map:
            proj = self.projectors[link.fuser_index]
            logits += [proj.key_gate_logit, proj.value_gate_logit]
        return (torch.stack(logits) > 0).tolist()
