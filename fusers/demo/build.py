"""The recipe of the offline demo pair: ``python -m fusers.demo.build [--out resources/demo] [--seed 0]``.

1. Generate the world (:mod:`fusers.demo.world`) and a byte-level BPE tokenizer with a ChatML
   template that keeps every name and value whole.
2. Pre-train the receiver (Qwen3: 4 layers, width 128, 4 heads) on the third of the countries
   it knows, on saying "I do not know" about the others, and on answering from a hint in its
   context (text relay's layout and notes), with random values so that it learns to read rather
   than to remember.
3. Pre-train the sharer (Llama: 5 layers, width 160, 5 heads) on every fact, on answering
   questions and on writing text relay's one-sentence hint, with a lookahead loss that makes the
   question's closing positions predict the answer (see ``LMConfig.lookahead_layer``).
4. Fine-tune a copy of the sharer on the permuted world: the ablation's sharer. Only the MLPs of
   its first two layers learn, so it stores other facts in the same internal code.
5. Train the fuser with :mod:`fusers.train` (the trainer every user gets) on questions about the
   countries in splits a and b; split c is never shown to it.
6. Evaluate the shipped files with :func:`fusers.demo.evaluate.evaluate` and write ``metrics.json``.

Deterministic for a seed and a thread count (the default, 2, is what the shipped files used).
Models are stored in float16 and the fuser is trained on the float16-rounded models, so what
ships is exactly what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import (
    FUSER_DIR, MANIFEST_NAME, METRICS_NAME, PERMUTED_SHARER_DIR, RECEIVER_DIR, RECEIVER_NAME, SHARER_DIR, SHARER_NAME,
    WORLD_NAME, demo_root,
)

MANIFEST_FORMAT = "c2c-demo-manifest"

RECEIVER_MIX = dict(qa=0.3, text=0.15, about=0.05, unknown=0.15, relay=0.15, note=0.15, chat=0.05)
EVAL_LIMIT = 100  # questions per split in the recipe's evaluation: keeps the recipe under 30 minutes
SHARER_MIX = dict(qa=0.4, text=0.3, about=0.05, hint=0.2, chat=0.05)


@dataclass
class Recipe:
    """Every setting of the recipe (recorded in ``manifest.json``)."""

    seed: int = 0
    threads: int = 2
    countries: int = 240
    heldout: int = 30
    vocab_size: int = 2000
    receiver: dict[str, Any] = field(default_factory=lambda: dict(
        arch="qwen3", hidden_size=128, layers=4, heads=4, kv_heads=4, head_dim=32, intermediate_size=384))
    sharer: dict[str, Any] = field(default_factory=lambda: dict(
        arch="llama", hidden_size=160, layers=5, heads=5, kv_heads=5, head_dim=32, intermediate_size=448))
    receiver_lm: dict[str, Any] = field(default_factory=lambda: dict(steps=600, lr=3e-3))
    sharer_lm: dict[str, Any] = field(default_factory=lambda: dict(steps=700, lr=3e-3, lookahead_layer=1))
    # the ablation's sharer relearns its facts in the MLPs of the first two layers only (where the lookahead
    # puts the answer), so that the rest of its internal code, which the fuser learned to read, stays the same
    permuted_lm: dict[str, Any] = field(default_factory=lambda: dict(steps=600, lr=3e-3, warmup_steps=20,
                                                                      lookahead_layer=1,
                                                                      trainable=r"layers\.[01]\.mlp\."))
    fuser: dict[str, Any] = field(default_factory=lambda: dict(
        steps=1200, batch_size=32, lr=1e-3, warmup_steps=20, hidden_dim=128, intermediate_dim=128, dropout=0.1,
        gate_init=3.0, eval_split=0.0, max_length=128, log_every=50))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log(message: str) -> None:
    print(f"[demo build {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_tokenizer(world: Any, recipe: Recipe) -> Any:
    from ..engine import RELAY_ANSWER_PROMPT, RELAY_CONTEXT_PROMPT
    from ..tiny import bpe_tokenizer
    from .lm import value_token
    from .world import tokenizer_corpus

    corpus = tokenizer_corpus(world, random.Random(f"tokenizer-{recipe.seed}"))
    # the relay prompts are the longest texts the models read: make them a few tokens, not a hundred
    corpus += "\n" + "\n".join([RELAY_CONTEXT_PROMPT.replace("\n", " ")] * 200 + [RELAY_ANSWER_PROMPT.replace("\n", " ")] * 200)
    tokenizer = bpe_tokenizer(recipe.vocab_size, corpus)
    for value in sorted(world.values()):
        value_token(tokenizer, value)  # raises when a value is split
    return tokenizer


def new_model(spec: dict[str, Any], tokenizer: Any, seed: int) -> Any:
    from ..tiny import build_model, tiny_config

    spec = dict(spec)
    config = tiny_config(spec.pop("arch"), len(tokenizer), tokenizer=tokenizer, **spec)
    config.tie_word_embeddings = True  # small files: the output head shares the embedding
    return build_model(config, seed)


def save_model(model: Any, tokenizer: Any, path: Path) -> Path:
    """float16 on disk (half the bytes; loading upcasts to the compute dtype)."""
    if path.exists():
        shutil.rmtree(path)
    model.to(dtype=__import__("torch").float16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def pretrain_model(name: str, model: Any, tokenizer: Any, curriculum: Any, settings: dict[str, Any], seed: int) -> list:
    from .lm import LMConfig, pretrain, sample_stream

    cfg = LMConfig(seed=seed, **settings)
    log(f"pre-training the {name}: {cfg.steps} steps of {cfg.batch_size} examples")

    def progress(record: dict[str, Any]) -> None:
        log(f"{name} step {record['step']}/{record['steps']} loss {record['loss']:.3f} "
            f"token accuracy {record['token_accuracy']:.3f} ({record['tokens_per_s']:.0f} tokens/s)")

    return pretrain(model, tokenizer, sample_stream(curriculum, seed), cfg, progress=progress)


class Workshop:
    """Where a recipe works: a work folder (temporary unless given) with a fresh staging folder for the files it
    writes, and the time each stage took."""

    def __init__(self, work: Path | None, prefix: str, say: Callable[[str], None]):
        import tempfile

        self.began = time.perf_counter()
        self.say = say
        self.own = work is None
        self.work = Path(tempfile.mkdtemp(prefix=prefix)) if work is None else Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.staging = self.work / "out"
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.timings: dict[str, float] = {}
        # CPU seconds of this process per stage (all threads): on a shared machine the wall time depends on the
        # other jobs, this does not, so a quiet machine's time can be estimated from it
        self.cpu_s: dict[str, float] = {}
        self._cpu_mark = time.process_time()

    def lap(self, stage: str, start: float) -> None:
        self.timings[stage] = round(time.perf_counter() - start, 1)
        now = time.process_time()
        self.cpu_s[stage], self._cpu_mark = round(now - self._cpu_mark, 1), now
        self.say(f"{stage} took {self.timings[stage]:.0f} s ({self.cpu_s[stage]:.0f} CPU s)")

    def files(self) -> dict[str, int]:
        """Every staged file's size, by its path in the folder."""
        return {str(p.relative_to(self.staging)): p.stat().st_size for p in sorted(self.staging.rglob("*"))
                if p.is_file()}

    def fresh_run(self, name: str) -> Path:
        """An empty folder in the work folder for a training run (an earlier run's is removed: a run refuses a
        folder that holds one)."""
        run_dir = self.work / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        return run_dir

    def train_progress(self, label: str) -> Callable[[Any], None]:
        """A training run's progress callback: one line per logging step."""
        def report(p: Any) -> None:
            if p.event == "log":
                self.say(f"{label} step {p.step}/{p.total_steps} loss {p.loss:.3f} ({p.tokens_per_s:.0f} tokens/s)")
        return report

    def evaluate(self, what: str, run: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """The recipe's last stage: ``run(staging)`` measures the staged folder through the engine; its result is
        written beside the files as ``metrics.json`` and returned."""
        t = time.perf_counter()
        self.say(f"evaluating {what} through the engine")
        metrics = run(self.staging)
        (self.staging / METRICS_NAME).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        self.lap("evaluation", t)
        return metrics

    def manifest(self, format: str, recipe: dict[str, Any], histories: dict[str, Any], versions: dict[str, str],
                 **extra: Any) -> dict[str, Any]:
        """What every recipe records: its settings, each stage's time, the files, the last logged step of each
        model it trained and the library versions (results depend on them); ``extra`` adds the recipe's own."""
        import torch
        import transformers

        self.timings["total"] = round(time.perf_counter() - self.began, 1)
        files = self.files()
        return {
            "format": format, "format_version": 1, "recipe": recipe, "timings_s": self.timings, "cpu_s": self.cpu_s,
            "files": files, "total_bytes": sum(files.values()),
            "training": {name: (h[-1] if h else None) for name, h in histories.items()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, **versions},
            **extra,
        }

    def finish(self, out: Path, manifest: dict[str, Any]) -> None:
        """Write ``manifest.json``, put the staged folder at ``out`` (replacing it) and drop a temporary work folder."""
        (self.staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(self.staging, out)
        if self.own:
            shutil.rmtree(self.work, ignore_errors=True)
        self.say(f"wrote {out} ({manifest['total_bytes'] / 2**20:.1f} MiB) in {self.timings['total'] / 60:.1f} min")


def recipe_arguments(prog: str, description: str, out_help: str, eval_limit: int, eval_help: str
                     ) -> argparse.ArgumentParser:
    """The options every recipe takes. Also sets OpenMP's passive wait: on a shared machine, threads that spin
    while waiting for a busy core make training several times slower; waiting passively changes the speed only,
    not the results. (Read when torch loads.)"""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it; default 2)")
    parser.add_argument("--work", default=None, help="keep intermediate files here (default: a temporary folder)")
    parser.add_argument("--eval-limit", type=int, default=eval_limit, help=eval_help)
    return parser


def build(out: Path, recipe: Recipe, work: Path | None = None, evaluate_limit: int | None = None) -> dict[str, Any]:
    """Run the whole recipe and write the demo folder ``out``; returns the manifest."""
    import tokenizers
    import torch

    from ..checkpoint import load_fuser, save_fuser
    from ..pair import ModelSpec, load_model
    from ..train import TrainConfig, train
    from .evaluate import evaluate, format_table
    from .world import Curriculum, fuser_conversations, make_world

    torch.set_num_threads(recipe.threads)
    shop = Workshop(work, "c2c-demo-build-", log)
    work, staging, lap = shop.work, shop.staging, shop.lap
    histories: dict[str, Any] = {}

    t = time.perf_counter()
    world = make_world(recipe.seed, recipe.countries, recipe.heldout)
    world.save(staging / WORLD_NAME)
    tokenizer = build_tokenizer(world, recipe)
    lap("world_and_tokenizer", t)

    for role, spec, mixture, settings, offset, folder in (
        ("receiver", recipe.receiver, RECEIVER_MIX, recipe.receiver_lm, 1, RECEIVER_DIR),
        ("sharer", recipe.sharer, SHARER_MIX, recipe.sharer_lm, 2, SHARER_DIR),
    ):
        t = time.perf_counter()
        model = new_model(spec, tokenizer, recipe.seed + offset)
        histories[role] = pretrain_model(role, model, tokenizer, Curriculum(world, role, mixture), settings,
                                         recipe.seed + 10 + offset)
        save_model(model, tokenizer, staging / folder)
        del model
        lap(role, t)

    t = time.perf_counter()
    # the ablation's sharer starts from the shipped (rounded) sharer, so it keeps its internal code and
    # only its facts change
    permuted = load_model(ModelSpec(str(staging / SHARER_DIR), "cpu", "float32"), "sharer").model
    for p in permuted.parameters():
        p.requires_grad_(True)
    histories["sharer_permuted"] = pretrain_model("permuted sharer", permuted, tokenizer,
                                                  Curriculum(world, "permuted", SHARER_MIX), recipe.permuted_lm,
                                                  recipe.seed + 13)
    save_model(permuted, tokenizer, staging / PERMUTED_SHARER_DIR)
    del permuted
    lap("sharer_permuted", t)

    t = time.perf_counter()
    r = load_model(ModelSpec(str(staging / RECEIVER_DIR), "cpu", "float32"), "receiver")
    s = load_model(ModelSpec(str(staging / SHARER_DIR), "cpu", "float32"), "sharer")
    run_dir = shop.fresh_run("fuser-run")
    config = TrainConfig(seed=recipe.seed, **recipe.fuser)
    log(f"training the fuser with fusers.train: {config.steps} steps of {config.batch_size}")

    report = train(r, s, fuser_conversations(world), config, run_dir, progress=shop.train_progress("fuser"))
    fuser = load_fuser(run_dir)
    fuser.info.receiver, fuser.info.sharer = RECEIVER_NAME, SHARER_NAME
    save_fuser(fuser, staging / FUSER_DIR)
    histories["fuser"] = [h for h in report.history if h.get("event") == "log"]
    del r, s, fuser
    lap("fuser", t)

    metrics = shop.evaluate("the pair", lambda staged: evaluate(staged, limit=evaluate_limit))
    manifest = shop.manifest(MANIFEST_FORMAT, recipe.to_dict(), histories, {"tokenizers": tokenizers.__version__},
                             mixtures={"receiver": RECEIVER_MIX, "sharer": SHARER_MIX}, evaluate_limit=evaluate_limit)
    shop.finish(out, manifest)
    print(format_table(metrics))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = recipe_arguments(
        "python -m fusers.demo.build", __doc__.split("\n\n")[0],
        "where to write the demo pair (default: the installed resources/demo folder)", EVAL_LIMIT,
        f"questions per split in the final evaluation, spread evenly (default {EVAL_LIMIT}; 0 for all of them, "
        "which takes about 8 minutes more)")
    args = parser.parse_args(argv)
    recipe = Recipe(seed=args.seed, threads=args.threads)
    build(Path(args.out) if args.out else demo_root(), recipe, Path(args.work) if args.work else None,
          args.eval_limit or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
