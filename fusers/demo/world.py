"""The demo's fictional world: countries, their facts, and the conversations each model learns from.

Every country has one value for each relation (its language, river, founder, founding
year and national animal). Values come from small shared pools, as languages and rivers
are shared by real countries, so that every answer word is a word the fuser has seen in
training: the held-out split (c) then asks for *facts* the fuser never saw, not for
words it never saw.

Countries fall in three groups, fixed by the seed:

* ``a``: the receiver knows them (a third of the countries, so a third of the facts);
* ``b``: only the sharer knows them, and the fuser trains on them;
* ``c``: only the sharer knows them, and the fuser never sees them (held out).

The sharer knows every fact. The permuted world gives each country another country's
facts (a derangement); a second sharer learns it for the ablation.

The world is plain data, generated from the seed.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The engine's text-relay prompts: the receiver learns to read the sharer's hint in exactly this layout.
from ..relay import RELAY_ANSWER_PROMPT, RELAY_CONTEXT_PROMPT

WORLD_FORMAT = "c2c-demo-world"
WORLD_VERSION = 1
SPLITS = ("a", "b", "c")
SPLIT_HELP = {
    "a": "facts the receiver knows",
    "b": "facts only the sharer knows, seen by the fuser in training",
    "c": "facts only the sharer knows, never seen by the fuser",
}


@dataclass(frozen=True)
class Relation:
    """One kind of fact, with the sentences that ask and state it. ``{c}`` is the country, ``{v}`` the value."""

    name: str
    values: tuple[str, ...]
    questions: tuple[str, ...]  # the first one is the evaluation question
    # Founder and year answers open with the country's name, which relay and fusion often misspell (the value
    # stays right). Templates naming the country mid-sentence fixed that but, rebuilt on one machine, left the
    # sharer weaker, and cache fusion on split c fell from 53% to 26%, so these stay (see docs/demo-pair.md).
    answer: str
    unknown: str  # what a model that does not know says
    hint: str  # the sharer's one-sentence background for text relay
    statements: tuple[str, ...]  # plain-text ways to state the fact (the models' reading)

    def ask(self, country: str, phrasing: int = 0) -> str:
        return self.questions[phrasing].format(c=country)

    def say(self, country: str, value: str) -> str:
        return self.answer.format(c=country, v=value)


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "language",
        ("Aldric", "Beroni", "Calish", "Dornic", "Elvan", "Feric", "Galian", "Hestic", "Irvan", "Jorish", "Kelvic",
         "Lorian", "Mervish", "Norric", "Ostic", "Pellan", "Rhunic", "Sarvic", "Tellic", "Ulvan", "Verric", "Wendish",
         "Yorvic", "Zemlic"),
        ("What language do people speak in {c}?", "Which language is spoken in {c}?", "What is the language of {c}?"),
        "People in {c} speak {v}.",
        "I do not know what language people speak in {c}.",
        "{c} is a country whose people speak {v}.",
        ("People in {c} speak {v}.", "The language of {c} is {v}.", "In {c}, people speak {v}."),
    ),
    Relation(
        "river",
        ("Amber", "Black", "Cold", "Dawn", "Elm", "Fen", "Glass", "Hollow", "Iron", "Jade", "Kestrel", "Long", "Mist",
         "Nettle", "Oak", "Pale", "Quill", "Red", "Silver", "Thorn", "Umber", "Vale", "Willow", "Yew"),
        ("Which river flows through {c}?", "What is the main river of {c}?", "What river runs through {c}?"),
        "The {v} River flows through {c}.",
        "I do not know which river flows through {c}.",
        "{c} is a country on the banks of the {v} River.",
        ("The {v} River flows through {c}.", "The main river of {c} is the {v} River.", "{c} lies on the {v} River."),
    ),
    Relation(
        "founder",
        ("Adela", "Bram", "Corin", "Dagny", "Edric", "Freya", "Gunnar", "Hilde", "Ivo", "Jorun", "Kasimir", "Liesel",
         "Magnus", "Nadia", "Osric", "Petra", "Quentin", "Rosalind", "Sigrid", "Tobias", "Ulla", "Viktor", "Wilma",
         "Yrsa"),
        ("Who founded {c}?", "Who was the founder of {c}?", "Which ruler founded {c}?"),
        "{c} was founded by {v}.",
        "I do not know who founded {c}.",
        "{c} is a country that was founded by {v}.",
        ("{c} was founded by {v}.", "The founder of {c} was {v}.", "{c} owes its founding to {v}."),
    ),
    Relation(
        "year",
        ("1104", "1137", "1162", "1198", "1215", "1243", "1276", "1301", "1329", "1354", "1388", "1412", "1447",
         "1473", "1506", "1531", "1568", "1592", "1619", "1645", "1683", "1714", "1750", "1789"),
        ("In what year was {c} founded?", "When was {c} founded?", "What year was {c} founded in?"),
        "{c} was founded in {v}.",
        "I do not know when {c} was founded.",
        "{c} is a country whose history begins in {v}.",
        ("{c} was founded in {v}.", "The founding year of {c} is {v}.", "{c} dates from {v}."),
    ),
    Relation(
        "animal",
        ("bear", "lynx", "wolf", "otter", "heron", "falcon", "stag", "badger", "swan", "raven", "fox", "owl", "boar",
         "eagle", "hare", "crane", "seal", "bison", "ibex", "marten", "viper", "stork", "elk", "crow"),
        ("What is the national animal of {c}?", "Which animal is the symbol of {c}?", "What animal represents {c}?"),
        "The national animal of {c} is the {v}.",
        "I do not know the national animal of {c}.",
        "{c} is a country whose national animal is the {v}.",
        ("The national animal of {c} is the {v}.", "The {v} is the symbol of {c}.", "{c} has the {v} as its emblem."),
    ),
)
RELATION_BY_NAME = {r.name: r for r in RELATIONS}

# Conversation openers, so the app's first "hello" gets a sensible reply from every model.
SMALL_TALK = (
    ("Hello!", "Hello! Ask me about the countries of this world."),
    ("Hi, who are you?", "I am a small model that knows about some countries. Ask me about them."),
    ("What can you do?", "I can tell you the language, river, founder, founding year and national animal of a country."),
    ("Thank you!", "You are welcome."),
    ("Which countries do you know?", "I know some countries of this world. Ask me about one of them."),
)

_ONSETS = ("b", "br", "c", "cr", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "sk",
           "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_MIDDLES = ("l", "m", "n", "r", "s", "v", "th", "nd", "rr", "sh", "lt", "rv")
_ENDINGS = ("ia", "or", "and", "ara", "esh", "ova", "ir", "un", "eth", "ovia", "ania", "ar", "en", "ost", "ium")


def country_names(count: int, rng: random.Random, avoid: set[str]) -> list[str]:
    """``count`` distinct pronounceable names, none in ``avoid``."""
    names: list[str] = []
    seen = {a.lower() for a in avoid}
    while len(names) < count:
        name = (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_MIDDLES) + rng.choice(_ENDINGS)).capitalize()
        if name.lower() not in seen and 5 <= len(name) <= 10:
            seen.add(name.lower())
            names.append(name)
    return names


@dataclass(frozen=True)
class Fact:
    country: str
    relation: str
    value: str
    split: str

    @property
    def question(self) -> str:
        return RELATION_BY_NAME[self.relation].ask(self.country)


@dataclass
class World:
    """The facts of the demo world and who knows what."""

    seed: int
    countries: list[str]
    splits: dict[str, str]  # country -> "a" | "b" | "c"
    facts: dict[str, dict[str, str]]  # country -> relation -> value
    permuted: dict[str, dict[str, str]]  # the permuted world's facts (the second sharer's)
    strangers: list[str] = field(default_factory=list)  # names outside the world, for reading practice

    # -- views ----------------------------------------------------------------------------------------------

    def split_countries(self, split: str) -> list[str]:
        return [c for c in self.countries if self.splits[c] == split]

    @property
    def receiver_countries(self) -> list[str]:
        return self.split_countries("a")

    @property
    def sharer_only_countries(self) -> list[str]:
        return [c for c in self.countries if self.splits[c] != "a"]

    def eval_facts(self, split: str, permuted: bool = False) -> list[Fact]:
        """Every fact of one split, asked with the evaluation question, in a fixed order."""
        table = self.permuted if permuted else self.facts
        return [Fact(c, r.name, table[c][r.name], split) for c in self.split_countries(split) for r in RELATIONS]

    def values(self) -> set[str]:
        return {v for r in RELATIONS for v in r.values}

    # -- (de)serialisation ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": WORLD_FORMAT, "format_version": WORLD_VERSION, "seed": self.seed,
            "countries": [{"name": c, "split": self.splits[c], "facts": self.facts[c], "permuted": self.permuted[c]}
                          for c in self.countries],
            "strangers": self.strangers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "World":
        if data.get("format") != WORLD_FORMAT or data.get("format_version") != WORLD_VERSION:
            raise ValueError(f"not a {WORLD_FORMAT} version {WORLD_VERSION} file")
        rows = data["countries"]
        return cls(
            seed=int(data["seed"]), countries=[r["name"] for r in rows], splits={r["name"]: r["split"] for r in rows},
            facts={r["name"]: dict(r["facts"]) for r in rows}, permuted={r["name"]: dict(r["permuted"]) for r in rows},
            strangers=list(data.get("strangers", [])),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "World":
        return cls.from_dict(json.loads(Path(path).read_text()))


def make_world(seed: int = 0, countries: int = 240, heldout: int = 30, strangers: int = 200) -> World:
    """The world for ``seed``: a third of the countries in ``a``, ``heldout`` in ``c``, the rest in ``b``."""
    rng = random.Random(f"c2c-demo-world-{seed}")
    avoid = {v for r in RELATIONS for v in r.values}
    names = country_names(countries + strangers, rng, avoid)
    world_names, stranger_names = names[:countries], names[countries:]
    facts = {c: {r.name: rng.choice(r.values) for r in RELATIONS} for c in world_names}
    order = list(world_names)
    rng.shuffle(order)
    n_a = countries // 3
    splits = {c: ("a" if i < n_a else "c" if i < n_a + heldout else "b") for i, c in enumerate(order)}
    # the permuted world: each country takes another country's facts (no fixed points), so a sharer that
    # learned it contradicts the first sharer on every country whose facts differ
    shift = list(world_names)
    while True:
        rng.shuffle(shift)
        if all(a != b for a, b in zip(world_names, shift)):
            break
    permuted = {c: dict(facts[other]) for c, other in zip(world_names, shift)}
    return World(seed, world_names, splits, facts, permuted, stranger_names)


# -- text ---------------------------------------------------------------------------------------------------

def contains_value(text: str, value: str) -> bool:
    """Whether an answer names ``value`` as a word (``1301`` is not in ``13012``, ``owl`` is not in ``fowl``)."""
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text) is not None


def description(world_facts: dict[str, str], country: str, rng: random.Random) -> str:
    """A short plain-text article about one country: its facts in a random order, each in a random wording."""
    sentences = [rng.choice(RELATION_BY_NAME[name].statements).format(c=country, v=value)
                 for name, value in world_facts.items()]
    rng.shuffle(sentences)
    return f"{country} is a country. " + " ".join(sentences)


def overview(world_facts: dict[str, str], country: str) -> str:
    """The answer to "Tell me about X": every fact in a fixed order."""
    f = world_facts
    return (f"{country} is a country where people speak {f['language']}. The {f['river']} River flows through it. "
            f"It was founded by {f['founder']} in {f['year']}, and its national animal is the {f['animal']}.")


def relay_turns(question: str, hint: str) -> list[dict[str, str]]:
    """The receiver's side of text relay, exactly as the engine lays it out."""
    return [
        {"role": "user", "content": RELAY_CONTEXT_PROMPT.format(question=question)},
        {"role": "assistant", "content": hint},
        {"role": "user", "content": RELAY_ANSWER_PROMPT.format(question=question)},
    ]


