"""One batch through the frozen pair and the fuser, fused exactly as the engine fuses at inference.

Both models prefill the prompt without its last token (``fusers.generation.prefill``: the
decoder stack only, no LM head, no autograd); every receiver layer's cache is replaced
by its projector's output from its mapped sharer layer; the receiver then feeds the last
prompt token and the answer on top of the fused cache, and the loss is the next-token
cross-entropy on the answer tokens. Only the fuser carries gradients.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..generation import base_model, prefill
from .data import IGNORE, Batch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..fuser import Fuser

KV = tuple[torch.Tensor, torch.Tensor]


class FusionModule(nn.Module):
    """The trainable part: wraps a :class:`Fuser` so DDP sees one module whose forward fuses a cache.

    ``forward(receiver_kv, sharer_kv, valid)`` takes per-layer (K, V) of both caches, each
    (B, H, L, D), and returns the fused receiver (K, V) per receiver layer. It calls each
    ``C2CProjector`` as it is: Gumbel-sigmoid gates in training mode, the hard gate of
    inference in eval mode. The projector works position by position, so it runs only on the
    ``valid`` (B, L) positions, packed into one row; padded positions keep the receiver's
    entries (the attention mask hides them). ``valid=None``: nothing is padded.
    """

    def __init__(self, fuser: "Fuser"):
        super().__init__()
        self.fuser = fuser
        self.links = sorted(fuser.layer_map, key=lambda link: link.receiver_layer)

    def forward(self, receiver_kv: list[KV], sharer_kv: list[KV], valid: torch.Tensor | None = None) -> list[KV]:
        weight = self.fuser.projectors[0].key_in.weight
        dtype = weight.dtype
        out_dtype = receiver_kv[0][0].dtype
        # bf16/fp16 models on a GPU: fp32 master weights, matmuls in the models' dtype (as inference runs them)
        autocast = (torch.autocast(weight.device.type, dtype=out_dtype) if out_dtype != dtype
                    else contextlib.nullcontext())
        fused: list[KV] = []
        with autocast:
            for link in self.links:
                proj = self.fuser.projectors[link.fuser_index]
                rk, rv = receiver_kv[link.receiver_layer]  # (B, Ht, L, Dt)
                sk, sv = sharer_kv[link.sharer_layer]  # (B, Hs, L, Ds)
                if out_dtype == dtype:
                    sk, sv = sk.to(dtype), sv.to(dtype)
                if valid is None:
                    k, v = proj(sk, sv, rk, rv)
                else:
                    k, v = proj(*(pack(t, valid) for t in (sk, sv, rk, rv)))  # (1, H, N, D)
                    k, v = unpack(k, rk, valid), unpack(v, rv, valid)
                fused.append((k.to(out_dtype), v.to(out_dtype)))
        return fused


def pack(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (1, H, N, D): the N valid positions of all rows, in order."""
    return x.transpose(1, 2)[valid].transpose(0, 1).unsqueeze(0)


def unpack(packed: torch.Tensor, base: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(1, H, N, D) back into a copy of ``base`` (B, H, L, D) at the valid positions."""
    out = base.transpose(1, 2).to(packed.dtype, copy=True)  # (B, L, H, D)
    out[valid] = packed[0].transpose(0, 1)
    return out.transpose(1, 2)


@dataclass
class BatchResult:
    loss_sum: torch.Tensor  # () float32: summed cross-entropy over answer tokens (with grad in training)
    correct: torch.Tensor  # () answer tokens whose argmax prediction is right
    first_correct: torch.Tensor  # () ... of them, answers' first tokens
    answer_tokens: int
    first_tokens: int
    fused: list[torch.Tensor] = field(default_factory=list)  # flat fused K/V tensors (training: the backward seam)


class PhaseTimer:
    """Wall time per phase, summed over calls; device-synchronised so GPU work lands in its phase."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        from ..devices import synchronize

        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _phase(timer: PhaseTimer | None, name: str):
    return timer.phase(name) if timer is not None else contextlib.nullcontext()


def cache_kv(cache) -> list[KV]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def run_batch(
    receiver: "PreTrainedModel",
    sharer: "PreTrainedModel",
    fusion: nn.Module | None,
    batch: Batch,
    *,
    timer: PhaseTimer | None = None,
) -> BatchResult:
    """Loss and accuracy of one batch; ``fusion=None`` measures the receiver alone.

    Run under ``torch.no_grad()`` for evaluation; in training, the result's ``loss_sum``
    backpropagates into the fuser only (see :func:`backward`).
    """
    from transformers import DynamicCache

    fused_flat: list[torch.Tensor] = []
    has_prefix = batch.receiver_prefix.shape[1] > 0
    with _phase(timer, "receiver_prefill"):
        r_cache = prefill(receiver, batch.receiver_prefix) if has_prefix else DynamicCache(config=receiver.config)
    if fusion is not None and has_prefix:
        with _phase(timer, "sharer_prefill"):
            s_cache = prefill(sharer, batch.sharer_prefix)
        with _phase(timer, "fuse"):
            valid = batch.prefix_mask if batch.prefix_padded else None
            fused = fusion(cache_kv(r_cache), cache_kv(s_cache), valid)
        del s_cache
        fused_flat = [t for kv in fused for t in kv]
        r_cache = DynamicCache(ddp_cache_data=fused, config=receiver.config)
    with _phase(timer, "receiver_answer"):
        hidden = base_model(receiver)(
            input_ids=batch.tail, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
            cache=r_cache, use_cache=True,
        ).last_hidden_state  # (B, T, hidden)
        valid = batch.labels != IGNORE  # (B, T)
        # the LM head only where there is an answer token to predict
        logits = lm_logits(receiver, hidden[valid]).float()  # (n, V)
        labels = batch.labels[valid]  # (n,)
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        with torch.no_grad():
            hits = logits.argmax(-1) == labels  # (n,)
            correct, first_correct = hits.sum(), (hits & batch.first[valid]).sum()  # tensors: no device sync
    return BatchResult(loss_sum, correct, first_correct, batch.answer_tokens, batch.tail.shape[0], fused_flat)


def lm_logits(model: "PreTrainedModel", hidden: torch.Tensor) -> torch.Tensor:
    """The model's LM head on some hidden states (with Gemma-style final soft-capping where configured)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def backward(result: BatchResult, scale: float, timer: PhaseTimer | None = None) -> None:
    """Backpropagate ``scale * loss_sum``: through the frozen receiver to the fused cache, then through the fuser.

    Two stages with the same result as one ``backward()``; the seam lets the benchmark time
    the frozen receiver's share apart from the fuser's.
    """
    loss = result.loss_sum * scale
    if not result.fused:
        return  # nothing was fused (one-token prompts): no gradient reaches the fuser
    with _phase(timer, "receiver_backward"):
        grads = torch.autograd.grad(loss, result.fused, allow_unused=True)
    pairs = [(t, g) for t, g in zip(result.fused, grads) if g is not None]
    with _phase(timer, "fuser_backward"):
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
