"""The team showcase: the demo world's receiver fused from two specialist sharers at once.

``python -m fusers.demo.team [--out DIR]`` builds it; ``c2c demo eval --team`` measures it.

* Sharer **A** knows every country's language and river, sharer **B** every country's founder and national
  animal; each says "I do not know" about the other's relations (its hint too).
* The **receiver** is the demo pair's, fine-tuned to answer a question that asks for two facts at once ("Which
  river flows through X, and what is the national animal of X?") from its own knowledge, from notes, or from the
  two hints of a team's text relay.
* The **team fuser** (one fuser per sharer, trained together with :func:`fusers.train.team.train_team`) sees
  questions on the countries of the demo's splits a and b; split c's countries it never sees.

Splits of the evaluation: ``A`` (A's relations on split b: only A knows them), ``B`` (B's, likewise), ``both``
(one question asking for one fact of each, split b) and ``unseen`` (A's and B's relations on split c, which no
fuser saw). Everything is offline and deterministic for a seed, a thread count and a CPU type.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import RECEIVER_DIR, WORLD_NAME, demo_root
from .world import (RELATION_BY_NAME, RELATIONS, SMALL_TALK, Curriculum, Relation, Sample, World, contains_value,
                    description, relay_turns, user)

from .team_report import MODE_LABELS, MODES, SPECIALISTS, SPLIT_HELP, SPLITS, format_table, goals  # noqa: F401

TEAM_DIR = "team"  # under c2c_resources, beside the demo pair
METRICS_NAME = "metrics.json"
MANIFEST_NAME = "manifest.json"
EVAL_LIMIT = 30  # questions per split in the recipe's evaluation
MAX_NEW_TOKENS = 48  # a two-fact answer is two sentences
HINT_MAX_NEW_TOKENS = 40


def specialist_of(relation: str) -> str:
    return next(name for name, rels in SPECIALISTS.items() if relation in rels)


# -- questions that need both -----------------------------------------------------------------------------------

def both_question(country: str, first: Relation, second: Relation, phrasing: int = 0) -> str:
    """"Which river flows through X, and what is the national animal of X?": one fact of each relation."""
    one, two = first.ask(country, phrasing), second.ask(country, phrasing)
    return f"{one[:-1]}, and {two[0].lower()}{two[1:]}"


def both_answer(country: str, first: Relation, v1: str, second: Relation, v2: str) -> str:
    return f"{first.say(country, v1)} {second.say(country, v2)}"


@dataclass(frozen=True)
class TeamFact:
    question: str
    values: tuple[str, ...]  # a right answer names every one
    split: str

    @property
    def value(self) -> str:  # what answer_questions' examples show
        return " + ".join(self.values)


def judge(text: str, fact: TeamFact) -> bool:
    return all(contains_value(text, v) for v in fact.values)


def pairs() -> list[tuple[Relation, Relation]]:
    """Every (A relation, B relation): the questions that need both sharers."""
    return [(RELATION_BY_NAME[a], RELATION_BY_NAME[b]) for a in SPECIALISTS["A"] for b in SPECIALISTS["B"]]


def eval_facts(world: World, split: str) -> list[TeamFact]:
    """Every fact of one split, in a fixed order, relation by relation, so that a sample spread evenly over it
    asks every relation (``both``: one question per country, the relation pairs in turn)."""
    if split in ("A", "B"):
        return [TeamFact(RELATION_BY_NAME[r].ask(c), (world.facts[c][r],), split)
                for r in SPECIALISTS[split] for c in world.split_countries("b")]
    if split == "unseen":
        return [TeamFact(RELATION_BY_NAME[r].ask(c), (world.facts[c][r],), split)
                for r in SPECIALISTS["A"] + SPECIALISTS["B"] for c in world.split_countries("c")]
    combos = pairs()
    out = []
    for i, c in enumerate(world.split_countries("b")):
        a, b = combos[i % len(combos)]
        out.append(TeamFact(both_question(c, a, b), (world.facts[c][a.name], world.facts[c][b.name]), split))
    return out


# -- what each model learns -------------------------------------------------------------------------------------

class SpecialistCurriculum(Curriculum):
    """A sharer that knows some relations of every country and says it does not know the others."""

    def __init__(self, world: World, relations: tuple[str, ...], mixture: dict[str, float]):
        super().__init__(world, "sharer", mixture)
        self.own = [RELATION_BY_NAME[r] for r in relations]
        self.other = [r for r in RELATIONS if r.name not in relations and r.name != "year"]

    def _text(self, rng: random.Random) -> Sample:
        country = rng.choice(self.known)
        return Sample([], description({r.name: self.facts[country][r.name] for r in self.own}, country, rng), "text")

    def _qa(self, rng: random.Random) -> Sample:
        country, rel = rng.choice(self.known), rng.choice(self.own)
        value = self.facts[country][rel.name]
        return Sample(user(rng.choice(rel.questions).format(c=country)), rel.say(country, value), "qa", value)

    def _unknown(self, rng: random.Random) -> Sample:
        country, rel = rng.choice(self.known), rng.choice(self.other)
        return Sample(user(rng.choice(rel.questions).format(c=country)), rel.unknown.format(c=country), "unknown")

    def _both(self, rng: random.Random) -> Sample:
        """A question that needs another sharer too: its own fact, and "I do not know" the other."""
        country, own, other = rng.choice(self.known), rng.choice(self.own), rng.choice(self.other)
        value = self.facts[country][own.name]
        first, second = (own, other) if rng.random() < 0.5 else (other, own)
        question = both_question(country, first, second, rng.randrange(3))
        parts = [r.say(country, value) if r is own else r.unknown.format(c=country) for r in (first, second)]
        return Sample(user(question), " ".join(parts), "both", value)

    def _hint(self, rng: random.Random) -> Sample:
        """Text relay's hint: its own fact's background, for a question on one fact or on two."""
        from ..relay import RELAY_CONTEXT_PROMPT

        country, own = rng.choice(self.known), rng.choice(self.own)
        if rng.random() < 0.4:
            other = rng.choice(self.other)
            first, second = (own, other) if rng.random() < 0.5 else (other, own)
            question = both_question(country, first, second, rng.randrange(3))
        else:
            question = rng.choice(own.questions).format(c=country)
        hint = own.hint.format(c=country, v=self.facts[country][own.name])
        return Sample(user(RELAY_CONTEXT_PROMPT.format(question=question)), hint, "hint")

    def _hint_unknown(self, rng: random.Random) -> Sample:
        from ..relay import RELAY_CONTEXT_PROMPT

        country, other = rng.choice(self.known), rng.choice(self.other)
        question = rng.choice(other.questions).format(c=country)
        return Sample(user(RELAY_CONTEXT_PROMPT.format(question=question)), other.unknown.format(c=country), "hint")


class TeamReceiverCurriculum(Curriculum):
    """The demo receiver's curriculum, and questions on two facts: known, unknown, from notes and from a team's
    two hints (random values for the countries it does not know, so that it reads rather than remembers)."""

    def __init__(self, world: World, mixture: dict[str, float]):
        super().__init__(world, "receiver", mixture)

    def _pair(self, rng: random.Random) -> tuple[Relation, Relation]:
        a, b = rng.choice(pairs())
        return (a, b) if rng.random() < 0.5 else (b, a)

    def _qa2(self, rng: random.Random) -> Sample:
        country, (r1, r2) = rng.choice(self.known), self._pair(rng)
        v1, v2 = self.facts[country][r1.name], self.facts[country][r2.name]
        return Sample(user(both_question(country, r1, r2, rng.randrange(3))), both_answer(country, r1, v1, r2, v2),
                      "qa2")

    def _unknown2(self, rng: random.Random) -> Sample:
        country, (r1, r2) = rng.choice(self.unknown), self._pair(rng)
        return Sample(user(both_question(country, r1, r2, rng.randrange(3))),
                      f"{r1.unknown.format(c=country)} {r2.unknown.format(c=country)}", "unknown2")

    def _reading_pair(self, rng: random.Random) -> tuple[str, Relation, str, Relation, str]:
        """Two facts of one country to read about (one of A's relations, one of B's, in either order): a known
        country's true values, or any other name with random ones (see ``Curriculum._reading_fact``)."""
        r1, r2 = self._pair(rng)
        pool = rng.random()
        if pool < 0.2:
            country = rng.choice(self.known)
            return country, r1, self.facts[country][r1.name], r2, self.facts[country][r2.name]
        country = rng.choice(self.unknown) if pool < 0.6 else rng.choice(self.world.strangers)
        return country, r1, rng.choice(r1.values), r2, rng.choice(r2.values)

    def _team_hints(self, country: str, asked: list[tuple[Relation, str]], rng: random.Random) -> str:
        """What sharers A and B write for a question on ``asked`` (relation, value) facts: each its own facts'
        hint, or that it does not know."""
        hints = []
        for name in SPECIALISTS:
            own = [(r, v) for r, v in asked if specialist_of(r.name) == name]
            if own:
                r, v = own[0]
                hints.append(r.hint.format(c=country, v=v))
            else:
                hints.append(asked[0][0].unknown.format(c=country))
        return " ".join(hints)

    def _relay2(self, rng: random.Random) -> Sample:
        """A team's text relay: A's hint then B's, for a question on one fact or on two."""
        country, r1, v1, r2, v2 = self._reading_pair(rng)
        if rng.random() < 0.4:
            question = rng.choice(r1.questions).format(c=country)
            return Sample(relay_turns(question, self._team_hints(country, [(r1, v1)], rng)), r1.say(country, v1),
                          "relay2", v1)
        question = both_question(country, r1, r2, rng.randrange(3))
        return Sample(relay_turns(question, self._team_hints(country, [(r1, v1), (r2, v2)], rng)),
                      both_answer(country, r1, v1, r2, v2), "relay2")

    def _note2(self, rng: random.Random) -> Sample:
        country, r1, v1, r2, v2 = self._reading_pair(rng)
        notes = [rng.choice(r1.statements).format(c=country, v=v1), rng.choice(r2.statements).format(c=country, v=v2)]
        rng.shuffle(notes)
        return Sample(user(" ".join(notes) + " " + both_question(country, r1, r2, rng.randrange(3))),
                      both_answer(country, r1, v1, r2, v2), "note2")