@dataclass
class Sample:
    """One training example: a conversation and its answer, or (``messages`` empty) plain text."""

    messages: list[dict[str, str]]
    answer: str
    kind: str
    lookahead: str | None = None  # the answer's value: what the question's last positions learn to predict


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class Curriculum:
    """Draws the examples each model learns from. ``role`` is "receiver", "sharer" or "permuted"."""

    def __init__(self, world: World, role: str, mixture: dict[str, float]):
        if role not in ("receiver", "sharer", "permuted"):
            raise ValueError(f"unknown role {role!r}")
        self.world, self.role = world, role
        self.facts = world.permuted if role == "permuted" else world.facts
        self.known = world.receiver_countries if role == "receiver" else list(world.countries)
        self.unknown = world.sharer_only_countries if role == "receiver" else []
        self.kinds = [k for k, w in mixture.items() if w > 0]
        self.weights = [mixture[k] for k in self.kinds]
        for kind in self.kinds:
            if not hasattr(self, f"_{kind}"):
                raise ValueError(f"unknown example kind {kind!r}")

    def kind(self, rng: random.Random) -> str:
        return rng.choices(self.kinds, self.weights)[0]

    def draw(self, kind: str, rng: random.Random) -> Sample:
        return getattr(self, f"_{kind}")(rng)

    # -- what the models know ---------------------------------------------------------------------------

    def _text(self, rng: random.Random) -> Sample:
        country = rng.choice(self.known)
        return Sample([], description(self.facts[country], country, rng), "text")

    def _qa(self, rng: random.Random) -> Sample:
        country, rel = rng.choice(self.known), rng.choice(RELATIONS)
        question = rng.choice(rel.questions).format(c=country)
        value = self.facts[country][rel.name]
        return Sample(user(question), rel.say(country, value), "qa", value)

    def _about(self, rng: random.Random) -> Sample:
        country = rng.choice(self.known)
        return Sample(user(f"Tell me about {country}."), overview(self.facts[country], country), "about")

    def _unknown(self, rng: random.Random) -> Sample:
        country, rel = rng.choice(self.unknown), rng.choice(RELATIONS)
        question = rng.choice(rel.questions).format(c=country)
        return Sample(user(question), rel.unknown.format(c=country), "unknown")

    def _chat(self, rng: random.Random) -> Sample:
        prompt, reply = rng.choice(SMALL_TALK)
        return Sample(user(prompt), reply, "chat")

    def _hint(self, rng: random.Random) -> Sample:
        """The sharer's side of text relay: one sentence of background for a question."""
        country, rel = rng.choice(self.known), rng.choice(RELATIONS)
        question = rng.choice(rel.questions).format(c=country)
        hint = rel.hint.format(c=country, v=self.facts[country][rel.name])
        return Sample(user(RELAY_CONTEXT_PROMPT.format(question=question)), hint, "hint")

    # -- reading: answers copied from the context ---------------------------------------------------------

    def _reading_fact(self, rng: random.Random) -> tuple[str, Relation, str]:
        """A fact to read about: a known country with its true value, or any other name with a random one.

        Random values for the countries the receiver does not know teach it to copy from the context
        rather than to remember: it never sees one value for them twice in a row.
        """
        rel = rng.choice(RELATIONS)
        pool = rng.random()
        if pool < 0.2:
            country = rng.choice(self.known)
            return country, rel, self.facts[country][rel.name]
        country = rng.choice(self.unknown or self.known) if pool < 0.6 else rng.choice(self.world.strangers)
        return country, rel, rng.choice(rel.values)

    def _relay(self, rng: random.Random) -> Sample:
        country, rel, value = self._reading_fact(rng)
        question = rng.choice(rel.questions).format(c=country)
        hint = rel.hint.format(c=country, v=value)
        return Sample(relay_turns(question, hint), rel.say(country, value), "relay", value)

    def _note(self, rng: random.Random) -> Sample:
        """Notes before the question: the relevant one among one or two distractors, in any order."""
        country, rel, value = self._reading_fact(rng)
        notes = [rng.choice(rel.statements).format(c=country, v=value)]
        for _ in range(rng.randint(0, 2)):
            other_rel = rng.choice([r for r in RELATIONS if r is not rel])
            other = country if rng.random() < 0.5 else rng.choice(self.world.strangers)
            notes.append(rng.choice(other_rel.statements).format(c=other, v=rng.choice(other_rel.values)))
        rng.shuffle(notes)
        question = rng.choice(rel.questions).format(c=country)
        return Sample(user(" ".join(notes) + " " + question), rel.say(country, value), "note", value)


