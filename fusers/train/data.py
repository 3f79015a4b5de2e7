"""Training data: JSONL conversations, tokenized as inference tokenizes them, and padded batches.

Each line is ``{"messages": [{"role": ..., "content": ...}, ...]}``. The last assistant
turn is the target; the turns before it are the prompt (rendered with the generation
prompt, exactly as the engine renders a question), and turns after it are ignored.
A line may add ``"sharer_adapter": NAME``: the sharer then prefills it with its LoRA adapter
of that name (a sharer holding several adapters; see :func:`fusers.adapters.adapter_rows`).
A team's line may add ``"sharers": [NAME, ...]``: only those sharers' caches are fused into it
(the others' residuals are left out, as ``fusion:NAME`` runs), so the fusers also learn what
each one alone should add; without it, every sharer takes part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..chat import ROLES, check_messages, render, unicode_problem
from ..errors import DataError, PairMismatchError, PromptError

if TYPE_CHECKING:
    import torch

    from ..alignment import TokenAligner
    from ..pair import LoadedModel

IGNORE = -100  # label of padded tail positions


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # the prompt: ends with a user turn
    answer: str  # the last assistant turn's content
    line: int  # 1-based line in its file (0 for conversations given in memory)
    sharer_adapter: str | None = None  # the sharer's adapter that prefills it (None: the one active)
    sharers: tuple[str, ...] | None = None  # a team's sharers fused into it (None: every one)


def load_conversations(path: str | Path) -> list[Conversation]:
    """Read a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Training data {path} does not exist; give a JSONL file with one conversation per line.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8 JSONL.") from exc
    out = []
    # JSONL lines end at "\n" only: str.splitlines would also split at U+2028, U+0085 and others, which JSON
    # writers leave unescaped inside strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} line {number} is not JSON ({exc.msg} at column {exc.colno}); each line must be one object "
                'like {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}.'
            ) from None
        out.append(parse_conversation(record, f"{path} line {number}", number))
    if not out:
        raise DataError(f"{path} holds no conversations (the file is empty); add one JSON object per line.")
    return out


