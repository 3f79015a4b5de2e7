"""The specialist's domain: the people of a fictional company, and the general facts the pair is tested on.

Each person of *Corvane* has an office (a city) and a role. Names, cities and roles are words that
both real tokenizers keep whole (one token after a space in SmolLM2's and in Gemma's): cache fusion
aligns each receiver token with one sharer token, and a name that one tokenizer splits differently
would reach the sharer garbled (``fusers.alignment``). The recipe checks this on the loaded tokenizers.

People fall in two groups, fixed by the seed:

* ``b``: the fuser trains on questions about them;
* ``c``: the fuser never sees them (held out): the test of real transfer.

The specialist (the sharer's adapter) learns everyone. The permuted domain gives each person another
person's facts (a derangement): the ablation's adapter learns it. The decoys are more permuted companies,
each learned by an adapter the fuser trains with (its targets follow the adapter), so that remembering
answers cannot pay; the ablation's company is never among them. A decoy may also have people of its own,
names that are nobody else's: the fuser then meets many more names than Corvane has, all read from a
sharer's cache, so that reading a name it never saw (split c) is what it practises.

General facts: world capitals, ``g`` (the receiver names most of them) and ``h`` (those only base Gemma
names, found by the recipe); a separate list of capitals keeps the fuser and the adapter honest on
questions outside the domain and is never evaluated.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..demo.world import contains_value  # noqa: F401  (re-exported: one way to judge an answer)

DOMAIN_FORMAT = "c2c-specialist-domain"
DOMAIN_VERSION = 3  # 2 added the decoys, 3 the decoys' own people; older files load without them
COMPANY = "Corvane"
SPLITS = ("g", "b", "c", "h")
DOMAIN_SPLITS = ("b", "c")
SPLIT_HELP = {
    "g": "world capitals: general facts the receiver mostly knows",
    "b": "Corvane facts only the specialist knows, seen by the fuser in training",
    "c": "Corvane facts only the specialist knows, never seen by the fuser",
    "h": "world capitals base Gemma names and the receiver does not",
}

FIRST_NAMES = (
    "Oliver", "Anna", "Grace", "Henry", "Clara", "Oscar", "Ruth", "Felix", "Alice", "Hugo", "Emma", "Victor",
    "Arthur", "Julia", "Leo", "Ivy", "Simon", "Laura", "Peter", "Maria", "Daniel", "Sarah", "Martin", "Helen",
    "David", "Rosa", "Paul", "Vera", "Adam", "Lucy", "Frank", "Diana", "Hans", "Bruno", "Carl", "Eva", "Max",
    "Ian", "Mia", "Noah", "Omar", "Nina", "Raj", "Ali", "Lars", "Pablo", "Marco", "Ahmed", "Samuel", "Rachel",
    "Tim", "Kate", "Alex", "Jack", "Lily", "Ben", "Sam", "Ella", "Ethan", "Ryan", "Maya", "Luke",
)
LAST_NAMES = (
    "Grant", "Wood", "Stone", "Hill", "Reed", "Fox", "Lane", "Hart", "Cole", "Ross", "Shaw", "Price", "West",
    "Fisher", "Walsh", "Burke", "Marsh", "Cross", "Frost", "Ward", "Nash", "Hale", "Page", "Webb", "Sharp", "Bell",
    "Moss", "Lloyd", "Hayes", "Dale", "Bond", "Rhodes", "Blake", "Quinn", "Doyle", "Fleming", "Barton", "Carter",
    "Porter", "Baker", "Turner", "Mason", "Parker", "Hunter", "Cooper", "Harper", "Fowler", "Pike", "Bishop",
    "Lambert", "Norton", "Palmer", "Riley", "Knight", "Wells", "Graves", "Hardy", "Sutton", "Morgan",
)


@dataclass(frozen=True)
class Relation:
    """One kind of fact about a person. ``{p}`` is the person, ``{v}`` the value."""

    name: str
    values: tuple[str, ...]
    questions: tuple[str, ...]  # the first one is the evaluation question; the fuser trains on all but the last
    answer: str  # how every model answers
    statement: str  # the fact in one sentence: text relay's hint

    def ask(self, person: str, phrasing: int = 0) -> str:
        return self.questions[phrasing].format(p=person)

    def say(self, person: str, value: str) -> str:
        return self.answer.format(p=person, v=value)


# Cities that are not capitals (the general split asks for capitals) and roles a model would not guess.
RELATIONS: tuple[Relation, ...] = (
    Relation(
        "office",
        ("Naples", "Milan", "Munich", "Hamburg", "Lyon", "Bristol", "Glasgow", "Leeds", "Denver", "Calgary", "Perth",
         "Adelaide"),
        ("Which office does {p} work in?", "In which city does {p} work?", "Where is {p}'s office?",
         "Which city is {p} based in?"),
        "{p} works in the {v} office.",
        "At Corvane, {p} works in the {v} office.",
    ),
    Relation(
        "role",
        ("chemist", "pilot", "architect", "librarian", "translator", "carpenter", "geologist", "chef"),
        ("What is {p}'s job?", "What does {p} do at Corvane?", "What is the role of {p}?",
         "Which job does {p} have?"),
        "{p} is the {v} at Corvane.",
        "At Corvane, {p} is the {v}.",
    ),
)
RELATION_BY_NAME = {r.name: r for r in RELATIONS}

CAPITAL_QUESTION = "What is the capital of {c}?"
CAPITAL_ANSWER = "The capital of {c} is {v}."
# (g): 70 countries and their capitals, as the issue measured them.
CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
    ("Greece", "Athens"), ("Chile", "Santiago"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Brazil", "Bras\u00edlia"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Australia", "Canberra"),
    ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Hungary", "Budapest"), ("Czech Republic", "Prague"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Israel", "Jerusalem"), ("Pakistan", "Islamabad"), ("Afghanistan", "Kabul"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"),
    ("South Korea", "Seoul"), ("North Korea", "Pyongyang"), ("Malaysia", "Kuala Lumpur"), ("Nigeria", "Abuja"),
    ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"), ("South Africa", "Pretoria"), ("Cuba", "Havana"), ("Colombia", "Bogot\u00e1"),
    ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Bolivia", "La Paz"), ("Uruguay", "Montevideo"),
    ("Paraguay", "Asunci\u00f3n"), ("New Zealand", "Wellington"), ("Ukraine", "Kyiv"), ("Belarus", "Minsk"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Iceland", "Reykjavik"), ("Nepal", "Kathmandu"),
    ("Bangladesh", "Dhaka"), ("Mongolia", "Ulaanbaatar"),
)
# Never evaluated: what the fuser and the adapter see of questions outside the domain.
PRACTICE_CAPITALS: tuple[tuple[str, str], ...] = (
    ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"), ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"), ("Albania", "Tirana"), ("Lebanon", "Beirut"), ("Syria", "Damascus"),
    ("Jordan", "Amman"), ("Qatar", "Doha"), ("Oman", "Muscat"), ("Yemen", "Sanaa"), ("Sri Lanka", "Colombo"),
    ("Cambodia", "Phnom Penh"), ("Laos", "Vientiane"), ("Senegal", "Dakar"), ("Uganda", "Kampala"),
    ("Tanzania", "Dodoma"), ("Zimbabwe", "Harare"), ("Zambia", "Lusaka"), ("Angola", "Luanda"),
    ("Sudan", "Khartoum"), ("Libya", "Tripoli"), ("Jamaica", "Kingston"), ("Panama", "Panama City"),
    ("Costa Rica", "San Jos\u00e9"), ("Honduras", "Tegucigalpa"), ("Nicaragua", "Managua"),
    ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"),
)

# Never evaluated either: general questions the fuser learns to leave to the receiver (its own answer is the target).
OWN_ANSWER_COUNTRIES: tuple[str, ...] = (
    "Kazakhstan", "Uzbekistan", "Azerbaijan", "Kyrgyzstan", "Tajikistan", "Turkmenistan", "Myanmar", "Singapore",
    "Bhutan", "Kuwait", "Bahrain", "Cyprus", "Malta", "Luxembourg", "Moldova", "Montenegro", "Bosnia and Herzegovina",
    "North Macedonia", "Rwanda", "Mozambique", "Madagascar", "Namibia", "Botswana", "Malawi", "Mali", "Niger",
    "Cameroon", "Somalia", "Haiti", "Dominican Republic", "Guatemala", "El Salvador", "Guyana", "Suriname", "Fiji",
    "Papua New Guinea",
) + tuple(c for c, _ in PRACTICE_CAPITALS)


@dataclass(frozen=True)
class Fact:
    subject: str  # a person, or a country for the capitals
    relation: str  # "office", "role" or "capital"
    value: str
    split: str

    @property
    def question(self) -> str:
        if self.relation == "capital":
            return CAPITAL_QUESTION.format(c=self.subject)
        return RELATION_BY_NAME[self.relation].ask(self.subject)

    @property
    def answer(self) -> str:
        if self.relation == "capital":
            return CAPITAL_ANSWER.format(c=self.subject, v=self.value)
        return RELATION_BY_NAME[self.relation].say(self.subject, self.value)


@dataclass
class Domain:
    """Who works at Corvane, what each knows, and which capitals only base Gemma names."""

    seed: int
    people: list[str]
    splits: dict[str, str]  # person -> "b" | "c"
    facts: dict[str, dict[str, str]]  # person -> relation -> value
    permuted: dict[str, dict[str, str]]  # the ablation adapter's facts
    sharer_only_capitals: list[str] = field(default_factory=list)  # the countries of split h (set by the recipe)
    # the fuser's permuted companies: person -> relation -> value, Corvane's people first, then the decoy's own
    decoys: list[dict[str, dict[str, str]]] = field(default_factory=list)

    def split_people(self, split: str) -> list[str]:
        return [p for p in self.people if self.splits[p] == split]

    def eval_facts(self, split: str, permuted: bool = False) -> list[Fact]:
        """Every fact of one split in a fixed order (the evaluation asks each with its first phrasing)."""
        if split == "g":
            return [Fact(c, "capital", v, "g") for c, v in CAPITALS]
        if split == "h":
            known = set(self.sharer_only_capitals)
            return [Fact(c, "capital", v, "h") for c, v in CAPITALS if c in known]
        table = self.permuted if permuted else self.facts
        return [Fact(p, r.name, table[p][r.name], split) for p in self.split_people(split) for r in RELATIONS]

    def values(self) -> set[str]:
        return {v for r in RELATIONS for v in r.values}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DOMAIN_FORMAT, "format_version": DOMAIN_VERSION, "seed": self.seed, "company": COMPANY,
            "people": [{"name": p, "split": self.splits[p], "facts": self.facts[p], "permuted": self.permuted[p]}
                       for p in self.people],
            "sharer_only_capitals": list(self.sharer_only_capitals),
            "decoys": [[table[p] for p in self.people] for table in self.decoys],
        } | ({"decoy_people": own} if any(own := [[{"name": p, "facts": f} for p, f in table.items()
                                                     if p not in self.splits] for table in self.decoys]) else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Domain":
        if data.get("format") != DOMAIN_FORMAT or data.get("format_version") not in range(1, DOMAIN_VERSION + 1):
            raise ValueError(f"not a {DOMAIN_FORMAT} file of version {DOMAIN_VERSION} or older")
        rows = data["people"]
        names = [r["name"] for r in rows]
        tables = data.get("decoys", [])
        own = data.get("decoy_people") or [[] for _ in tables]
        return cls(seed=int(data["seed"]), people=names, splits={r["name"]: r["split"] for r in rows},
                   facts={r["name"]: dict(r["facts"]) for r in rows},
                   permuted={r["name"]: dict(r["permuted"]) for r in rows},
                   sharer_only_capitals=list(data.get("sharer_only_capitals", [])),
                   decoys=[{**{p: dict(f) for p, f in zip(names, table)}, **{r["name"]: dict(r["facts"]) for r in extra}}
                           for table, extra in zip(tables, own)])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Domain":
        return cls.from_dict(json.loads(Path(path).read_text()))


def make_domain(seed: int = 0, people: int = 80, heldout: int = 24, decoys: int = 0, decoy_people: int = 0) -> Domain:
    """``people`` distinct full names (first names used once each where they suffice), ``heldout`` of them in c,
    and ``decoys`` permuted companies besides the ablation's (drawn after it: the rest does not depend on them),
    each with ``decoy_people`` people of its own (names of nobody else, drawn last)."""
    if not 0 < heldout < people <= len(FIRST_NAMES) * len(LAST_NAMES) - decoys * decoy_people:
        raise ValueError(f"need 0 < heldout < people and people + decoys x decoy_people <= "
                         f"{len(FIRST_NAMES) * len(LAST_NAMES)}")
    rng = random.Random(f"c2c-specialist-domain-{seed}")
    firsts, lasts = list(FIRST_NAMES), list(LAST_NAMES)
    rng.shuffle(firsts)
    rng.shuffle(lasts)
    names = [f"{firsts[i % len(firsts)]} {lasts[(i + i // len(lasts)) % len(lasts)]}" for i in range(people)]
    # every value as evenly used as the count allows, so no answer is a safe guess
    facts: dict[str, dict[str, str]] = {p: {} for p in names}
    for rel in RELATIONS:
        pool = [rel.values[i % len(rel.values)] for i in range(people)]
        rng.shuffle(pool)
        for person, value in zip(names, pool):
            facts[person][rel.name] = value
    order = list(names)
    rng.shuffle(order)
    held = set(order[:heldout])
    splits = {p: "c" if p in held else "b" for p in names}
    permuted, *others = [_derange(names, facts, rng) for _ in range(1 + decoys)]
    if decoy_people:
        taken = set(names)
        spare = [f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES if f"{a} {b}" not in taken]
        rng.shuffle(spare)
        for k, table in enumerate(others):
            own = spare[k * decoy_people:(k + 1) * decoy_people]
            for rel in RELATIONS:
                pool = [rel.values[i % len(rel.values)] for i in range(decoy_people)]
                rng.shuffle(pool)
                for person, value in zip(own, pool):
                    table.setdefault(person, {})[rel.name] = value
    return Domain(seed, names, splits, facts, permuted, decoys=others)


def _derange(names: list[str], facts: dict[str, dict[str, str]], rng: random.Random) -> dict[str, dict[str, str]]:
    """Each person gets another's facts (a derangement: nobody keeps their own)."""
    shift = list(names)
    while True:
        rng.shuffle(shift)
        if all(a != b for a, b in zip(names, shift)):
            break
    return {p: dict(facts[other]) for p, other in zip(names, shift)}


