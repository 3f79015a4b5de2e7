"""Streamed text: the incremental decoder and the decode-everything fallback give the same text."""

from __future__ import annotations

import pytest

from fusers import tiny
from fusers.generation import Detokenizer

TEXT = "Héllo wörld, the capital of 日本 is Tokyo! 😀 ok. Ça va? naïve café"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.bpe_tokenizer(400, corpus=TEXT * 4)


def stream(detok: Detokenizer, ids: list[int]) -> list[str]:
    return [detok.push(i) for i in ids]


def test_incremental_and_fallback_stream_the_same_text(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    incremental = Detokenizer(tokenizer)
    assert incremental._stream is not None  # a fast tokenizer: the stream path runs
    fallback = Detokenizer(tokenizer)
    fallback._stream = None
    a, b = stream(incremental, ids), stream(fallback, ids)
    assert "".join(a) == incremental.text == tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(b) == fallback.text == incremental.text
    assert all("\ufffd" not in delta for delta in a)  # a character split over tokens is held back whole


def test_a_character_split_over_tokens_is_held_back_until_complete(tokenizer):
    ids = tokenizer.encode("🦊", add_special_tokens=False)  # not in the corpus: no merges
    assert len(ids) > 1  # byte-level pieces of one character
    detok = Detokenizer(tokenizer)
    deltas = stream(detok, ids)
    assert deltas[:-1] == [""] * (len(ids) - 1) and deltas[-1] == "🦊"
