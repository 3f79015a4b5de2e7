"""Token alignment for pairs whose tokenizers differ.

Cache fusion needs one sharer cache entry per receiver position. The receiver's
tokens are the base: each receiver token gets exactly one sharer token.

* Message text: each receiver token is decoded and re-encoded with the sharer's
  tokenizer; strategy ``first`` takes the first sharer token, ``longest`` the
  one with the longest string (the published ``alignment_strategy``).
* Chat-template text (role markers, special tokens): each template section of
  the receiver is matched to the same section of the sharer's own template,
  position by position, so the sharer sees its own markers.

When the two templates cannot be split into matching sections, every token is
aligned as message text, with special tokens mapped by role (eos, bos, pad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .chat import render


@dataclass
class Alignment:
    receiver_ids: list[int]
    sharer_ids: list[int]  # same length: one sharer token per receiver position
    sectioned: bool  # False when the fallback (token by token throughout) was used


class TokenAligner:
    def __init__(self, receiver_tokenizer: Any, sharer_tokenizer: Any, strategy: str = "first"):
        if strategy not in ("first", "longest"):
            raise ValueError(f"alignment strategy must be 'first' or 'longest', got {strategy!r}")
        self.rt = receiver_tokenizer
        self.st = sharer_tokenizer
        self.strategy = strategy
        self._memo: dict[int, int] = {}
        self._receiver_special = set(receiver_tokenizer.all_special_ids)

    def align_token(self, receiver_id: int) -> int:
        """One sharer token for one receiver token."""
        if receiver_id in self._memo:
            return self._memo[receiver_id]
        if receiver_id in self._receiver_special:
            out = self._special(receiver_id)
        else:
            piece = self.rt.decode([receiver_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            candidates = self.st.encode(piece, add_special_tokens=False) if piece else []
            if not candidates:
                out = self._fallback_id()
            elif self.strategy == "first" or len(candidates) == 1:
                out = candidates[0]
            else:
                lengths = [len(self.st.decode([c], skip_special_tokens=False, clean_up_tokenization_spaces=False))
                           for c in candidates]
                out = candidates[lengths.index(max(lengths))]  # ties: the first longest
        self._memo[receiver_id] = out
        return out

    def align_ids(self, receiver_ids: Sequence[int]) -> list[int]:
        return [self.align_token(i) for i in receiver_ids]

    def align_chat(self, messages: Sequence[dict[str, str]], thinking: bool = False) -> Alignment:
        r_text = render(self.rt, messages, thinking)
        s_text = render(self.st, messages, thinking)
        r_enc = self.rt(r_text, add_special_tokens=False, return_offsets_mapping=True)
        s_enc = self.st(s_text, add_special_tokens=False, return_offsets_mapping=True)
        r_ids, s_ids = list(r_enc["input_ids"]), list(s_enc["input_ids"])
        r_sections = _sections(self.rt, r_text, r_enc["offset_mapping"], messages, thinking)
        s_sections = _sections(self.st, s_text, s_enc["offset_mapping"], messages, thinking)
        if r_sections is None or s_sections is None or [k for k, _, _ in r_sections] != [k for k, _, _ in s_sections]:
            return Alignment(r_ids, self.align_ids(r_ids), sectioned=False)
        out: list[int] = []
        for (kind, r0, r1), (_, s0, s1) in zip(r_sections, s_sections):
            if kind == "message" or s1 == s0:
                out.extend(self.align_ids(r_ids[r0:r1]))
            else:
                n_r, n_s = r1 - r0, s1 - s0
                # spread the receiver's template tokens over the sharer's; the last maps to the last
                out.extend(s_ids[s0 + (i * n_s) // n_r if i < n_r - 1 else s1 - 1] for i in range(n_r))
        return Alignment(r_ids, out, sectioned=True)

    def _special(self, receiver_id: int) -> int:
        for attr in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
            if getattr(self.rt, attr) == receiver_id and getattr(self.st, attr) is not None:
                return getattr(self.st, attr)
        token = self.rt.convert_ids_to_tokens(receiver_id)
        sid = self.st.convert_tokens_to_ids(token)
        if sid is not None and sid != self.st.unk_token_id:
            return sid
        return self._fallback_id()

    def _fallback_id(self) -> int:
        for attr in ("unk_token_id", "pad_token_id", "eos_token_id"):
            value = getattr(self.st, attr)
            if value is not None:
                return value
        return 0


def _sections(tokenizer: Any, text: str, offsets: Sequence[tuple[int, int]], messages: Sequence[dict[str, str]],
              thinking: bool):
    """Split token positions into alternating ("template", a, b) / ("message", a, b) runs.

    Message spans are found by rendering the conversation with unique markers in place of the
    contents, so a message that repeats template text ("user") is never matched inside the
    template. Returns None when the template changes contents (strips them, say) so the spans
    cannot be trusted.
    """
    marked = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
    skeleton = render(tokenizer, marked, thinking)
    spans = []
    rebuilt = []
    pos = 0
    for i, msg in enumerate(messages):
        marker = f"\ue000{i}\ue001"
        at = skeleton.find(marker, pos)
        if at < 0 or skeleton.count(marker) != 1:
            return None
        rebuilt.append(skeleton[pos:at])
        start = sum(len(part) for part in rebuilt)
        rebuilt.append(msg["content"])
        spans.append((start, start + len(msg["content"])))
        pos = at + len(marker)
    rebuilt.append(skeleton[pos:])
    if "".join(rebuilt) != text:
        return None
    n = len(offsets)
    sections = []
    prev = 0
    for start, end in spans:
        if end == start:
            continue
        a = prev
        while a < n and offsets[a][1] <= start:
            a += 1
        b = a
        while b < n and offsets[b][0] < end:
            b += 1
        if a > prev:
            sections.append(("template", prev, a))
        if b > a:
            sections.append(("message", a, b))
        prev = b
    if prev < n:
        sections.append(("template", prev, n))
    return sections