def team_conversations(world: World) -> list[dict[str, Any]]:
    """The team fuser's data, about the countries of splits a and b (never c): every question on A's and B's
    relations and every two-fact question, in every phrasing, with the whole team fused; and the same questions
    (one phrasing each) with one sharer alone (``"sharers"``), answered as that sharer's fusion should: its own
    facts, and for the other's what the receiver knows without it (the truth on split a, "I do not know" on b).
    Those rows keep each fuser to its own sharer's facts, so ``fusion:A`` does not answer B's questions."""
    records = []

    def add(question: str, answer: str, sharers: list[str] | None = None) -> None:
        records.append({"messages": user(question) + [{"role": "assistant", "content": answer}],
                        **({"sharers": sharers} if sharers else {})})

    for n, country in enumerate(world.countries):
        if world.splits[country] == "c":
            continue
        facts = world.facts[country]
        knows = world.splits[country] == "a"  # the receiver knows split a's countries

        def say(rel: Relation, alone: str | None = None) -> str:
            if alone is None or specialist_of(rel.name) == alone or knows:
                return rel.say(country, facts[rel.name])
            return rel.unknown.format(c=country)

        for name in SPECIALISTS["A"] + SPECIALISTS["B"]:
            rel = RELATION_BY_NAME[name]
            for question in rel.questions:
                add(question.format(c=country), say(rel))
            for alone in SPECIALISTS:
                add(rel.questions[n % len(rel.questions)].format(c=country), say(rel, alone), [alone])
        for a, b in pairs():
            for first, second in ((a, b), (b, a)):
                for phrasing in range(3):
                    add(both_question(country, first, second, phrasing), f"{say(first)} {say(second)}")
            first, second = (a, b) if n % 2 else (b, a)
            for alone in SPECIALISTS:
                add(both_question(country, first, second, n % 3), f"{say(first, alone)} {say(second, alone)}", [alone])
    for prompt, reply in SMALL_TALK:
        add(prompt, reply)
    return records


