"""The demo world and the pre-training examples: deterministic, split as promised, rendered as the engine renders."""

from __future__ import annotations

import random

import pytest

from fusers.chat import render
from fusers.demo.lm import IGNORE, encode_samples, render_chatml
from fusers.demo.world import (
    RELATIONS, SPLITS, Curriculum, World, contains_value, fuser_conversations, make_world,
)
from fusers.engine import RELAY_ANSWER_PROMPT, RELAY_CONTEXT_PROMPT


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(0)


def test_same_seed_same_world_other_seed_other_world(world):
    assert make_world(0).to_dict() == world.to_dict()
    assert make_world(1).to_dict() != world.to_dict()


def test_the_receiver_knows_a_third_and_the_splits_are_disjoint(world):
    groups = {s: set(world.split_countries(s)) for s in SPLITS}
    assert len(groups["a"]) == len(world.countries) // 3
    assert len(groups["c"]) == 30
    assert groups["a"].isdisjoint(groups["b"]) and groups["b"].isdisjoint(groups["c"])
    assert set().union(*groups.values()) == set(world.countries)
    assert not set(world.strangers) & set(world.countries)


def test_every_value_of_every_relation_is_taught_to_the_fuser(world):
    """Split c asks for facts the fuser never saw, made of words it did see."""
    for rel in RELATIONS:
        seen = {world.facts[c][rel.name] for c in world.split_countries("b")}
        assert {world.facts[c][rel.name] for c in world.split_countries("c")} <= seen


def test_the_fuser_never_sees_split_c(world):
    text = " ".join(m["content"] for r in fuser_conversations(world) for m in r["messages"])
    for country in world.split_countries("c"):
        assert not contains_value(text, country)
    for country in world.split_countries("b") + world.split_countries("a"):
        assert contains_value(text, country)


def test_the_permuted_world_moves_every_country_to_another_countrys_facts(world):
    assert all(world.permuted[c] in world.facts.values() for c in world.countries)
    changed = sum(world.permuted[c][r.name] != world.facts[c][r.name] for c in world.countries for r in RELATIONS)
    assert changed / (len(world.countries) * len(RELATIONS)) > 0.9


def test_world_round_trips_through_json(world, tmp_path):
    world.save(tmp_path / "world.json")
    assert World.load(tmp_path / "world.json").to_dict() == world.to_dict()


def test_contains_value_matches_whole_words():
    assert contains_value("People in Zorvia speak Tellic.", "Tellic")
    assert not contains_value("The national animal is the fowl.", "owl")
    assert not contains_value("founded in 13012", "1301")


def test_the_receiver_never_learns_facts_of_countries_it_does_not_know(world):
    """Its reading practice uses random values for them, and its questions about them get "I do not know"."""
    cur = Curriculum(world, "receiver", dict(qa=1, text=1, about=1, unknown=1, relay=1, note=1, chat=1))
    rng = random.Random(0)
    unknown = set(world.sharer_only_countries)
    for _ in range(3000):
        sample = cur.draw(cur.kind(rng), rng)
        if sample.kind in ("qa", "text", "about"):
            assert not any(contains_value(sample.answer, c) for c in unknown)
        if sample.kind == "unknown":
            assert sample.answer.startswith("I do not know")


def test_the_relay_examples_use_the_engines_prompts(world):
    cur = Curriculum(world, "receiver", dict(relay=1))
    sample = cur.draw("relay", random.Random(0))
    first, hint, last = sample.messages
    assert first["content"].startswith(RELAY_CONTEXT_PROMPT.split("{question}")[0])
    assert hint["role"] == "assistant"
    assert last["content"].startswith(RELAY_ANSWER_PROMPT.split("{question}")[0])


def test_fast_chatml_equals_the_tokenizers_template():
    from fusers.tiny import bpe_tokenizer

    tok = bpe_tokenizer(300)
    for messages in ([{"role": "user", "content": "Who founded Zorvia?"}],
                     [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c\n\nd"}]):
        assert render_chatml(messages) == render(tok, messages)


def test_examples_learn_the_answer_as_the_fuser_trainer_cuts_it(world):
    from fusers.tiny import bpe_tokenizer
    from fusers.train.data import answer_ids

    from fusers.chat import encode

    tok = bpe_tokenizer(300)
    cur = Curriculum(world, "sharer", dict(qa=1))
    sample = cur.draw("qa", random.Random(0))
    (ids, mask, ahead), = encode_samples(tok, [sample], lookahead_positions=0)
    prompt = encode(tok, sample.messages)
    answer = answer_ids(tok, sample.messages, sample.answer, False, [tok.eos_token_id])
    assert ids == prompt + answer
    assert mask == [0] * len(prompt) + [1] * len(answer)
    assert set(ahead) == {IGNORE}