def parse_conversation(record: Any, where: str, line: int = 0) -> Conversation:
    """Validate one ``{"messages": [...]}`` record and split it into prompt and target."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise DataError(f'{where}: expected an object with a "messages" list, got {type(record).__name__}.')
    messages = record["messages"]
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str) or msg.get("role") not in ROLES:
            raise DataError(f"{where}, message {i}: each message needs a role ({', '.join(ROLES)}) and text content.")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError(f"{where} has no assistant turn; the last assistant message is the answer the fuser learns.")
    try:
        prompt = check_messages(messages[:last])
    except PromptError as exc:
        raise DataError(f"{where}: the turns before the last assistant turn are not a prompt: {exc}") from None
    problem = unicode_problem(messages[last]["content"])
    if problem:
        raise DataError(f"{where}: the answer {problem}")
    adapter = record.get("sharer_adapter")
    if adapter is not None and (not isinstance(adapter, str) or not adapter):
        raise DataError(f'{where}: "sharer_adapter" must name one of the sharer\'s adapters, got {adapter!r}.')
    sharers = record.get("sharers")
    if sharers is not None:
        if (not isinstance(sharers, list) or not sharers or not all(isinstance(n, str) and n for n in sharers)
                or len(set(sharers)) != len(sharers)):
            raise DataError(f'{where}: "sharers" must be a non-empty list of distinct sharer names (a team\'s), '
                            f"got {sharers!r}.")
        sharers = tuple(sharers)
    return Conversation(prompt, messages[last]["content"], line, adapter, sharers)


def conversations_from(data: "str | Path | Iterable[Any]") -> list[Conversation]:
    """A JSONL path, or records (``{"messages": [...]}`` dicts or Conversations) given in memory."""
    if isinstance(data, (str, Path)):
        return load_conversations(data)
    out = []
    for i, record in enumerate(data, start=1):
        out.append(record if isinstance(record, Conversation) else parse_conversation(record, f"conversation {i}", i))
    if not out:
        raise DataError("No training conversations were given.")
    return out


# -- tokenization ----------------------------------------------------------------------------------------------


@dataclass
class Example:
    """One conversation in token ids. ``prompt`` and ``sharer`` have one id per receiver position."""

    prompt: "torch.Tensor"  # (P,) receiver ids, generation prompt included
    sharer: "torch.Tensor"  # (P,) sharer ids (the receiver's when the tokenizers are not aligned)
    answer: "torch.Tensor"  # (A,) receiver ids of the target turn, end of turn included
    truncated: bool
    line: int
    sharer_adapter: str | None = None
    sharers: tuple[str, ...] | None = None

    @property
    def tokens(self) -> int:
        return int(self.prompt.shape[0] + self.answer.shape[0])


def answer_ids(tokenizer: Any, prompt: Sequence[dict[str, str]], answer: str, thinking: bool,
               eos_ids: Sequence[int]) -> list[int]:
    """The receiver's ids for the target turn: the template's text after the generation prompt.

    Tokenized on its own, as the receiver emits it after the prompt, and cut after the first
    end-of-sequence token (decoding stops there).
    """
    full = render(tokenizer, list(prompt) + [{"role": "assistant", "content": answer}], thinking,
                  add_generation_prompt=False)
    head = render(tokenizer, prompt, thinking)
    tail = full[len(head):] if full.startswith(head) else answer + (tokenizer.eos_token or "")
    ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    eos = set(eos_ids)
    for i, token in enumerate(ids):
        if token in eos:
            return ids[: i + 1]
    return ids


def tokenize(conversations: Sequence[Conversation], receiver: "LoadedModel", sharer: "LoadedModel",
             aligner: "TokenAligner | None", max_length: int, thinking: bool) -> list[Example]:
    """Token ids for every conversation, with the prompt encoded exactly as the engine encodes it."""
    import torch

    from ..chat import encode

    vocab = sharer.model.get_input_embeddings().num_embeddings
    out = []
    for conv in conversations:
        if aligner is not None:
            aligned = aligner.align_chat(conv.messages, thinking)
            r_ids, s_ids = aligned.receiver_ids, aligned.sharer_ids
        else:
            r_ids = encode(receiver.tokenizer, conv.messages, thinking)
            s_ids = r_ids
            if r_ids and max(r_ids) >= vocab:
                raise PairMismatchError(
                    f"Conversation on line {conv.line}: the receiver's token ids reach {max(r_ids)}, past the sharer's "
                    f"vocabulary of {vocab}. These tokenizers differ: train with --alignment longest (or first)."
                )
        a_ids = answer_ids(receiver.tokenizer, conv.messages, conv.answer, thinking, receiver.eos_token_ids)
        if not a_ids:
            raise DataError(f"Conversation on line {conv.line}: the answer encodes to no tokens.")
        r_ids, s_ids, a_ids, cut = truncate(r_ids, s_ids, a_ids, max_length)
        out.append(Example(torch.tensor(r_ids), torch.tensor(s_ids), torch.tensor(a_ids), cut, conv.line,
                           conv.sharer_adapter, conv.sharers))
    return out


def truncate(r_ids: list[int], s_ids: list[int], a_ids: list[int], max_length: int):
    """Fit prompt + answer in ``max_length``: the answer keeps at least half, the prompt loses its start."""
    if len(r_ids) + len(a_ids) <= max_length:
        return r_ids, s_ids, a_ids, False
    keep_answer = max(max_length - len(r_ids), min(len(a_ids), max_length // 2))
    a_ids = a_ids[:keep_answer]
    keep_prompt = max_length - len(a_ids)
    # the prompt's end (the question and the generation prompt) is what the answer follows
    return r_ids[-keep_prompt:], s_ids[-keep_prompt:], a_ids, True


# -- batches ---------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A padded micro-batch in the layout the fused forward needs.

    The fused prefix (prompt minus its last token) is right-padded to ``L`` columns: real
    tokens keep positions ``0..Lᵢ-1`` and, the attention being causal, never see the
    padding. The tail (last prompt token, then the answer) follows at columns ``L..``,
    at positions ``Lᵢ..``, with the padded prefix columns masked out.
    """

    receiver_prefix: "torch.Tensor"  # (B, L)
    sharer_prefix: "torch.Tensor"  # (B, L)
    tail: "torch.Tensor"  # (B, T): last prompt token, answer[:-1]
    labels: "torch.Tensor"  # (B, T): answer, IGNORE on padding
    attention_mask: "torch.Tensor"  # (B, L + T)
    prefix_mask: "torch.Tensor"  # (B, L) bool: the real (not padded) prefix positions
    prefix_padded: bool  # whether any prefix position is padding
    position_ids: "torch.Tensor"  # (B, T)
    first: "torch.Tensor"  # (B, T) bool: the label is an answer's first token
    tokens: int  # real prompt + answer tokens in the batch
    answer_tokens: int
    sharer_adapters: tuple[str | None, ...] | None = None  # each row's sharer adapter; None: the active one for all
    sharers: tuple[tuple[str, ...] | None, ...] | None = None  # each row's team sharers; None: every one for all

    def to(self, device: "torch.device") -> "Batch":
        moved = {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in vars(self).items()}
        return Batch(**moved)


def collate(examples: Sequence[Example], receiver_pad: int, sharer_pad: int) -> Batch:
    import torch
    from torch.nn.utils.rnn import pad_sequence

    prefix_len = torch.tensor([e.prompt.shape[0] - 1 for e in examples])  # (B,)
    tail_len = torch.tensor([e.answer.shape[0] for e in examples])  # (B,)
    r_prefix = pad_sequence([e.prompt[:-1] for e in examples], batch_first=True, padding_value=receiver_pad)
    s_prefix = pad_sequence([e.sharer[:-1] for e in examples], batch_first=True, padding_value=sharer_pad)
    tail = pad_sequence([torch.cat([e.prompt[-1:], e.answer[:-1]]) for e in examples], batch_first=True,
                        padding_value=receiver_pad)
    labels = pad_sequence([e.answer for e in examples], batch_first=True, padding_value=IGNORE)
    b, big_l, big_t = len(examples), r_prefix.shape[1], tail.shape[1]
    cols_l = torch.arange(big_l).expand(b, big_l)
    cols_t = torch.arange(big_t).expand(b, big_t)
    mask = torch.cat([cols_l < prefix_len[:, None], cols_t < tail_len[:, None]], dim=1).long()  # (B, L + T)
    return Batch(
        receiver_prefix=r_prefix,
        sharer_prefix=s_prefix,
        tail=tail,
        labels=labels,
        attention_mask=mask,
        prefix_mask=mask[:, :big_l].bool(),
        prefix_padded=bool((prefix_len < big_l).any()),
        position_ids=prefix_len[:, None] + cols_t,
        first=(cols_t == 0).clone(),
        tokens=int(prefix_len.sum() + b + tail_len.sum()),
        answer_tokens=int(tail_len.sum()),
        sharer_adapters=tuple(e.sharer_adapter for e in examples) if any(e.sharer_adapter for e in examples) else None,
        sharers=tuple(e.sharers for e in examples) if any(e.sharers for e in examples) else None,
    )