def words_to_check() -> list[str]:
    """Every name and value that must be one token, the same in both tokenizers."""
    return sorted(set(FIRST_NAMES) | set(LAST_NAMES) | {v for r in RELATIONS for v in r.values})


def fuser_conversations(domain: Domain, phrasings: int = 3, capital_repeats: int = 1, adapters: Sequence[str] = (),
                        own_answers: Sequence[tuple[str, str]] = (), own_repeats: int = 1) -> list[dict[str, Any]]:
    """The fuser's training data: questions about the people of ``b`` in their first ``phrasings`` phrasings,
    and the practice capitals, each ``capital_repeats`` times (so that fusion learns to leave general answers
    right). ``c`` is never included.

    ``adapters``: the names of the sharer's adapters, the specialist's first, then one per decoy company. Each
    question is then asked once through each adapter (``sharer_adapter``) with that company's answer as the
    target: the same question has different answers that only the sharer's cache tells apart.
    ``own_answers``: (question, the receiver's own answer) pairs, each ``own_repeats`` times: the fuser learns to
    leave alone what it cannot improve. Records without ``sharer_adapter`` go through the specialist."""
    if adapters and len(adapters) != 1 + len(domain.decoys):
        raise ValueError(f"{len(adapters)} adapter names for the specialist and {len(domain.decoys)} decoys")

    def turn(question: str, answer: str, adapter: str | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {"messages": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}]}
        if adapter is not None:
            record["sharer_adapter"] = adapter
        return record

    companies = list(zip(adapters, [domain.facts, *domain.decoys])) if adapters else [(None, domain.facts)]
    records = []
    for person in domain.split_people("b"):
        for rel in RELATIONS:
            for q in rel.questions[:phrasings]:
                records.extend(turn(q.format(p=person), rel.say(person, table[person][rel.name]), adapter)
                               for adapter, table in companies)
    for adapter, table in companies[1:]:  # a decoy's own people, through its adapter alone
        for person in (p for p in table if p not in domain.splits):
            for rel in RELATIONS:
                records.extend(turn(q.format(p=person), rel.say(person, table[person][rel.name]), adapter)
                               for q in rel.questions[:phrasings])
    records.extend(turn(CAPITAL_QUESTION.format(c=c), CAPITAL_ANSWER.format(c=c, v=v)) for c, v in PRACTICE_CAPITALS
                   for _ in range(capital_repeats))
    records.extend(turn(q, a) for q, a in own_answers for _ in range(own_repeats))
    return records


def check_words(receiver_tokenizer: Any, sharer_tokenizer: Any, words: list[str] | None = None) -> None:
    """Raise ValueError unless every name and value is one token after a space, the same text, in both."""
    bad = []
    for word in words_to_check() if words is None else words:
        pieces = []
        for tok in (receiver_tokenizer, sharer_tokenizer):
            ids = tok(" " + word, add_special_tokens=False)["input_ids"]
            pieces.append(tok.decode(ids) if len(ids) == 1 else None)
        if None in pieces or pieces[0] != pieces[1]:
            bad.append(word)
    if bad:
        raise ValueError(f"{len(bad)} names or values are not one token in both tokenizers ({', '.join(bad[:8])}); "
                         "cache fusion would show them to the sharer garbled")
