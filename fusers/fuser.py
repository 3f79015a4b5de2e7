"""A fuser: one C2CProjector per receiver layer, a layer map, and what pair it is for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Protocol

import torch
from torch import nn

from .config import ConfigBase
from .errors import PairMismatchError
from .layer_map import LayerLink
from .projector import C2CProjector, ProjectorConfig, gate_open, stacked_residual

if TYPE_CHECKING:
    from transformers import Cache, PretrainedConfig



class CapturedFuse(Protocol):
    """What ``Fuser.graphs`` holds: fuse_cache's passes captured in CUDA graphs (fusers.fuser_graphs.FuserGraphs,
    which builds on this module, as fusers.static_decode does: named here by what the fuser calls, not imported).
    A ``StaticPrefix`` is fusers.static_decode's prompt prefilled into a decoder's static cache."""

    def fuse(self, receiver_cache: "Cache", sharer_cache: "Cache") -> tuple[list[torch.Tensor], list[bool]] | None:
        ...

    def fuse_static(self, receiver: Any, sharer: Any) -> tuple[list[torch.Tensor], list[bool]] | None:
        ...

    def serves_static(self, n: int, receiver: Any, sharer: Any) -> bool:
        ...

ALIGNMENT_STRATEGIES = ("first", "longest")
KV = tuple[torch.Tensor, torch.Tensor]
KINDS = ("key", "value")
# The largest activation of one batched fuser pass, in elements (paths x positions x the widest layer), so
# that long prompts run in several passes instead of holding every path's activations at once: 2**25 is
# 128 MiB in float32, and 56 paths of the Qwen3-0.6B pairs' fusers at 127 positions take 8.2M.
PASS_ELEMENTS = 2**25


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
    sharer: str = ""  # a team's fusion: which sharer's fuser (fusers.team); else ""


class Fuser(nn.Module):
    def __init__(self, projectors: list[C2CProjector], layer_map: list[LayerLink], info: FuserInfo):
        super().__init__()
        self.projectors = nn.ModuleList(projectors)
        self.layer_map = list(layer_map)
        self.info = info
        self.paths_per_pass: int | None = None  # see fuse()
        self._packs: dict[tuple, _Pack] = {}  # projector shape -> its paths' weights, stacked (see _stacks)
        self.graphs: CapturedFuse | None = None  # fuse_cache's passes captured in CUDA graphs (fusers.fuser_graphs)
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
        self, receiver_kv: list[KV], sharer_kv: list[KV], valid: torch.Tensor | None = None, *,
        flags: list[bool] | None = None, length: torch.Tensor | None = None,
    ) -> tuple[list[KV], list[torch.Tensor]]:
        """The one fusion path: inference (:meth:`fuse_cache`) and training (``FusionModule``) both call it.

        ``receiver_kv``/``sharer_kv``: per-layer (K, V), each (B, H, L, D), one sharer entry per
        receiver position. Returns the fused receiver (K, V) of every receiver layer, in layer
        order, like the cache (dtype and layout), and the mean ``w`` of each link's K and V (zero where
        the gate is closed) as () float32 tensors in layer-map order (no device sync). ``valid`` (B, L): the projector
        works position by position, so it runs only on the valid positions, packed into one row;
        padded positions keep the receiver's entries (the attention mask hides them).

        Every K and V path of projectors of one shape runs as one batched pass (``stacked_residual``), at most
        ``paths_per_pass`` paths at a time (None: as many as ``PASS_ELEMENTS`` of activations allow; 1: one
        path after another, as the reference does). In eval mode the gates are the hard threshold, and a
        closed gate skips its path entirely: ``0 * w * proj`` is zero, so this is exact.

        For a pass captured in a CUDA graph (fusers.fuser_graphs): ``flags``, the gates read beforehand (reading
        them here syncs the device), and ``length`` (a () tensor), the positions that are real in caches padded
        to a fixed length: each position is fused on its own, so padding changes only the mean ``w``, which is
        then taken over the first ``length`` positions.
        """
        dtype, device = self.dtype, self.device
        out_dtype = receiver_kv[0][0].dtype
        # bf16/fp16 models under fp32 master weights (training on a GPU): matmuls in the models' dtype
        mixed = out_dtype != dtype
        in_dtype = out_dtype if mixed else dtype
        autocast = torch.autocast(device.type, dtype=out_dtype) if mixed else contextlib.nullcontext()
        if flags is None and not self.training:
            flags = self._gate_flags()  # one device sync for all gates, not one per layer
        zero = torch.zeros((), device=device, dtype=torch.float32)
        fused = [list(kv) for kv in receiver_kv]
        weights: list[torch.Tensor] = [zero] * (2 * len(self.layer_map))
        groups: dict[tuple, list[tuple[int, int]]] = {}  # projector shape -> its (link, K or V) paths that run
        everyone: dict[tuple, list[tuple[int, int]]] = {}  # ... and all of its paths, open or closed
        # in receiver-layer order, whatever the map's order: Gumbel and dropout draws come in that order
        for i, link in sorted(enumerate(self.layer_map), key=lambda item: item[1].receiver_layer):
            r, s = receiver_kv[link.receiver_layer][0], sharer_kv[link.sharer_layer][0]
            if r.shape[2] != s.shape[2]:
                raise PairMismatchError(
                    f"Receiver layer {link.receiver_layer} holds {r.shape[2]} positions and sharer layer "
                    f"{link.sharer_layer} {s.shape[2]}: cache fusion needs one sharer entry per receiver "
                    "position. Prefill both models into full caches (fusers.generation.new_cache)."
                )
            key = _shape_key(self.projectors[link.fuser_index].config)
            for j in range(2):
                everyone.setdefault(key, []).append((i, j))
                if flags is None or flags[2 * i + j]:
                    groups.setdefault(key, []).append((i, j))
        with autocast:
            for key, paths in groups.items():
                for (i, j), out, mean_w in self._fuse_group(paths, everyone[key], receiver_kv, sharer_kv, valid,
                                                            in_dtype, gumbel=flags is None, length=length):
                    fused[self.layer_map[i].receiver_layer][j] = out
                    weights[2 * i + j] = mean_w
        return [(k, v) for k, v in fused], weights

    def _fuse_group(self, paths: list[tuple[int, int]], group: list[tuple[int, int]], receiver_kv: list[KV],
                    sharer_kv: list[KV], valid: torch.Tensor | None, dtype: torch.dtype, gumbel: bool,
                    length: torch.Tensor | None = None) -> Iterator[tuple[tuple[int, int], torch.Tensor, torch.Tensor]]:
        """Fuse ``paths`` (all of one projector shape; ``group``: every path of that shape) in batched passes;
        yield each path's fused (B, Ht, L, Dt) in the cache's dtype and its mean ``w``."""
        cfg = self._projector(paths[0][0]).config
        stacks = self._stacks(_shape_key(cfg), paths, group)
        # training: each path's Gumbel-sigmoid gate, drawn in path order; eval: open (closed paths never run)
        gates = torch.stack([self._projector(i).gate(KINDS[j]) for i, j in paths]) if gumbel else None  # (G,)
        x, rows = self._inputs(paths, receiver_kv, sharer_kv, valid, cfg, dtype)  # (G, M, Ws+Wt)
        m = x.shape[1]
        per_pass = self.paths_per_pass or max(1, PASS_ELEMENTS // (m * _widest(cfg)))
        for a in range(0, len(paths), per_pass):
            b = min(a + per_pass, len(paths))
            proj, w = stacked_residual({n: t[a:b] for n, t in stacks.items()}, x[a:b], cfg.num_layers, cfg.dropout,
                                       self.training)  # (g, M, Wt), (g, M, Ht)
            receiver = x[a:b, :, cfg.source_width:].view(b - a, m, cfg.target_num_heads, cfg.target_dim)
            residual = w.unsqueeze(-1) * proj.view_as(receiver)  # (g, M, Ht, Dt)
            if gates is not None:
                residual = gates[a:b].to(residual.dtype).view(-1, 1, 1, 1) * residual
            out = receiver + residual  # the published step 7
            if length is None:
                mean_w = w.detach().float().mean(dim=(1, 2))  # (g,)
            else:  # padded positions out of the mean (where, not a product: padding may hold anything)
                real = torch.arange(m, device=w.device) < length  # (M,)
                per_position = torch.where(real, w.detach().float().mean(dim=2), 0.0)  # (g, M)
                mean_w = per_position.sum(dim=1) / length.clamp(min=1)
            for g, (i, j) in enumerate(paths[a:b]):
                base = receiver_kv[self.layer_map[i].receiver_layer][j]
                yield (i, j), self._output(out[g], base, rows, valid), mean_w[g]

    def _projector(self, link_index: int) -> C2CProjector:
        return self.projectors[self.layer_map[link_index].fuser_index]

    def _inputs(self, paths: list[tuple[int, int]], receiver_kv: list[KV], sharer_kv: list[KV],
                valid: torch.Tensor | None, cfg: ProjectorConfig, dtype: torch.dtype) -> tuple[torch.Tensor, tuple]:
        """The published steps 1-2 for every path: (G, M, Ws+Wt), sharer then receiver, heads flattened
        head-major, M = the batch's positions (only the valid ones with ``valid``); and (B, N) of the rows.
        A few whole-group copies, not a few per path: on a GPU each copy is a kernel launch."""
        links = [self.layer_map[i] for i, _ in paths]
        r = [receiver_kv[link.receiver_layer][j] for link, (_, j) in zip(links, paths)]  # (B, Ht, L, Dt) each
        s = [sharer_kv[link.sharer_layer][j] for link, (_, j) in zip(links, paths)]  # (B, Hs, L, Ds) each
        device = r[0].device
        if valid is not None:
            r = [pack(t.to(dtype), valid) for t in r]  # (1, Ht, N, Dt)
            s = [pack(t.to(device=device, dtype=dtype), valid) for t in s]
        rs, ss = torch.stack(r), torch.stack(s)  # (G, B, H, N, D); the sharer's on its own device
        g, b, _, n, _ = rs.shape
        x = torch.empty(g, b, n, cfg.source_width + cfg.target_width, device=device, dtype=dtype)
        # (G, B, H, N, D) -> (G, B, N, H, D) into x's sharer and receiver halves; the copy moves and casts too
        x[..., :cfg.source_width].unflatten(-1, (cfg.source_num_heads, cfg.source_dim)).copy_(ss.transpose(2, 3))
        x[..., cfg.source_width:].unflatten(-1, (cfg.target_num_heads, cfg.target_dim)).copy_(rs.transpose(2, 3))
        return x.view(g, b * n, -1), (b, n)

    @staticmethod
    def _output(out: torch.Tensor, base: torch.Tensor, rows: tuple[int, int], valid: torch.Tensor | None) -> torch.Tensor:
        """One path's fused (M, Ht, Dt) back into the cache's (B, Ht, L, Dt) layout and dtype."""
        b, n = rows
        out = out.view(b, n, *out.shape[1:]).transpose(1, 2)  # (B, Ht, N, Dt)
        if valid is not None:
            out = unpack(out, base, valid)
        return out.to(base.dtype).contiguous()

    def _stacks(self, key: tuple, paths: list[tuple[int, int]], group: list[tuple[int, int]]
                ) -> dict[str, torch.Tensor]:
        """The weights of ``paths``, stacked: {name: (G, ...)} in ``paths``' order.

        With gradients (training) they are stacked afresh on every call, so that the gradients reach each
        projector's own parameters. Without (inference), the parameters of all the group's paths are packed
        once into stacks that they then live in as views (the paths that run first), so a pass copies no
        weight and the fuser's memory does not double; moving the fuser, loading weights with ``assign``, or a
        gate that opens or closes packs again.
        """
        per_path = [self._projector(i).weights(KINDS[j]) for i, j in paths]
        if torch.is_grad_enabled() and any(t.requires_grad for w in per_path for t in w.values()):
            return {name: torch.stack([w[name] for w in per_path]) for name in per_path[0]}
        running = set(paths)
        order = paths + [p for p in group if p not in running]
        pack = self._packs.get(key)
        if pack is None or pack.order != order or pack.pointers[:len(paths)] != _pointers(per_path):
            pack = self._packs[key] = _Pack.of([self._projector(i).weights(KINDS[j]) for i, j in order], order)
        return {name: stack[:len(paths)] for name, stack in pack.stacks.items()}

    def _apply(self, fn, recurse: bool = True):  # .to(), .half(), ...: the packs hold the old tensors
        self._packs = {}
        self.graphs = None  # ... and so do the captured passes
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def fuse_cache(self, receiver_cache: "Cache", sharer_cache: "Cache") -> list[LayerFusion]:
        """Fuse every receiver layer of ``receiver_cache`` in place, as inference does (hard gates, no
        dropout, whatever mode the module is in); return per-layer statistics."""
        captured = self.graphs.fuse(receiver_cache, sharer_cache) if self.graphs is not None else None
        if captured is not None:
            return self._layer_fusions(*captured)
        fused, stats = self.fuse_kv(cache_kv(receiver_cache), cache_kv(sharer_cache))
        for layer, (k, v) in zip(receiver_cache.layers, fused):
            layer.keys, layer.values = k, v
        return stats

    @torch.no_grad()
    def fuse_kv(self, receiver_kv: list[KV], sharer_kv: list[KV]) -> tuple[list[KV], list[LayerFusion]]:
        """Inference's fuse (hard gates, no dropout) of per-layer (K, V), written nowhere: the fused (K, V) of every
        receiver layer and per-layer statistics. A team sums several fusers' residuals (fusers.team)."""
        was_training = self.training
        self.eval()
        try:
            fused, weights = self.fuse(receiver_kv, sharer_kv)
        finally:
            self.train(was_training)
        return fused, self._layer_fusions(weights, self._gate_flags())

    @torch.no_grad()
    def fuse_static(self, receiver: Any, sharer: Any) -> list[LayerFusion] | None:
        """Fuse the receiver's static cache in place from the sharer's (two fusers.static_decode.StaticPrefix: both
        prefilled there), by a pass captured over the two caches (fusers.fuser_graphs); None where none can serve, and
        nothing done: copy the caches out and call :meth:`fuse_cache`."""
        captured = self.graphs.fuse_static(receiver, sharer) if self.graphs is not None else None
        return None if captured is None else self._layer_fusions(*captured)

    def _layer_fusions(self, weights: list[torch.Tensor], gates: list[bool]) -> list[LayerFusion]:
        values = torch.stack(weights).tolist() if weights else []
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


