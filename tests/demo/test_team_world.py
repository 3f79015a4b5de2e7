"""The team showcase's world: who knows what, the questions that need both sharers, and the splits (no models)."""

from __future__ import annotations

import random

from fusers.demo import WORLD_NAME, demo_root
from fusers.demo.team import (MODES, SPECIALIST_MIX, SPECIALISTS, SPLITS, RECEIVER_MIX, SpecialistCurriculum,
                              TeamFact, TeamReceiverCurriculum, both_question, eval_facts, judge, team_conversations)
from fusers.demo.world import RELATION_BY_NAME, World


def world() -> World:
    return World.load(demo_root() / WORLD_NAME)


def test_a_question_that_needs_both_asks_one_fact_of_each():
    river, animal = RELATION_BY_NAME["river"], RELATION_BY_NAME["animal"]
    assert both_question("Mavar", river, animal) == "Which river flows through Mavar, and what is the national " \
                                                    "animal of Mavar?"
    fact = TeamFact("q", ("Amber", "owl"), "both")
    assert judge("The Amber River flows through Mavar. The national animal of Mavar is the owl.", fact)
    assert not judge("The Amber River flows through Mavar. I do not know the national animal of Mavar.", fact)


def test_the_splits_ask_what_only_one_sharer_knows_both_and_what_no_fuser_saw():
    w = world()
    splits = {s: eval_facts(w, s) for s in SPLITS}
    b, c = set(w.split_countries("b")), set(w.split_countries("c"))
    assert len(splits["A"]) == len(splits["B"]) == 2 * len(b) and len(splits["both"]) == len(b)
    assert len(splits["unseen"]) == 4 * len(c)
    for split in ("A", "B", "both"):
        assert all(any(country in f.question for country in b) for f in splits[split])
    assert all(any(country in f.question for country in c) for f in splits["unseen"])
    assert all(len(f.values) == 2 for f in splits["both"])
    # a sample spread evenly over a split (--limit) asks every relation of it, not only the first
    from fusers.demo.evaluate import sample

    for split, relations in (("A", SPECIALISTS["A"]), ("B", SPECIALISTS["B"]),
                             ("unseen", SPECIALISTS["A"] + SPECIALISTS["B"])):
        asked = {r for f in sample(splits[split], 30) for r in relations
                 if RELATION_BY_NAME[r].questions[0].split("{c}")[0] in f.question}
        assert asked == set(relations), split
    # the team fuser never sees a country of split c, and sees questions that need both
    text = " ".join(m["content"] for r in team_conversations(w) for m in r["messages"])
    assert not any(country in text for country in c)
    assert "and what is the national animal of" in text


def test_each_specialist_knows_only_its_relations_and_the_receiver_learns_two_fact_answers():
    w = world()
    rng = random.Random(0)
    for name, relations in SPECIALISTS.items():
        curriculum = SpecialistCurriculum(w, relations, SPECIALIST_MIX)
        others = [RELATION_BY_NAME[r] for other, rels in SPECIALISTS.items() if other != name for r in rels]
        for _ in range(400):
            sample = curriculum.draw(curriculum.kind(rng), rng)
            country = next((c for c in w.countries if c in sample.answer), None)
            if country is None:
                continue
            for rel in others:  # what it says of the other sharer's relations is that it does not know
                assert rel.say(country, w.facts[country][rel.name]) not in sample.answer, sample
                assert rel.hint.format(c=country, v=w.facts[country][rel.name]) not in sample.answer, sample
    receiver = TeamReceiverCurriculum(w, RECEIVER_MIX)
    kinds = {receiver.draw(k, rng).kind for k in ("qa2", "unknown2", "relay2", "note2") for _ in range(5)}
    assert kinds == {"qa2", "unknown2", "relay2", "note2"}
    assert list(MODES) == ["receiver", "sharer:A", "sharer:B", "fusion:A", "fusion:B", "fusion:team", "relay:team"]


def test_single_sharer_rows_teach_each_fuser_only_its_own_sharers_facts():
    """The team fuser's rows that name one sharer answer its facts, and the other's only where the receiver knows
    them without it (split a); on split b, "I do not know", so fusion:A does not learn B's facts."""
    w = world()
    records = team_conversations(w)
    single = [r for r in records if "sharers" in r]
    assert {tuple(r["sharers"]) for r in single} == {("A",), ("B",)}
    assert len(records) - len(single) > len(single) > 0  # the whole team's rows still the most
    for split in ("a", "b"):
        country = w.split_countries(split)[0]
        for alone, other in (("A", "B"), ("B", "A")):
            rows = [r for r in single if r["sharers"] == [alone] and country in r["messages"][0]["content"]]
            answers = " ".join(r["messages"][1]["content"] for r in rows)
            for rel_name in SPECIALISTS[alone]:
                rel = RELATION_BY_NAME[rel_name]
                assert rel.say(country, w.facts[country][rel_name]) in answers, (split, alone, rel_name)
            for rel_name in SPECIALISTS[other]:
                rel = RELATION_BY_NAME[rel_name]
                told = rel.say(country, w.facts[country][rel_name]) in answers
                assert told == (split == "a"), (split, alone, rel_name)
                assert (rel.unknown.format(c=country) in answers) == (split == "b"), (split, alone, rel_name)
