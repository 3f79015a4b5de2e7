"""The fuser's inference pass captured in CUDA graphs, one per padded prompt length.

``Fuser.fuse`` on a GPU is launch-bound: 28 Qwen3-0.6B layers' fusers are about 120 GFLOP, well under a
millisecond of an H200, yet the pass took 11.7-13 ms of kernel launches. Captured, a pass is one replay. A graph
holds fixed shapes, so prompts are padded up to a bucket (:data:`BUCKETS`): every position is fused on its own,
so the real positions' results do not depend on the padding, and the mean ``w`` is taken over the real ones
(``Fuser.fuse(length=...)``). Longer prompts, or caches on two devices, take the eager pass.

Where both models prefill into static caches (fusers.static_decode), a pass reads both caches where they lie and
writes the fused keys and values back into the receiver's (:meth:`FuserGraphs.fuse_static`): no copy in or out,
and no host work but the replay. Otherwise the caches are copied into the bucket's own inputs (:meth:`fuse`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .fuser import Fuser, ModelShape, cache_kv
from .static_decode import DecodePath, StaticDecoder, StaticPrefix, first_line, unavailable_reason

if TYPE_CHECKING:
    from transformers import Cache

# Padded prompt lengths (positions the fuser sees: the prompt but its last token). The first ones are captured
# when the pair loads; a longer prompt captures its bucket on first use; past the last, the eager pass.
BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)
CAPTURED_AT_LOAD = 5  # buckets up to 1024 positions


@dataclass
class _Bucket:
    graph: Any  # torch.cuda.CUDAGraph, or None where this runs without graphs (the CPU tests)
    receiver_in: list[tuple[torch.Tensor, torch.Tensor]]  # per receiver layer (1, Ht, P, Dt)
    sharer_in: list[tuple[torch.Tensor, torch.Tensor]]  # per sharer layer (1, Hs, P, Ds)
    length: torch.Tensor  # () the real positions
    fused: list[tuple[torch.Tensor, torch.Tensor]]  # the pass's outputs, per receiver layer
    weights: list[torch.Tensor]  # () mean w per link and K/V


class FuserGraphs:
    """A fuser's captured passes for one pair. ``graphs=False`` runs the same padded passes without capture."""

    def __init__(self, fuser: Fuser, receiver: ModelShape, sharer: ModelShape, dtype: torch.dtype,
                 device: torch.device, graphs: bool = True, buckets: tuple[int, ...] = BUCKETS):
        self.fuser, self.receiver, self.sharer = fuser, receiver, sharer
        self.dtype, self.device, self.use_graphs, self.buckets = dtype, device, graphs, buckets
        self.pool = torch.cuda.graph_pool_handle() if graphs else None  # one pool: replays never overlap
        self._by_length: dict[int, _Bucket] = {}
        self._static: dict[tuple[int, int, int], _Bucket] = {}  # (padded, receiver, sharer decoder ids) -> pass
        self._made_for = self._fingerprint()

    def _fingerprint(self) -> tuple:
        """What a captured pass bakes in: the gates (a closed one's path is left out) and the packed weight
        stacks it reads (``Fuser._stacks``: packed again when a gate flips or weights are loaded with ``assign``)."""
        stacks = tuple(t.data_ptr() for pack in self.fuser._packs.values() for t in pack.stacks.values())
        return tuple(self.fuser._gate_flags()), stacks

    def _check(self) -> None:
        """Forget the captured passes if the gates flipped or the weights moved since they were captured."""
        if (self._by_length or self._static) and self._fingerprint() != self._made_for:
            self._by_length.clear()  # capture again, into a new pool: the old graphs' pool goes with them
            self._static.clear()
            self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
            self._made_for = self._fingerprint()

    @property
    def _flags(self) -> list[bool]:
        return list(self._made_for[0])

    def prepare(self, count: int = CAPTURED_AT_LOAD, receiver: "StaticDecoder | None" = None,
                sharer: "StaticDecoder | None" = None) -> None:
        """Capture the first ``count`` buckets: in place over the two decoders' static caches where both are
        given, else over the bucket's own inputs."""
        for length in self.buckets[:count]:
            if receiver is not None and sharer is not None:
                self._static_bucket(length, receiver, sharer)
            else:
                self._bucket(length)

    def _bucket(self, padded: int) -> _Bucket:
        bucket = self._by_length.get(padded)
        if bucket is not None:
            return bucket
        r, s = self.receiver, self.sharer

        def zeros(shape: ModelShape) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [tuple(torch.zeros(1, shape.kv_heads, padded, shape.head_dim, dtype=self.dtype,
                                      device=self.device) for _ in range(2)) for _ in range(shape.layers)]

        receiver_in, sharer_in = zeros(r), zeros(s)
        length = torch.tensor(padded, device=self.device)
        flags = list(self._flags)

        def run() -> tuple[list, list]:
            with torch.no_grad():
                return self.fuser.fuse(receiver_in, sharer_in, flags=flags, length=length)

        if not self.use_graphs:
            run()  # as the warm-up below: packs the weights
            bucket = _Bucket(None, receiver_in, sharer_in, length, [], [])
            bucket.run = run  # type: ignore[attr-defined]
        else:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up off the capture: packs the weights, picks the kernels
                    run()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                fused, weights = run()
            bucket = _Bucket(graph, receiver_in, sharer_in, length, fused, weights)
        self._by_length[padded] = bucket
        self._made_for = self._fingerprint()  # the first pass packs the weights: from now on they stay put
        return bucket

    def _static_bucket(self, padded: int, receiver: "StaticDecoder", sharer: "StaticDecoder") -> _Bucket:
        key = (padded, id(receiver), id(sharer))
        bucket = self._static.get(key)
        if bucket is not None:
            return bucket
        # views of the first ``padded`` positions of each layer: fixed addresses for the decoders' lifetime
        receiver_in = [(layer.keys[:, :, :padded], layer.values[:, :, :padded]) for layer in receiver.cache.layers]
        sharer_in = [(layer.keys[:, :, :padded], layer.values[:, :, :padded]) for layer in sharer.cache.layers]
        length = torch.tensor(padded, device=self.device)
        flags = list(self._flags)

        def run(write: bool) -> list[torch.Tensor]:
            with torch.inference_mode():  # the static caches are inference tensors
                fused, weights = self.fuser.fuse(receiver_in, sharer_in, flags=flags, length=length)
                if write:  # the warm-ups read only: a bucket captured mid-answer leaves the prefilled cache be
                    for (k_in, v_in), (k, v) in zip(receiver_in, fused):
                        if k is not k_in:  # a layer whose gates are closed comes back as it was
                            k_in.copy_(k)
                        if v is not v_in:
                            v_in.copy_(v)
            return weights

        if not self.use_graphs:
            run(False)
            bucket = _Bucket(None, receiver_in, sharer_in, length, [], [])
            bucket.run = lambda: run(True)  # type: ignore[attr-defined]
        else:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    run(False)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                weights = run(True)
            bucket = _Bucket(graph, receiver_in, sharer_in, length, [], weights)
        self._static[key] = bucket
        self._made_for = self._fingerprint()
        return bucket

    def serves_static(self, n: int, receiver: "StaticDecoder", sharer: "StaticDecoder") -> bool:
        """Whether :meth:`fuse_static` fuses ``n`` prefilled positions of these two decoders' caches."""
        padded = next((b for b in self.buckets if b >= n), None)
        return (padded is not None and n > 0 and padded <= min(receiver.tokens, sharer.tokens)
                and receiver.model.device == sharer.model.device == self.device)

    def fuse_static(self, receiver: "StaticPrefix", sharer: "StaticPrefix"
                    ) -> tuple[list[torch.Tensor], list[bool]] | None:
        """Fuse the receiver's static cache in place from the sharer's, both prefilled with the same number of
        positions, by a captured pass; returns the mean ``w`` of each link's K and V and the gates, or None
        where this cannot serve (the eager pass must)."""
        n = receiver.length
        if sharer.length != n or not self.serves_static(n, receiver.decoder, sharer.decoder):
            return None
        self._check()
        padded = next(b for b in self.buckets if b >= n)
        bucket = self._static_bucket(padded, receiver.decoder, sharer.decoder)
        with torch.inference_mode():
            bucket.length.fill_(n)
            if bucket.graph is not None:
                bucket.graph.replay()
                weights = bucket.weights
            else:
                weights = bucket.run()  # type: ignore[attr-defined]
        return list(weights), list(self._flags)

    def fuse(self, receiver_cache: "Cache", sharer_cache: "Cache") -> tuple[list[torch.Tensor], list[bool]] | None:
        """Fuse ``receiver_cache`` in place as ``Fuser.fuse_cache`` does, by a captured pass; returns the mean
        ``w`` of each link's K and V and the gates, or None where the eager pass must serve (a prompt longer
        than the last bucket, caches elsewhere than the captured device)."""
        receiver_kv, sharer_kv = cache_kv(receiver_cache), cache_kv(sharer_cache)
        if not receiver_kv or not sharer_kv:
            return None
        n = receiver_kv[0][0].shape[2]
        padded = next((b for b in self.buckets if b >= n), None)
        if (padded is None or n == 0 or receiver_kv[0][0].shape[0] != 1
                or any(t.device != self.device for kv in receiver_kv + sharer_kv for t in kv)):
            return None
        self._check()
        bucket = self._bucket(padded)
        with torch.no_grad():
            for dst, src in zip(bucket.receiver_in + bucket.sharer_in, receiver_kv + sharer_kv):
                dst[0][:, :, :n].copy_(src[0])
                dst[1][:, :, :n].copy_(src[1])
            bucket.length.fill_(n)
            if bucket.graph is not None:
                bucket.graph.replay()
                fused, weights = bucket.fused, bucket.weights
            else:
                fused, weights = bucket.run()  # type: ignore[attr-defined]
            for layer, (k, v) in zip(receiver_cache.layers, fused):
                # copies: the next replay writes over the graph's outputs
                layer.keys, layer.values = k[:, :, :n].clone(), v[:, :, :n].clone()
        return list(weights), list(self._flags)


