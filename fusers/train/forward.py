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

from ..adapters import adapter_rows
from ..fuser import KV, Fuser, cache_kv
from ..generation import prefill
from ..libraries import cache_kwargs
from .data import IGNORE, Batch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class FusionModule(nn.Module):
    """The trainable part: wraps a :class:`Fuser` so DDP sees one module whose forward fuses a cache.

    ``forward(receiver_kv, sharer_kv, valid)`` is :meth:`Fuser.fuse`, the path inference takes:
    Gumbel-sigmoid gates in training mode, the hard gate of inference in eval mode.
    """

    def __init__(self, fuser: Fuser):
        super().__init__()
        self.fuser = fuser

    def forward(self, receiver_kv: list[KV], sharer_kv: list[KV], valid: torch.Tensor | None = None) -> list[KV]:
        return self.fuser.fuse(receiver_kv, sharer_kv, valid)[0]


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
    return run_team_batch(receiver, [sharer], fusion, batch, [batch.sharer_prefix], timer=timer)


def run_team_batch(
    receiver: "PreTrainedModel",
    sharers: "list[PreTrainedModel]",
    fusion: nn.Module | None,
    batch: Batch,
    sharer_prefixes: "list[torch.Tensor]",
    *,
    timer: PhaseTimer | None = None,
    rows: "torch.Tensor | None" = None,
) -> BatchResult:
    """:func:`run_batch` with several sharers (a team, fusers.team), each prefilling its own ids (B, L):
    ``fusion(receiver_kv, *sharer_kvs, valid=..., rows=...)`` fuses them all (``rows`` (sharers, B): who takes
    part in each row; None: every sharer in every row)."""
    from transformers import DynamicCache

    fused_flat: list[torch.Tensor] = []
    has_prefix = batch.receiver_prefix.shape[1] > 0
    with _phase(timer, "receiver_prefill"):
        r_cache = prefill(receiver, batch.receiver_prefix) if has_prefix else DynamicCache(config=receiver.config)
    if fusion is not None and has_prefix:
        with _phase(timer, "sharer_prefill"):
            s_caches = []
            for i, (sharer, ids) in enumerate(zip(sharers, sharer_prefixes)):
                # per-row sharer adapters (the data's sharer_adapter) name the first sharer's; a team's others keep theirs
                with adapter_rows(sharer, batch.sharer_adapters if i == 0 else None):
                    s_caches.append(prefill(sharer, ids))
        with _phase(timer, "fuse"):
            valid = batch.prefix_mask if batch.prefix_padded else None
            fused = fusion(cache_kv(r_cache), *[cache_kv(c) for c in s_caches], valid=valid,
                           **({} if rows is None else {"rows": rows}))
        del s_caches
        fused_flat = [t for kv in fused for t in kv]
        r_cache = DynamicCache(ddp_cache_data=fused, config=receiver.config)
    with _phase(timer, "receiver_answer"):
        hidden = receiver.base_model(
            input_ids=batch.tail, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
            use_cache=True, **cache_kwargs(receiver.base_model, r_cache),
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
