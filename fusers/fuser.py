"""A fuser: one C2CProjector per receiver layer, a layer map, and what pair it is for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .config import ConfigBase
from .errors import PairMismatchError
from .layer_map import LayerLink
from .projector import C2CProjector, gate_open

if TYPE_CHECKING:
    from transformers import Cache, PretrainedConfig

ALIGNMENT_STRATEGIES = ("first", "longest")
KV = tuple[torch.Tensor, torch.Tensor]


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
class FuserInfo(ConfigBase):
    """Which pair a fuser was made for and how it maps and aligns tokens."""

    config_name: ClassVar[str] = "fuser fields"

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

    def manifest(self) -> dict[str, Any]:
        """What this fuser is for and how it maps layers, as the manifest (and ``c2c fuser inspect``) write it."""
        info = self.info
        return {
            "receiver": info.receiver,
            "sharer": info.sharer,
            "receiver_layers": info.receiver_layers,
            "sharer_layers": info.sharer_layers,
            "mapping": info.mapping,
            "alignment": {"enabled": info.is_do_alignment, "strategy": info.alignment_strategy},
            "layer_map": [[link.receiver_layer, link.sharer_layer, link.fuser_index] for link in self.layer_map],
        }

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

    def fuse(
        self, receiver_kv: list[KV], sharer_kv: list[KV], valid: torch.Tensor | None = None
    ) -> tuple[list[KV], list[torch.Tensor]]:
        """The one fusion path: inference (:meth:`fuse_cache`) and training (``FusionModule``) both call it.

        ``receiver_kv``/``sharer_kv``: per-layer (K, V), each (B, H, L, D), one sharer entry per
        receiver position. Returns the fused receiver (K, V) of every receiver layer, in layer
        order, like the cache (dtype and layout), and the mean ``w`` of each link's K and V (zero where
        the gate is closed) as () float32 tensors in layer-map order (no device sync). ``valid`` (B, L): the projector
        works position by position, so it runs only on the valid positions, packed into one row;
        padded positions keep the receiver's entries (the attention mask hides them).

        In eval mode the gates are the hard threshold, and a closed gate skips its path entirely:
        ``0 * w * proj`` is zero, so this is exact.
        """
        dtype, device = self.dtype, self.device
        out_dtype = receiver_kv[0][0].dtype
        # bf16/fp16 models under fp32 master weights (training on a GPU): matmuls in the models' dtype
        mixed = out_dtype != dtype
        autocast = torch.autocast(device.type, dtype=out_dtype) if mixed else contextlib.nullcontext()
        flags = None if self.training else self._gate_flags()  # one device sync for all gates, not one per layer
        zero = torch.zeros((), device=device, dtype=torch.float32)
        fused = list(receiver_kv)
        weights: list[torch.Tensor] = [zero] * (2 * len(self.layer_map))
        with autocast:
            # in receiver-layer order, whatever the map's order: dropout and Gumbel draws come in that order
            for i, link in sorted(enumerate(self.layer_map), key=lambda item: item[1].receiver_layer):
                proj = self.projectors[link.fuser_index]
                layer = []
                for j, kind in enumerate(("key", "value")):
                    r = receiver_kv[link.receiver_layer][j]  # (B, Ht, L, Dt)
                    s = sharer_kv[link.sharer_layer][j].to(device=device, dtype=out_dtype if mixed else dtype)
                    if r.shape[2] != s.shape[2]:
                        raise PairMismatchError(
                            f"Receiver layer {link.receiver_layer} holds {r.shape[2]} positions and sharer layer "
                            f"{link.sharer_layer} {s.shape[2]}: cache fusion needs one sharer entry per receiver "
                            "position. Prefill both models into full caches (fusers.generation.new_cache)."
                        )
                    if flags is not None and not flags[2 * i + j]:
                        layer.append(r)
                        continue
                    r_in = r if mixed else r.to(dtype)
                    if valid is None:
                        out, w = proj.fuse(kind, s, r_in)  # (B, Ht, L, Dt), (B, Ht, L, 1)
                    else:
                        out, w = proj.fuse(kind, pack(s, valid), pack(r_in, valid))  # (1, H, N, D)
                        out = unpack(out, r, valid)
                    layer.append(out.to(out_dtype).contiguous())
                    weights[2 * i + j] = w.detach().float().mean()
                fused[link.receiver_layer] = (layer[0], layer[1])
        return fused, weights

    @torch.no_grad()
    def fuse_cache(self, receiver_cache: "Cache", sharer_cache: "Cache") -> list[LayerFusion]:
        """Fuse every receiver layer of ``receiver_cache`` in place, as inference does (hard gates, no
        dropout, whatever mode the module is in); return per-layer statistics."""
        was_training = self.training
        self.eval()
        try:
            fused, weights = self.fuse(cache_kv(receiver_cache), cache_kv(sharer_cache))
        finally:
            self.train(was_training)
        for layer, (k, v) in zip(receiver_cache.layers, fused):
            layer.keys, layer.values = k, v
        values = torch.stack(weights).tolist() if weights else []
        gates = self._gate_flags()
        return [
            LayerFusion(link.receiver_layer, link.sharer_layer, gates[2 * i], gates[2 * i + 1],
                        values[2 * i], values[2 * i + 1])
            for i, link in enumerate(self.layer_map)
        ]

    def _gate_flags(self) -> list[bool]:
        """[key open, value open] per link, in layer-map order, by the inference gate."""
        logits = []
        for link in self.layer_map:
            proj = self.projectors[link.fuser_index]
            logits += [proj.key_gate_logit, proj.value_gate_logit]
        return gate_open(torch.stack(logits)).tolist()


def cache_kv(cache: "Cache") -> list[KV]:
    """Per-layer (K, V) of a transformers cache, each (B, H, L, D)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def pack(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (1, H, N, D): the N valid positions of all rows, in order."""
    return x.transpose(1, 2)[valid].transpose(0, 1).unsqueeze(0)


def unpack(packed: torch.Tensor, base: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(1, H, N, D) back into a copy of ``base`` (B, H, L, D) at the valid positions."""
    out = base.transpose(1, 2).to(packed.dtype, copy=True)  # (B, L, H, D)
    out[valid] = packed[0].transpose(0, 1)
    return out.transpose(1, 2)
