"""Fuzzing the pure functions that take outside data: generation settings, chat messages (answered by a real
tiny pair), training JSONL, the token aligner on two different tokenizers, and the token diff."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings, strategies as st

from fusers import tiny
from fusers.alignment import TokenAligner
from fusers.chat import ROLES, check_messages, encode
from fusers.diff import DELETE, EQUAL, INSERT, REPLACE, align, summarize
from fusers.errors import C2CError, DataError, PromptError, SettingsError
from fusers.generation import GenerationSettings
from fusers.train.data import load_conversations

from .test_fuser_files import json_values

FIELDS = sorted(GenerationSettings.__dataclass_fields__)
# any text, with unpaired surrogates and control characters drawn often
texts = st.text(st.characters(codec=None, categories=None), max_size=40) | st.lists(
    st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b[31m", "\r", "\u2028", "\u0085", "\ufeff", "<|im_end|>", "a", " "]),
    max_size=12).map("".join)


def _readable(exc: BaseException) -> None:
    text = str(exc)
    assert isinstance(exc, C2CError), f"{type(exc).__name__}: {text}"
    assert text.strip() and len(text) < 600, text


# -- generation settings --------------------------------------------------------------------------------------

@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values | st.floats(), max_size=8)
       | json_values)
def test_generation_settings_from_any_dict_are_valid_or_a_settings_error(data) -> None:
    try:
        s = GenerationSettings.from_dict(data)
    except SettingsError as exc:
        _readable(exc)
        assert isinstance(exc, ValueError)  # callers that catch ValueError keep working
        return
    assert isinstance(s.max_new_tokens, int) and s.max_new_tokens >= 1
    assert all(isinstance(getattr(s, f), bool) for f in ("do_sample", "ignore_eos", "thinking"))
    assert 0 < s.top_p <= 1 and 0 < s.temperature < float("inf")
    assert GenerationSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# -- chat messages, answered by a real tiny pair ------------------------------------------------------------

messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES) | st.text(max_size=5), "content": texts})
    | st.dictionaries(st.sampled_from(["role", "content", "x"]), json_values, max_size=3) | json_values,
    max_size=4)


@settings(max_examples=40)
@given(messages, st.sampled_from(["receiver", "sharer", "relay", "fusion", "hybrid"]))
def test_any_conversation_is_answered_or_refused_with_a_prompt_error(tiny_pair, msgs, mode) -> None:
    from fusers.engine import Engine

    try:
        checked = check_messages(msgs)
    except PromptError as exc:
        _readable(exc)
        return
    ids = encode(tiny_pair.receiver.tokenizer, checked)
    assert ids
    try:
        answer = Engine(tiny_pair).answer(mode, checked, GenerationSettings(max_new_tokens=2, hint_max_new_tokens=2))
    except C2CError as exc:
        _readable(exc)
        return
    assert answer.finish_reason in ("eos", "length")


well_formed = st.tuples(st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts}), max_size=3),
                        texts).map(lambda t: t[0] + [{"role": "user", "content": t[1]}])


@settings(max_examples=40)
@given(well_formed, st.sampled_from(["receiver", "sharer", "relay", "fusion"]))
def test_well_formed_conversations_of_any_text_are_answered_or_refused(tiny_pair, msgs, mode) -> None:
    test_any_conversation_is_answered_or_refused_with_a_prompt_error.hypothesis.inner_test(tiny_pair, msgs, mode)


@settings(max_examples=10)
@given(st.integers(3000, 20000), st.sampled_from(["a", "\x00", "é", "😀"]))
def test_a_huge_prompt_is_refused_with_a_prompt_error(tiny_pair, n, ch) -> None:
    from fusers.engine import Engine

    with pytest.raises(PromptError, match="tokens") as info:
        Engine(tiny_pair).answer("fusion", [{"role": "user", "content": ch * n}], GenerationSettings(max_new_tokens=2))
    _readable(info.value)


# -- training JSONL ------------------------------------------------------------------------------------------

conversation = st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts}), min_size=1,
                        max_size=4)


def _jsonl(raw: bytes) -> Path:
    path = Path(tempfile.mkdtemp(prefix="fuzz-jsonl-")) / "data.jsonl"
    path.write_bytes(raw)
    return path


@given(st.lists(conversation, min_size=1, max_size=4), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_valid_jsonl_reads_back_exactly_or_names_the_line(convs, newline, ascii_only) -> None:
    lines = [json.dumps({"messages": c}, ensure_ascii=ascii_only) for c in convs]
    path = _jsonl(newline.join(lines).encode("utf-8", "surrogatepass"))
    try:
        read = load_conversations(path)
    except DataError as exc:
        _readable(exc)
        assert "line" in str(exc) or "UTF-8" in str(exc), exc
        return
    assert len(read) == len(convs)
    for got, conv in zip(read, convs):
        last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
        assert got.answer == conv[last]["content"] and got.messages == conv[:last]


@given(st.binary(max_size=400) | st.lists(json_values.map(json.dumps), max_size=4).map(lambda ls: "\n".join(ls).encode()))
def test_any_bytes_as_jsonl_are_conversations_or_a_data_error(raw) -> None:
    path = _jsonl(raw)
    try:
        read = load_conversations(path)
    except DataError as exc:
        _readable(exc)
        return
    assert read and all(c.messages[-1]["role"] == "user" for c in read)


# -- the token aligner on two different tokenizers ----------------------------------------------------------

@pytest.fixture(scope="module")
def two_tokenizers():
    receiver = tiny.bpe_tokenizer(400)
    sharer = tiny.bpe_tokenizer(300, corpus="Une phrase en français. Zwei Wörter. 数字 一 二 三. ümlaut naïve café\n" * 3)
    return receiver, sharer


@given(st.text(st.characters(codec="utf-8"), max_size=60), st.sampled_from(["first", "longest"]))
def test_every_receiver_position_gets_one_sharer_token(two_tokenizers, text, strategy) -> None:
    rt, st_ = two_tokenizers
    r_ids = rt.encode(text, add_special_tokens=False)
    s_ids = TokenAligner(rt, st_, strategy).align_ids(r_ids)
    assert len(s_ids) == len(r_ids)
    assert all(isinstance(i, int) and 0 <= i < len(st_) for i in s_ids)
    # both tokenizers round-trip the text; each aligned token is a piece of its receiver token's text
    assert rt.decode(r_ids, clean_up_tokenization_spaces=False) == text
    assert st_.decode(st_.encode(text, add_special_tokens=False), clean_up_tokenization_spaces=False) == text
    for r, s in zip(r_ids, s_ids):
        piece = rt.decode([r], clean_up_tokenization_spaces=False)
        if piece:
            assert s in st_.encode(piece, add_special_tokens=False)


@settings(max_examples=30)
@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES),
                                       "content": st.text(st.characters(codec="utf-8"), max_size=30)}),
                min_size=1, max_size=3))
def test_a_whole_chat_aligns_one_to_one(two_tokenizers, msgs) -> None:
    msgs = msgs + [{"role": "user", "content": "Why?"}]
    rt, st_ = two_tokenizers
    alignment = TokenAligner(rt, st_).align_chat(msgs)
    assert len(alignment.sharer_ids) == len(alignment.receiver_ids) == len(encode(rt, msgs))
    assert all(0 <= i < len(st_) for i in alignment.sharer_ids)


# -- the token diff -----------------------------------------------------------------------------------------

ids = st.lists(st.integers(0, 6), max_size=30)


@given(ids, ids)
def test_the_diff_opcodes_rebuild_the_second_list_from_the_first(a, b) -> None:
    ops = align(a, b)
    rebuilt, used_a = [], []
    for op in ops:
        if op.kind == EQUAL:
            assert a[op.a] == b[op.b]
            rebuilt.append(a[op.a])
            used_a.append(op.a)
        elif op.kind == REPLACE:
            assert a[op.a] != b[op.b]
            rebuilt.append(b[op.b])
            used_a.append(op.a)
        elif op.kind == INSERT:
            assert op.a is None
            rebuilt.append(b[op.b])
        else:
            assert op.kind == DELETE and op.b is None
            used_a.append(op.a)
    assert rebuilt == b and used_a == list(range(len(a)))
    assert [op.b for op in ops if op.b is not None] == list(range(len(b)))
    s = summarize(ops)
    assert s.identical == (a == b)
    assert s.changed + s.inserted + s.deleted <= max(len(a), len(b))  # never worse than rewriting everything


# -- the team manifest (team.json) ----------------------------------------------------------------------------

team_entry = st.dictionaries(st.sampled_from(["name", "sharer", "fuser", "adapter"]) | st.text(max_size=4),
                             json_values | st.sampled_from(["A", "B", "a:b", "", "org/model"]), max_size=5)


@given(st.fixed_dictionaries({"format": st.sampled_from(["c2c-playground-team", "other"]),
                              "format_version": st.sampled_from([1, 2, "1"])},
                             optional={"receiver": json_values | st.text(max_size=8),
                                       "sharers": st.lists(team_entry, max_size=3) | json_values,
                                       "extra": json_values, "surprise": json_values})
       | json_values)
def test_any_team_manifest_reads_back_or_is_a_team_format_error(data) -> None:
    from fusers.errors import TeamFormatError
    from fusers.team import TeamManifest

    try:
        manifest = TeamManifest.from_dict(data)
    except TeamFormatError as exc:
        _readable(exc)
        return
    assert TeamManifest.from_dict(manifest.to_dict()) == manifest
