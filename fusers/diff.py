"""Token-by-token alignment of two answers: where two modes agree, and where they part.

The app's token diff view and scripts share this. No torch: tokens are any hashable keys
(token ids when both answers come from one tokenizer, token texts otherwise).

The alignment is a minimal edit script (Levenshtein: insert, delete and replace cost 1), one
operation per token, so a changed token lines up with the token it replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, NamedTuple, Sequence

EQUAL, INSERT, DELETE, REPLACE = "equal", "insert", "delete", "replace"


class DiffOp(NamedTuple):  # a tuple: cheap to make by the thousand on every streamed token
    kind: str  # "equal", "insert" (only in b), "delete" (only in a) or "replace" (a's token became b's)
    a: int | None  # index into a; None for insert
    b: int | None  # index into b; None for delete


@dataclass(frozen=True)
class DiffSummary:
    equal: int
    changed: int
    inserted: int
    deleted: int
    first: DiffOp | None  # the first operation that is not "equal"; None when the sequences are identical

    @property
    def identical(self) -> bool:
        return self.first is None

    def describe(self, a_name: str = "A", b_name: str = "B") -> str:
        if self.first is None:
            return f"{a_name} and {b_name} are identical ({self.equal} tokens)."
        first = self.first
        where = first.a if first.a is not None else first.b
        counts = f"{self.equal} same, {self.changed} changed, {self.inserted} only in {b_name}, " \
                 f"{self.deleted} only in {a_name}"
        return f"First divergence at token {where + 1}; {counts}."


def align(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[DiffOp]:
    """The edit script turning ``a`` into ``b``, one :class:`DiffOp` per token, in order.

    A changed token is one "replace", never a delete and an insert (that would cost 2). The
    script comes from rapidfuzz's Levenshtein (C++, with its common prefix and suffix trimmed
    first, so answers that agree while they stream cost little more than their length).
    """
    from rapidfuzz.distance import Levenshtein

    a, b = list(a), list(b)
    ops: list[DiffOp] = []
    a_run: list[int] = []  # a run of changed tokens between equal ones, as a's and b's indices
    b_run: list[int] = []
    i = j = 0  # the next tokens of a and b no operation has covered yet
    for tag, ai, bj in Levenshtein.editops(a, b):
        if ai > i:  # the tokens between two edits are equal
            ops += _pair_up(a_run, b_run, a, b)
            a_run, b_run = [], []
            ops += [DiffOp(EQUAL, i + k, j + k) for k in range(ai - i)]
            i, j = ai, bj
        if tag != INSERT:
            a_run.append(ai)
            i = ai + 1
        if tag != DELETE:
            b_run.append(bj)
            j = bj + 1
    ops += _pair_up(a_run, b_run, a, b)
    ops += [DiffOp(EQUAL, i + k, j + k) for k in range(len(a) - i)]
    return _prefer_equal(ops, a, b)


def _pair_up(a_run: list[int], b_run: list[int], a: list[Hashable], b: list[Hashable]) -> list[DiffOp]:
    """A changed run as replacements paired from its start, the longer side's surplus last."""
    ops = [DiffOp(EQUAL if a[i] == b[j] else REPLACE, i, j) for i, j in zip(a_run, b_run)]
    ops += [DiffOp(DELETE, i, None) for i in a_run[len(b_run):]]
    ops += [DiffOp(INSERT, None, j) for j in b_run[len(a_run):]]
    return ops


def _prefer_equal(ops: list[DiffOp], a: list[Hashable], b: list[Hashable]) -> list[DiffOp]:
    """Among scripts of the same cost, keep tokens equal: two replacements whose tokens are one
    token apart become a deletion, an equal token and an insertion (a shifted answer shows as a
    shift). Costs are unchanged, so the script stays minimal."""
    out: list[DiffOp] = []
    k = 0
    while k < len(ops):
        op = ops[k]
        nxt = ops[k + 1] if k + 1 < len(ops) else None
        if op.kind == REPLACE and nxt is not None and nxt.kind == REPLACE:
            i, j = op.a, op.b
            if a[i + 1] == b[j]:
                out += [DiffOp(DELETE, i, None), DiffOp(EQUAL, i + 1, j), DiffOp(INSERT, None, j + 1)]
                k += 2
                continue
            if a[i] == b[j + 1]:
                out += [DiffOp(INSERT, None, j), DiffOp(EQUAL, i, j + 1), DiffOp(DELETE, i + 1, None)]
                k += 2
                continue
        out.append(op)
        k += 1
    return out


def summarize(ops: Sequence[DiffOp]) -> DiffSummary:
    counts = {EQUAL: 0, REPLACE: 0, INSERT: 0, DELETE: 0}
    for op in ops:
        counts[op.kind] += 1
    return DiffSummary(counts[EQUAL], counts[REPLACE], counts[INSERT], counts[DELETE], first_divergence(ops))


def first_divergence(ops: Sequence[DiffOp]) -> DiffOp | None:
    """The first operation where the two sequences differ, or None when they are identical."""
    return next((op for op in ops if op.kind != EQUAL), None)
