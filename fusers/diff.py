"""Token-by-token alignment of two answers: where two modes agree, and where they part.

The app's token diff view and scripts share this. Pure Python, no torch: tokens are any
hashable keys (token ids when both answers come from one tokenizer, token texts otherwise).

The alignment is a minimal edit script (Levenshtein: insert, delete and replace cost 1), one
operation per token, so a changed token lines up with the token it replaced. A common prefix
and suffix are trimmed first: two answers that agree for a while (the usual case, and every
update while they stream) cost little more than their length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

EQUAL, INSERT, DELETE, REPLACE = "equal", "insert", "delete", "replace"


@dataclass(frozen=True)
class DiffOp:
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

    A changed token is one "replace", never a delete and an insert (that would cost 2). Among
    minimal scripts, ties keep tokens equal and put deletions and insertions as late as they can
    go (the backtrace runs from the end), so answers of unequal length pair up from their start
    and a token one answer inserts shows as a shift, with the tokens after it still equal.
    """
    a, b = list(a), list(b)
    pre = 0
    while pre < len(a) and pre < len(b) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < len(a) - pre and suf < len(b) - pre and a[len(a) - 1 - suf] == b[len(b) - 1 - suf]:
        suf += 1
    mid_a, mid_b = a[pre:len(a) - suf], b[pre:len(b) - suf]

    ops = [DiffOp(EQUAL, i, i) for i in range(pre)]
    ops += [DiffOp(k, None if i is None else i + pre, None if j is None else j + pre)
            for k, i, j in _levenshtein(mid_a, mid_b)]
    ops += [DiffOp(EQUAL, len(a) - suf + k, len(b) - suf + k) for k in range(suf)]
    return ops


def _levenshtein(a: list[Hashable], b: list[Hashable]) -> list[tuple[str, int | None, int | None]]:
    n, m = len(a), len(b)
    if n == 0:
        return [(INSERT, None, j) for j in range(m)]
    if m == 0:
        return [(DELETE, i, None) for i in range(n)]
    # cost[i][j]: edits turning a[:i] into b[:j]
    cost = [list(range(m + 1))]
    for i in range(1, n + 1):
        prev, row, ai = cost[-1], [i] + [0] * m, a[i - 1]
        for j in range(1, m + 1):
            if ai == b[j - 1]:
                row[j] = prev[j - 1]  # matching equal tokens is always optimal
            else:
                row[j] = 1 + min(prev[j - 1], prev[j], row[j - 1])
        cost.append(row)
    out: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        here = cost[i][j]
        if i > 0 and j > 0 and a[i - 1] == b[j - 1] and here == cost[i - 1][j - 1]:
            out.append((EQUAL, i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and here == cost[i - 1][j] + 1:
            out.append((DELETE, i - 1, None))
            i -= 1
        elif j > 0 and here == cost[i][j - 1] + 1:
            out.append((INSERT, None, j - 1))
            j -= 1
        else:
            out.append((REPLACE, i - 1, j - 1))
            i, j = i - 1, j - 1
    out.reverse()
    return out


def summarize(ops: Sequence[DiffOp]) -> DiffSummary:
    counts = {EQUAL: 0, REPLACE: 0, INSERT: 0, DELETE: 0}
    for op in ops:
        counts[op.kind] += 1
    return DiffSummary(counts[EQUAL], counts[REPLACE], counts[INSERT], counts[DELETE], first_divergence(ops))


def first_divergence(ops: Sequence[DiffOp]) -> DiffOp | None:
    """The first operation where the two sequences differ, or None when they are identical."""
    return next((op for op in ops if op.kind != EQUAL), None)