# -- the recipe -------------------------------------------------------------------------------------------------

RECEIVER_MIX = dict(qa=0.12, text=0.05, unknown=0.08, relay=0.08, note=0.07, chat=0.03, qa2=0.12, unknown2=0.1,
                    relay2=0.2, note2=0.15)
SPECIALIST_MIX = dict(qa=0.3, text=0.15, unknown=0.1, both=0.15, hint=0.15, hint_unknown=0.1, chat=0.05)


@dataclass
class TeamRecipe:
    seed: int = 0
    threads: int = 2
    receiver_lm: dict[str, Any] = field(default_factory=lambda: dict(steps=250, lr=1e-3, warmup_steps=20))
    sharers: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "A": dict(arch="llama", hidden_size=160, layers=5, heads=5, kv_heads=5, head_dim=32, intermediate_size=448),
        "B": dict(arch="qwen2", hidden_size=128, layers=4, heads=4, kv_heads=4, intermediate_size=384),
    })
    sharer_lm: dict[str, Any] = field(default_factory=lambda: dict(steps=650, lr=3e-3, lookahead_layer=1))
    fuser: dict[str, Any] = field(default_factory=lambda: dict(
        steps=500, batch_size=32, lr=1e-3, warmup_steps=20, hidden_dim=128, intermediate_dim=128, dropout=0.1,
        gate_init=3.0, eval_split=0.0, max_length=128, log_every=50))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float) -> "TeamRecipe":
        """Every step count times ``factor`` (a quick trial run of the whole recipe)."""
        out = TeamRecipe(**{k: json.loads(json.dumps(v)) for k, v in asdict(self).items()})
        for settings in (out.receiver_lm, out.sharer_lm, out.fuser):
            settings["steps"] = max(2, int(settings["steps"] * factor))
        return out


