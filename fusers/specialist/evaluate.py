"""Measuring the specialist pair: accuracy per mode on the four splits, latency, and the permuted-adapter ablation.

The demo pair's evaluation (:mod:`fusers.demo.evaluate`) does the answering: every answer goes through
:class:`fusers.engine.Engine`, greedy, as the app and ``c2c compare`` produce it, and is right when it
names the expected entity as a word.
"""

from __future__ import annotations

import copy
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..demo.evaluate import MODES, EvalProgress, Ticker, answer_questions, follow_rates, format_table, sample
from . import DOMAIN_NAME, METRICS_NAME, permuted_adapter_path, shipped_files, specialist_root
from .domain import DOMAIN_SPLITS, SPLIT_HELP, SPLITS, Domain

if TYPE_CHECKING:
    from ..pair import LoadedModel

MAX_NEW_TOKENS = 24  # answers are one sentence
HINT_MAX_NEW_TOKENS = 40
TABLE_HEADS = {"g": "(g) capitals", "b": "(b) specialist only, fuser trained", "c": "(c) specialist only, held out",
               "h": "(h) capitals only base Gemma names"}
ABLATION_OF = "an adapter trained on a permuted Corvane, {n} questions from (b) and (c)"


def with_adapter(base: "LoadedModel", adapter: Path) -> "LoadedModel":
    """A copy of ``base`` (a float model already loaded) with the adapter in ``adapter`` merged in; ``base`` stays
    as it was. Loading the real Gemma takes a minute; this takes seconds, so the recipe, the evaluation and the
    tests load the base once and put each adapter on a copy."""
    from .. import adapters
    from ..pair import LoadedModel

    if base.quantize != "none":
        raise ValueError("with_adapter copies float models only")
    model = adapters.apply(copy.deepcopy(base.model), Path(adapter), base.role, base.source, quantized=False)
    model.eval()
    loaded = LoadedModel.from_model(model, base.tokenizer, base.role, str(adapter), base.device, base.dtype)
    loaded.adapter, loaded.base = str(adapter), base.source
    return loaded


def with_adapters(base: "LoadedModel", adapters: dict[str, Path]) -> "LoadedModel":
    """A copy of ``base`` holding every adapter of ``adapters`` (name: folder) beside its weights, not merged, the
    first active; ``fusers.adapters.adapter_rows`` picks one per batch row. For training: inference merges."""
    import torch

    from ..libraries import import_peft
    from ..pair import LoadedModel

    peft = import_peft()

    if base.quantize != "none":
        raise ValueError("with_adapters copies float models only")
    (first, folder), *rest = adapters.items()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
        wrapped = peft.PeftModel.from_pretrained(copy.deepcopy(base.model), str(folder), adapter_name=first)
        for name, folder in rest:
            wrapped.load_adapter(str(folder), adapter_name=name)
    model = wrapped.get_base_model().to(base.dtype)  # the adapters are stored in float16
    model.eval()
    loaded = LoadedModel.from_model(model, base.tokenizer, base.role, str(adapters[first]), base.device, base.dtype)
    loaded.adapter, loaded.base = str(adapters[first]), base.source
    return loaded


def load_base_models(device: str = "cpu") -> tuple["LoadedModel", "LoadedModel"]:
    """The receiver and the base sharer of the specialist pair (the two real models, float32)."""
    from .. import real_models
    from ..pair import ModelSpec, load_model

    receiver = load_model(ModelSpec(str(real_models.smollm2_path()), device, "float32"), "receiver")
    sharer = load_model(ModelSpec(str(real_models.gemma3_path()), device, "float32"), "sharer")
    return receiver, sharer


def evaluate(
    root: str | Path | None = None,
    *,
    limit: int | None = None,
    modes: tuple[str, ...] = MODES,
    splits: tuple[str, ...] = SPLITS,
    ablation: bool = True,
    limit_general: bool = True,
    models: tuple["LoadedModel", "LoadedModel"] | None = None,
    progress: Callable[[EvalProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Evaluate the specialist pair in ``root`` (default: the shipped one) on ``limit`` facts per split (default
    all; ``limit_general=False`` asks every capital of g and h whatever the limit). ``models``: the receiver and
    the base sharer already loaded (float), which stay unchanged."""
    from ..checkpoint import load_fuser
    from ..engine import Engine
    from ..generation import GenerationSettings
    from ..pair import Pair

    root = specialist_root() if root is None else Path(root)
    adapter, fuser_dir = shipped_files(root)
    domain = Domain.load(root / DOMAIN_NAME)
    receiver, base = models if models is not None else load_base_models()
    sharer = with_adapter(base, adapter)
    fuser = load_fuser(fuser_dir)
    fuser.check_pair(receiver.shape, sharer.shape, receiver.source, sharer.source)
    pair = Pair(receiver, sharer, fuser.to(device=receiver.device, dtype=receiver.dtype))
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, hint_max_new_tokens=HINT_MAX_NEW_TOKENS)
    cancel = cancel or threading.Event()

    questions = {split: sample(domain.eval_facts(split), limit if limit_general or split in DOMAIN_SPLITS else None)
                 for split in splits}
    ablation_facts = sample([f for split in DOMAIN_SPLITS for f in domain.eval_facts(split)
                             if domain.permuted[f.subject][f.relation] != f.value], limit) if ablation else []
    tick = Ticker(sum(len(q) for q in questions.values()) * len(modes) + len(ablation_facts), progress, cancel)
    result = answer_questions(Engine(pair), questions, modes, settings, tick)
    result["splits"] = {s: SPLIT_HELP[s] for s in splits}
    del sharer
    if ablation:
        # the same receiver and fuser; the sharer's adapter learned a Corvane where everyone has another's facts
        swapped = Pair(receiver, with_adapter(base, permuted_adapter_path(root)), pair.fuser)
        result.update(follow_rates(Engine(swapped), ablation_facts,
                                   lambda f: domain.permuted[f.subject][f.relation], settings, tick))
    return result


def table(result: dict[str, Any]) -> str:
    heads = {s: TABLE_HEADS[s] for s in SPLITS if s in result["questions"]}
    return format_table(result, heads, ABLATION_OF)


def shipped_metrics(root: str | Path | None = None) -> dict[str, Any]:
    """What the recipe measured on the shipped pair (``metrics.json``)."""
    import json

    root = specialist_root() if root is None else Path(root)
    return json.loads((root / METRICS_NAME).read_text())