@dataclass
class _Pack:
    """The weights of one shape's paths, stacked, with the paths' parameters living in them as views."""

    order: list[tuple[int, int]]  # (link index, 0 for K or 1 for V), the paths that run first
    stacks: dict[str, torch.Tensor]  # name -> (G, ...)
    pointers: list[tuple[int, ...]]  # per path: where its parameters live, to see that they still do

    @classmethod
    def of(cls, per_path: list[dict[str, torch.Tensor]], order: list[tuple[int, int]]) -> "_Pack":
        stacks = {}
        # ordinary tensors even under inference_mode: the parameters live in them, and training updates them
        with torch.inference_mode(False), torch.no_grad():
            for name in per_path[0]:  # one weight at a time: the peak is one stack more, not a second fuser
                stacks[name] = torch.stack([w[name].detach() for w in per_path])
                for g, w in enumerate(per_path):
                    w[name].data = stacks[name][g]
        return cls(order, stacks, _pointers(per_path))


def _pointers(per_path: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    return [tuple(t.data_ptr() for t in w.values()) for w in per_path]


def _shape_key(cfg: ProjectorConfig) -> tuple:
    """Projectors whose paths can share a batched pass: same weight shapes, same dropout."""
    return (cfg.source_width, cfg.target_width, cfg.target_num_heads, cfg.target_dim, cfg.hidden_dim,
            cfg.intermediate_dim, cfg.num_layers, cfg.dropout)


def _widest(cfg: ProjectorConfig) -> int:
    return max(cfg.source_width + cfg.target_width, cfg.hidden_dim, cfg.intermediate_dim, cfg.target_width)
