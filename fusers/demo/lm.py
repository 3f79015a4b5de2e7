"""Pre-training the demo's receiver and sharers: a plain causal-LM loop on generated examples.

This trains the base models only. The fuser is trained by :mod:`fusers.train`, as any user's
fuser is. Examples are rendered exactly as the engine renders prompts (ChatML, generation
prompt included) and answers exactly as ``fusers.train.data.answer_ids`` cuts them, so the
models see at inference the token sequences they learned from.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.nn import functional as F

from .world import Sample

IGNORE = -100


@dataclass
class LMConfig:
    """One pre-training run."""

    steps: int = 1000
    batch_size: int = 64  # examples per optimizer step
    tokens_per_chunk: int = 2048  # examples of similar length are packed into chunks of about this many tokens
    lr: float = 2e-3
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 50
    # Lookahead: the question's closing positions also learn, through a head dropped after training, to
    # predict the answer's value from the residual stream after layer ``lookahead_layer``. The model then
    # knows the answer while it reads the question (large LLMs do; tiny ones otherwise look it up only when
    # they write it), so its cache over the prompt carries the answer.
    lookahead_layer: int | None = None
    lookahead_weight: float = 0.5
    lookahead_positions: int = 6  # the question's last token and the template tokens after it
    # Train only the parameters whose names match this regular expression (all when None). The ablation's
    # sharer relearns its facts in the MLPs alone, so the rest of its internal code stays the first sharer's.
    trainable: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.tokens_per_chunk < 1:
            raise ValueError("steps, batch_size and tokens_per_chunk must be positive")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_chatml(messages: Sequence[dict[str, str]]) -> str:
    """The demo tokenizer's chat template (ChatML) with the generation prompt, as plain string formatting.

    The same text as ``fusers.chat.render`` gives for the demo tokenizer (a test checks it); formatting it
    directly is a hundred times faster than the Jinja template, which matters for a million examples.
    """
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


Encoded = tuple[list[int], list[int], list[int]]  # ids, loss mask, lookahead targets (IGNORE where none)


def encode_samples(tokenizer: Any, samples: Sequence[Sample], lookahead_positions: int = 0) -> list[Encoded]:
    """(ids, loss mask, lookahead) per sample. Chats learn their answer (end of turn included); texts learn
    every token; samples with a lookahead value label their prompt's last ``lookahead_positions`` positions
    but the final one (which the engine never fuses) with the value's token."""
    eos, end_of_text = tokenizer.eos_token, "<|endoftext|>"
    prompts = [render_chatml(s.messages) if s.messages else "" for s in samples]
    targets = [s.answer + (eos if s.messages else end_of_text) for s in samples]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    out = []
    for s, p, t in zip(samples, p_ids, t_ids):
        value = value_token(tokenizer, s.lookahead) if s.lookahead is not None and lookahead_positions else None
        out.append(labelled(p, t, value, lookahead_positions))
    return out


def labelled(prompt: list[int], target: list[int], lookahead: int | None, positions: int) -> Encoded:
    """(ids, loss mask, lookahead) of one example: the target's tokens learn; with a ``lookahead`` token, the
    prompt's last ``positions`` positions but its final one (which the engine never fuses) learn to predict it."""
    ahead = [IGNORE] * (len(prompt) + len(target))
    if lookahead is not None and positions:
        for i in range(max(0, len(prompt) - 1 - positions), len(prompt) - 1):
            ahead[i] = lookahead
    return prompt + target, [0] * len(prompt) + [1] * len(target), ahead