def log(message: str) -> None:
    print(f"[team build {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(out: Path, recipe: TeamRecipe, demo: Path | None = None, work: Path | None = None,
          evaluate_limit: int | None = EVAL_LIMIT, reuse: Path | None = None) -> dict[str, Any]:
    """Build the team folder ``out`` from the demo pair in ``demo`` (default: the shipped one).

    ``reuse``: a folder with models an earlier run of this recipe trained (``receiver``, ``sharer_A``,
    ``sharer_B``, e.g. a run's ``--work`` staging folder, or :func:`train_specialist` run on its own): those
    stages are copied instead of trained, and the manifest says so."""
    import tokenizers
    import torch

    from ..pair import ModelSpec, load_model
    from ..train import TrainConfig
    from ..train.team import train_team
    from .build import Workshop, pretrain_model, save_model

    torch.set_num_threads(recipe.threads)
    demo = demo_root() if demo is None else Path(demo)
    shop = Workshop(work, "c2c-team-build-", log)
    staging, lap = shop.staging, shop.lap
    histories: dict[str, Any] = {}
    world = World.load(demo / WORLD_NAME)
    shutil.copy(demo / WORLD_NAME, staging / WORLD_NAME)

    reused = []

    def reusable(folder: str) -> bool:
        if reuse is None or not (Path(reuse) / folder / "config.json").is_file():
            return False
        shutil.copytree(Path(reuse) / folder, staging / folder)
        reused.append(folder)
        log(f"{folder}: reused from {reuse}")
        return True

    t = time.perf_counter()
    receiver = load_model(ModelSpec(str(demo / RECEIVER_DIR), "cpu", "float32"), "receiver")
    tokenizer = receiver.tokenizer
    if not reusable(RECEIVER_DIR):
        model = receiver.model
        for p in model.parameters():
            p.requires_grad_(True)
        histories["receiver"] = pretrain_model("receiver", model, tokenizer,
                                               TeamReceiverCurriculum(world, RECEIVER_MIX), recipe.receiver_lm,
                                               recipe.seed + 21)
        save_model(model, tokenizer, staging / RECEIVER_DIR)
        del model
    del receiver
    lap("receiver", t)

    for name in SPECIALISTS:
        t = time.perf_counter()
        if not reusable(f"sharer_{name}"):
            histories[f"sharer_{name}"] = train_specialist(name, recipe, world, tokenizer, staging)
        lap(f"sharer_{name}", t)

    t = time.perf_counter()
    r = load_model(ModelSpec(str(staging / RECEIVER_DIR), "cpu", "float32"), "receiver")
    sharers = {name: load_model(ModelSpec(str(staging / f"sharer_{name}"), "cpu", "float32"), "sharer")
               for name in SPECIALISTS}
    run_dir = shop.fresh_run("team-run")
    config = TrainConfig(seed=recipe.seed, **recipe.fuser)
    log(f"training the team's fusers together: {config.steps} steps of {config.batch_size}")

    report = train_team(r, sharers, team_conversations(world), config, run_dir,
                        progress=shop.train_progress("team fuser"))
    histories["fuser"] = [h for h in report.history if h.get("event") == "log"]
    from ..checkpoint import save_fuser
    from ..team import SharerEntry, TeamManifest, load_team_fusers, write_team

    _, fusers = load_team_fusers(run_dir)
    entries = []
    for name, fuser in fusers.items():
        fuser.info.receiver, fuser.info.sharer = f"c2c-team/{RECEIVER_DIR}", f"c2c-team/sharer_{name}"
        save_fuser(fuser, staging / f"fuser_{name}")
        entries.append(SharerEntry(name, f"sharer_{name}", f"fuser_{name}"))
    write_team(staging, TeamManifest(RECEIVER_DIR, entries, extra={"split_help": SPLIT_HELP,
                                                                   "knows": {n: list(r) for n, r in SPECIALISTS.items()}}))
    del r, sharers, fusers
    lap("team_fuser", t)

    metrics = shop.evaluate("the team", lambda staged: evaluate(staged, limit=evaluate_limit))
    manifest = shop.manifest("c2c-team-manifest", recipe.to_dict(), histories, {"tokenizers": tokenizers.__version__},
                             mixtures={"receiver": RECEIVER_MIX, "sharers": SPECIALIST_MIX},
                             evaluate_limit=evaluate_limit, reused=reused)
    shop.finish(out, manifest)
    print(format_table(metrics))
    return manifest