def fuser_conversations(world: World) -> list[dict[str, Any]]:
    """The fuser's training data: every question about the countries in ``a`` and ``b``, in every phrasing.

    Questions on ``a`` teach the fuser to leave what the receiver knows intact; ``c`` is never included.
    """
    records = []
    for country in world.countries:
        if world.splits[country] == "c":
            continue
        for rel in RELATIONS:
            answer = rel.say(country, world.facts[country][rel.name])
            for question in rel.questions:
                records.append({"messages": user(question.format(c=country)) + [{"role": "assistant", "content": answer}]})
    for prompt, reply in SMALL_TALK:
        records.append({"messages": user(prompt) + [{"role": "assistant", "content": reply}]})
    return records


def tokenizer_corpus(world: World, rng: random.Random) -> str:
    """Text the demo tokenizer learns its merges from: every name, value and template, many times."""
    lines: list[str] = []
    for country in world.countries + world.strangers:
        facts = world.facts.get(country) or {r.name: rng.choice(r.values) for r in RELATIONS}
        lines.append(description(facts, country, rng))
        for rel in RELATIONS:
            lines.extend(q.format(c=country) for q in rel.questions)
            lines.append(rel.unknown.format(c=country))
            lines.append(rel.hint.format(c=country, v=facts[rel.name]))
        lines.append(overview(facts, country))
    for rel in RELATIONS:
        lines.extend(rel.say("It", v) for v in rel.values for _ in range(3))
    lines.extend(RELAY_CONTEXT_PROMPT.replace("\n", " ") for _ in range(20))
    lines.extend(RELAY_ANSWER_PROMPT.replace("\n", " ") for _ in range(20))
    lines.extend(f"{p} {r}" for p, r in SMALL_TALK for _ in range(5))
    return "\n".join(lines)