def value_token(tokenizer: Any, value: str) -> int:
    """The single token of a value as it appears inside a sentence (after a space)."""
    ids = tokenizer(" " + value, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the value {value!r} is {len(ids)} tokens; the tokenizer must keep values whole")
    return ids[0]


def chunks(encoded: list[Encoded], tokens_per_chunk: int) -> list[list[int]]:
    """Indices of examples grouped by length so that padding wastes little. Examples that learn only the
    lookahead (no labelled token) go in chunks of their own: those stop at the lookahead layer."""
    def learns_tokens(i: int) -> bool:
        return any(encoded[i][1])

    order = sorted(range(len(encoded)), key=lambda i: (learns_tokens(i), len(encoded[i][0])))
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = len(encoded[i][0])  # sorted: the newest is the longest
        if current and (longest * (len(current) + 1) > tokens_per_chunk
                        or learns_tokens(i) != learns_tokens(current[-1])):
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


def pad(encoded: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels, lookahead), each (B, T), right-padded; labels are next tokens."""
    width = max(len(e[0]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    ahead = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for row, (tokens, mask, look) in enumerate(encoded):
        n = len(tokens)
        ids[row, :n] = torch.tensor(tokens)
        attn[row, :n] = 1
        target = torch.tensor(tokens[1:])
        keep = torch.tensor(mask[1:], dtype=torch.bool)
        labels[row, : n - 1] = torch.where(keep, target, torch.full_like(target, IGNORE))
        ahead[row, :n] = torch.tensor(look)
    return ids, attn, labels, ahead


class LookaheadHead(torch.nn.Module):
    """Reads the value from a middle layer's residual stream through the model's own (tied) output embedding,
    so the answer is written in the token space every layer shares. Dropped after training."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = torch.nn.RMSNorm(hidden, eps=1e-6)
        self.proj = torch.nn.Linear(hidden, hidden, bias=False)
        torch.nn.init.eye_(self.proj.weight)

    def forward(self, model: Any, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the whole vocabulary, or over ``vocab`` (sorted token ids) only: a model with a large
        vocabulary learns which of a few values it is about to say at a small fraction of the cost."""
        x = self.proj(self.norm(hidden))
        if vocab is None:
            return model.get_output_embeddings()(x)
        return F.linear(x, model.get_output_embeddings().weight[vocab])  # (m, len(vocab))


def chunk_loss(model: Any, ids: torch.Tensor, attn: torch.Tensor, labels: torch.Tensor, ahead: torch.Tensor,
               head: LookaheadHead | None = None, layer: int | None = None, weight: float = 0.0,
               vocab: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over the labelled positions, with the LM head run on those positions only
    (plus the weighted lookahead loss, when a head is given, over ``vocab`` only when given)."""
    look = head is not None and bool((ahead != IGNORE).any())
    valid = labels != IGNORE  # (B, T)
    if look and not bool(valid.any()):
        # only the lookahead learns here: the layers above its layer cannot change the loss, so they do not run
        mid = hidden_after(model, layer, ids, attn)[ahead != IGNORE]  # (m, H)
        target = ahead[ahead != IGNORE] if vocab is None else torch.searchsorted(vocab, ahead[ahead != IGNORE])
        return weight * F.cross_entropy(head(model, mid, vocab).float(), target, reduction="sum"), 0, 0
    out = model.base_model(input_ids=ids, attention_mask=attn, output_hidden_states=look)
    hidden = out.last_hidden_state  # (B, T, H)
    logits = model.get_output_embeddings()(hidden[valid]).float()  # (n, V)
    target = labels[valid]
    loss = F.cross_entropy(logits, target, reduction="sum")
    correct = int((logits.detach().argmax(-1) == target).sum())
    if look:
        where = ahead != IGNORE
        mid = out.hidden_states[layer + 1][where]  # (m, H): the residual stream after layer `layer`
        target = ahead[where] if vocab is None else torch.searchsorted(vocab, ahead[where])
        loss = loss + weight * F.cross_entropy(head(model, mid, vocab).float(), target, reduction="sum")
    return loss, int(valid.sum()), correct


class _Enough(Exception):
    """Raised by a forward hook to stop a model after the layer whose output it has."""


def hidden_after(model: Any, layer: int, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """(B, T, H): the residual stream after decoder layer ``layer`` (``hidden_states[layer + 1]``), with the
    layers above it not run."""
    captured: dict[str, torch.Tensor] = {}

    def stop(module: Any, args: Any, output: Any) -> None:
        captured["hidden"] = output[0] if isinstance(output, tuple) else output
        raise _Enough

    handle = model.base_model.layers[layer].register_forward_hook(stop)
    try:
        model.base_model(input_ids=ids, attention_mask=attn)
    except _Enough:
        pass
    finally:
        handle.remove()
    return captured["hidden"]


def lr_at(step: int, cfg: LMConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = min((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(
    model: Any,
    tokenizer: Any,
    samples: Iterator[Sample],
    cfg: LMConfig,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    encode: Callable[[Sequence[Sample], int], list[Encoded]] | None = None,
    lookahead_vocab: Sequence[int] | None = None,
    head: LookaheadHead | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``cfg.steps`` batches from ``samples``; returns the logged history.

    ``encode(samples, lookahead_positions)`` turns samples into ids (default: the demo's ChatML,
    :func:`encode_samples`); ``lookahead_vocab`` limits the lookahead to those token ids (the values);
    ``head`` is the lookahead head to use (default: a new one), trained unless its parameters are frozen."""
    if encode is None:
        def encode(batch: Sequence[Sample], positions: int) -> list[Encoded]:
            return encode_samples(tokenizer, batch, positions)
    vocab = None if lookahead_vocab is None else torch.tensor(sorted(set(lookahead_vocab)))
    torch.manual_seed(cfg.seed)
    model.train()
    if cfg.trainable is not None:
        pattern = re.compile(cfg.trainable)
        for name, p in model.named_parameters():
            p.requires_grad_(bool(pattern.search(name)))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"no parameter name matches trainable={cfg.trainable!r}")
    if cfg.lookahead_layer is None:
        head = None
    else:
        head = head or LookaheadHead(model.config.get_text_config().hidden_size)
        params += [p for p in head.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    plain = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": plain, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    pad_id = tokenizer.pad_token_id
    history: list[dict[str, Any]] = []
    window = {"loss": 0.0, "tokens": 0, "correct": 0, "seen": 0}
    began = time.perf_counter()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = [next(samples) for _ in range(cfg.batch_size)]
        encoded = encode(batch, cfg.lookahead_positions if head is not None else 0)
        n_target = sum(sum(e[1][1:]) for e in encoded)
        for idx in chunks(encoded, cfg.tokens_per_chunk):
            ids, attn, labels, ahead = pad([encoded[i] for i in idx], pad_id)
            loss, n, correct = chunk_loss(model, ids, attn, labels, ahead, head, cfg.lookahead_layer,
                                          cfg.lookahead_weight, vocab)
            (loss / max(n_target, 1)).backward()
            window["loss"] += float(loss.detach())
            window["tokens"] += n
            window["correct"] += correct
            window["seen"] += int(attn.sum())
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - began
            record = {"step": step + 1, "steps": cfg.steps, "loss": window["loss"] / max(window["tokens"], 1),
                      "token_accuracy": window["correct"] / max(window["tokens"], 1), "lr": lr_at(step, cfg),
                      "elapsed_s": elapsed, "tokens_per_s": window["seen"] / max(elapsed, 1e-9) if not history
                      else window["seen"] / max(elapsed - history[-1]["elapsed_s"], 1e-9)}
            history.append(record)
            if progress is not None:
                progress(record)
            window = {"loss": 0.0, "tokens": 0, "correct": 0, "seen": 0}
    model.eval()
    return history


def sample_stream(curriculum: Any, seed: int) -> Iterator[Sample]:
    rng = random.Random(seed)
    while True:
        yield curriculum.draw(curriculum.kind(rng), rng)