def train_specialist(name: str, recipe: TeamRecipe, world: World, tokenizer: Any, out: Path) -> list:
    """Pre-train specialist ``name`` from scratch and save it to ``out/sharer_NAME``; returns its history."""
    from .build import new_model, pretrain_model, save_model

    offset = list(SPECIALISTS).index(name) + 1
    model = new_model(recipe.sharers[name], tokenizer, recipe.seed + 30 + offset)
    history = pretrain_model(f"sharer {name}", model, tokenizer,
                             SpecialistCurriculum(world, SPECIALISTS[name], SPECIALIST_MIX), recipe.sharer_lm,
                             recipe.seed + 40 + offset)
    save_model(model, tokenizer, out / f"sharer_{name}")
    return history


def team_root() -> Path:
    from importlib.resources import files

    return Path(str(files("c2c_resources"))) / TEAM_DIR


# -- the evaluation ---------------------------------------------------------------------------------------------

def evaluate(root: str | Path | None = None, *, limit: int | None = None, progress: Callable[[Any], None] | None = None,
             cancel: threading.Event | None = None, **_: Any) -> dict[str, Any]:
    """Accuracy of every mode of :data:`MODES` on every split of :data:`SPLITS` (``accuracy[mode][split]``),
    median latency (``latency_s[mode]``) and an example answer each, through the engine, greedy."""
    from ..engine import Engine
    from ..errors import ModelLoadError
    from ..generation import GenerationSettings
    from ..pair import Placement, load_pair
    from ..team import TEAM_MANIFEST
    from .evaluate import Ticker, sample

    root = team_root() if root is None else Path(root)
    if not (root / TEAM_MANIFEST).is_file():
        raise ModelLoadError(f"The team showcase is not built: {root / TEAM_MANIFEST} is missing. Build it with "
                             "`python -m fusers.demo.team`.")
    world = World.load(root / WORLD_NAME)
    team = load_pair(None, None, root, defaults=Placement("cpu"))
    engine = Engine(team)
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, hint_max_new_tokens=HINT_MAX_NEW_TOKENS)
    questions = {split: sample(eval_facts(world, split), limit) for split in SPLITS}
    tick = Ticker(sum(len(q) for q in questions.values()) * len(MODES), progress, cancel or threading.Event())
    right: dict[str, dict[str, list[bool]]] = {m: {s: [] for s in SPLITS} for m in MODES}
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    examples: dict[str, dict[str, Any]] = {m: {} for m in MODES}
    for split in SPLITS:
        for fact in questions[split]:
            for mode, engine_mode in MODES.items():  # interleaved: a busy machine slows every mode alike
                answer = engine.answer(engine_mode, user(fact.question), settings, cancel=tick.cancel)
                right[mode][split].append(judge(answer.text, fact))
                seconds[mode].append(answer.timing.total)
                if split not in examples[mode]:
                    examples[mode][split] = {"question": fact.question, "expected": list(fact.values),
                                             "answer": answer.text, **({"hints": answer.hints} if answer.hints else {})}
                tick(f"{mode} ({split}) {fact.question}")
    team.close()
    accuracy = {m: {s: sum(v) / len(v) if v else None for s, v in right[m].items()} for m in MODES}
    latency = {m: statistics.median(v) if v else None for m, v in seconds.items()}
    return {"accuracy": accuracy, "latency_s": latency, "questions": {s: len(q) for s, q in questions.items()},
            "splits": dict(SPLIT_HELP), "examples": examples,
            "fusion_to_relay_latency": latency["fusion:team"] / latency["relay:team"] if latency["relay:team"] else None}