def prepare_fuser(fuser: Any, receiver: Any, sharer: Any, enabled: bool = True) -> DecodePath:
    """Capture ``fuser``'s inference passes where both models share its CUDA device: in place over the two models'
    static caches (fusers.static_decode) where both have a decoder, else over copies."""
    reason = ("turned off" if not enabled else unavailable_reason(receiver.model, False)
              or ("" if sharer.device == receiver.device else "the sharer is on another device"))
    fuser.graphs = None
    if reason:
        return DecodePath("fuser", False, False, 0.0, reason)
    t0 = time.perf_counter()
    try:
        graphs = FuserGraphs(fuser, receiver.shape, sharer.shape, receiver.dtype, receiver.device)
        graphs.prepare(receiver=receiver.decoder, sharer=sharer.decoder)
        torch.cuda.synchronize(receiver.device)
    except Exception as exc:  # noqa: BLE001  (the eager pass serves, and the reason is said)
        return DecodePath("fuser", False, False, time.perf_counter() - t0, f"capture failed: {first_line(exc)}")
    fuser.graphs = graphs
    where = "in place over the static caches" if receiver.decoder and sharer.decoder else "over copies"
    return DecodePath("fuser", True, True, time.perf_counter() - t0, "",
                      f"{where}, for prompts up to {BUCKETS[CAPTURED_AT_LOAD - 1]} positions, longer on first use")