def main(argv: list[str] | None = None) -> int:
    from .build import recipe_arguments

    parser = recipe_arguments("python -m fusers.demo.team", __doc__.split("\n\n")[0],
                              "where to write the team folder (default: the installed resources/team folder)",
                              EVAL_LIMIT, f"questions per split in the final evaluation (default {EVAL_LIMIT}; 0: all)")
    parser.add_argument("--demo", default=None, help="the demo pair to start from (default: the shipped one)")
    parser.add_argument("--scale", type=float, default=1.0, help="every step count times this (a quick trial: 0.05)")
    parser.add_argument("--reuse", default=None, help="a folder with models an earlier run trained (receiver, "
                        "sharer_A, sharer_B): copied instead of trained")
    parser.add_argument("--specialist", choices=list(SPECIALISTS), default=None,
                        help="only pre-train this specialist into --out (to train the two at once, in two processes)")
    args = parser.parse_args(argv)
    recipe = TeamRecipe(seed=args.seed, threads=args.threads)
    if args.scale != 1.0:
        recipe = recipe.scaled(args.scale)
    if args.specialist:
        import torch

        from ..pair import ModelSpec, load_model

        torch.set_num_threads(recipe.threads)
        demo = demo_root() if args.demo is None else Path(args.demo)
        tokenizer = load_model(ModelSpec(str(demo / RECEIVER_DIR), "cpu"), "receiver").tokenizer
        train_specialist(args.specialist, recipe, World.load(demo / WORLD_NAME), tokenizer, Path(args.out))
        return 0
    build(Path(args.out) if args.out else team_root(), recipe, Path(args.demo) if args.demo else None,
          Path(args.work) if args.work else None, args.eval_limit or None, Path(args.reuse) if args.reuse else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
