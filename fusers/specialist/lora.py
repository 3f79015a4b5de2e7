"""Training the specialist: a LoRA adapter that teaches the sharer (Gemma-3-270M) the domain.

The adapter learns to answer each question in the two forms the sharer meets it in:

* ``plain``: its own prompt (``Question: ...`` / ``Answer:``), as sharer alone and text relay ask;
* ``aligned``: exactly the ids cache fusion feeds it, one sharer token per receiver token, built by
  the engine's :class:`~fusers.alignment.TokenAligner` from the receiver's chat template.

With a lookahead loss (:mod:`fusers.demo.lm`): the question's closing positions also learn to name
the answer's value at a middle layer, so the cache over the question, all that cache fusion reads,
carries the answer. It also learns text relay's one-sentence hint, and a few capitals outside the
evaluated ones, so that what it knew before stays.

The training loop is the demo's (:func:`fusers.demo.lm.pretrain`), run on the adapter's parameters.
"""

from __future__ import annotations

import copy
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..chat import encode, user
from ..demo.world import Sample
from ..relay import RELAY_CONTEXT_PROMPT
from .domain import CAPITAL_ANSWER, CAPITAL_QUESTION, PRACTICE_CAPITALS, RELATIONS, Domain

if TYPE_CHECKING:
    from ..pair import LoadedModel

ALIGNMENT = "longest"  # the strategy c2c train picks for tokenizers that differ; the fuser records it
# What the adapter learns from, by kind: "plain", a question in the sharer's own prompt answered with the value;
# "aligned", the question as cache fusion feeds it, learning the lookahead alone (so the layers above the
# lookahead's do not run); "aligned_answer", the same answered too; "plain_lookahead", the sharer's own prompt
# learning the lookahead alone; "hint", text relay's one-sentence hint; "general", practice capitals in both forms.
KINDS = ("plain", "aligned", "aligned_answer", "plain_lookahead", "hint", "general")


@dataclass
class AdapterRecipe:
    """The adapter and how it is trained (recorded in the manifest)."""

    rank: int = 16
    alpha: int = 32
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    lookahead_layer: int | None = 6
    lookahead_weight: float = 0.5
    lookahead_positions: int = 6
    mixture: dict[str, float] = field(default_factory=lambda: dict(plain=0.45, aligned=0.35, hint=0.1, general=0.1))
    # The ablation's adapter starts from the specialist's, with its lookahead head frozen, and relearns the facts
    # in the parameters that match ``trainable`` only: the rest of the code the fuser learned to read stays.
    from_specialist: bool = False
    trainable: str | None = None
    log_every: int = 25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Curriculum:
    """Draws the adapter's examples about ``facts`` (default: the domain's; or a permuted company's)."""

    def __init__(self, domain: Domain, mixture: dict[str, float], facts: dict[str, dict[str, str]] | None = None):
        self.facts = domain.facts if facts is None else facts
        self.people = list(self.facts)  # a decoy company has people of its own besides Corvane's
        self.kinds = [k for k in KINDS if mixture.get(k, 0) > 0]
        self.weights = [mixture[k] for k in self.kinds]

    def draw(self, rng: random.Random) -> Sample:
        kind = rng.choices(self.kinds, self.weights)[0]
        if kind == "general":
            country, city = rng.choice(PRACTICE_CAPITALS)
            form = rng.choice(("plain", "aligned"))
            return Sample(user(CAPITAL_QUESTION.format(c=country)), CAPITAL_ANSWER.format(c=country, v=city), form)
        person, rel = rng.choice(self.people), rng.choice(RELATIONS)
        value = self.facts[person][rel.name]
        question = rng.choice(rel.questions).format(p=person)
        if kind == "hint":
            return Sample(user(RELAY_CONTEXT_PROMPT.format(question=question)), rel.statement.format(p=person, v=value),
                          "plain")
        form = "plain" if kind.startswith("plain") else "aligned"
        answered = kind in ("plain", "aligned_answer")
        return Sample(user(question), f"{value}." if answered else "", form, value)

    def stream(self, seed: int) -> Iterator[Sample]:
        rng = random.Random(seed)
        while True:
            yield self.draw(rng)


def encoder(receiver: "LoadedModel", sharer: "LoadedModel") -> Callable[[Sequence[Sample], int], list]:
    """``encode(samples, lookahead_positions)`` for :func:`fusers.demo.lm.pretrain`: sharer ids of each sample's
    prompt in its form, then its answer as the sharer's template ends it (plus end of sequence), with the
    lookahead's value token on the prompt's closing positions but its last (which cache fusion never fuses)."""
    from ..alignment import TokenAligner
    from ..demo.lm import labelled, value_token
    from ..train.data import answer_ids

    aligner = TokenAligner(receiver.tokenizer, sharer.tokenizer, ALIGNMENT)
    tok = sharer.tokenizer
    eos = tok.eos_token_id
    memo: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}

    def ids_of(sample: Sample) -> tuple[list[int], list[int]]:
        key = (sample.kind, sample.messages[-1]["content"], sample.answer)
        if key not in memo:
            if sample.kind == "aligned":
                prompt = aligner.align_chat(sample.messages).sharer_ids
            else:
                prompt = encode(tok, sample.messages)
            target: list[int] = []
            if sample.answer:
                target = answer_ids(tok, sample.messages, sample.answer, False, sharer.eos_token_ids)
                if not target or target[-1] != eos:
                    target = target + [eos]
            memo[key] = (prompt, target)
        return memo[key]

    def encode_batch(samples: Sequence[Sample], positions: int) -> list:
        out = []
        for sample in samples:
            prompt, target = ids_of(sample)
            value = value_token(tok, sample.lookahead) if sample.lookahead is not None and positions else None
            out.append(labelled(prompt, target, value, positions))
        return out

    return encode_batch


@dataclass
class Trained:
    model: Any  # the peft model (its base is the sharer's model, changed in place)
    head: Any  # the lookahead head, or None
    history: list[dict[str, Any]]


def train_adapter(receiver: "LoadedModel", sharer: "LoadedModel", domain: Domain, recipe: AdapterRecipe, seed: int,
                  *, facts: dict[str, dict[str, str]] | None = None, init: tuple[Path, Any] | None = None,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> Trained:
    """A LoRA adapter on ``sharer.model`` (changed in place: the adapter's layers are injected) trained on the
    domain's facts (or ``facts``: a permuted company's). ``init``: (a stored adapter folder, its lookahead head):
    start from that adapter, with the head frozen."""
    import torch

    from ..demo.lm import LMConfig, LookaheadHead, pretrain, value_token
    from ..libraries import import_peft

    peft = import_peft()
    torch.manual_seed(seed)
    head = None
    if init is not None:
        folder, init_head = init
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = peft.PeftModel.from_pretrained(sharer.model, str(folder), is_trainable=True)
        if init_head is not None:
            head = copy.deepcopy(init_head).requires_grad_(False)
    else:
        config = peft.LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, target_modules=list(recipe.targets),
                                 lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
            model = peft.get_peft_model(sharer.model, config)
    cfg = LMConfig(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                   seed=seed, log_every=recipe.log_every, lookahead_layer=recipe.lookahead_layer,
                   lookahead_weight=recipe.lookahead_weight, lookahead_positions=recipe.lookahead_positions,
                   tokens_per_chunk=4096, trainable=None if recipe.trainable is None else rf"{recipe.trainable}.*lora_")
    if head is None and recipe.lookahead_layer is not None:
        head = LookaheadHead(sharer.model.config.get_text_config().hidden_size)
    values = sorted({value_token(sharer.tokenizer, v) for r in RELATIONS for v in r.values})  # one token each
    curriculum = Curriculum(domain, recipe.mixture, facts)
    history = pretrain(model.get_base_model(), sharer.tokenizer, curriculum.stream(seed), cfg, progress=progress,
                       encode=encoder(receiver, sharer), lookahead_vocab=values, head=head)
    return Trained(model, head, history)


def _value_states(receiver: "LoadedModel", sharer: "LoadedModel", facts: dict[str, dict[str, str]],
                  recipe: AdapterRecipe) -> tuple[Any, Any, Any]:
    """(layer-``lookahead_layer`` states at each question's lookahead positions, the index of its value in the
    vocabulary of values, that vocabulary) for every question about ``facts``, in both forms."""
    import torch

    from ..demo.lm import IGNORE, hidden_after, pad, value_token

    questions = [Sample(user(q.format(p=person)), "", form, values[rel.name])
                 for person, values in facts.items() for rel in RELATIONS for q in rel.questions
                 for form in ("plain", "aligned")]
    encode = encoder(receiver, sharer)
    vocab = torch.tensor(sorted({value_token(sharer.tokenizer, v) for r in RELATIONS for v in r.values}))
    features, targets = [], []
    with torch.no_grad():
        for i in range(0, len(questions), recipe.batch_size):
            ids, attn, _, ahead = pad(encode(questions[i:i + recipe.batch_size], recipe.lookahead_positions),
                                      sharer.tokenizer.pad_token_id)
            where = ahead != IGNORE
            features.append(hidden_after(sharer.model, recipe.lookahead_layer, ids, attn)[where])
            targets.append(torch.searchsorted(vocab, ahead[where]))
    return torch.cat(features), torch.cat(targets), vocab


def fit_head(receiver: "LoadedModel", sharer: "LoadedModel", domain: Domain, recipe: AdapterRecipe, seed: int,
             epochs: int = 30) -> tuple[Any, float]:
    """A lookahead head for a specialist that came without its own (heads are dropped after training: a shipped
    adapter has none). ``sharer`` has the adapter merged and stays frozen: the head learns to read each question's
    value where the adapter's lookahead put it, as the head trained with it did, so that the permuted companies'
    adapters can learn to write their values for it. Returns the head and the share of the values it names."""
    import torch
    from torch.nn import functional as F

    from ..demo.lm import LookaheadHead

    torch.manual_seed(seed)
    # the model's part is fixed: its hidden states once, then the head alone trains
    x, y, vocab = _value_states(receiver, sharer, domain.facts, recipe)
    head = LookaheadHead(sharer.model.config.get_text_config().hidden_size)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(256):
            loss = F.cross_entropy(head(sharer.model, x[idx], vocab).float(), y[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        accuracy = float((head(sharer.model, x, vocab).argmax(-1) == y).float().mean())
    return head.requires_grad_(False), accuracy


def head_accuracy(receiver: "LoadedModel", sharer: "LoadedModel", head: Any, facts: dict[str, dict[str, str]],
                  recipe: AdapterRecipe) -> float:
    """The share of ``facts``' values the lookahead head names from the cache of ``sharer`` (with an adapter):
    how well that adapter writes its company where the fuser learns to read."""
    import torch

    x, y, vocab = _value_states(receiver, sharer, facts, recipe)
    with torch.no_grad():
        return float((head(sharer.model, x, vocab).argmax(-1) == y).float().mean())


def save_adapter(model: Any, path: Path, base_name: str) -> Path:
    """The adapter alone, in float16 safetensors, naming ``base_name`` as its base (portable: a bundled
    model's file name, see ``fusers.real_models.bundled``)."""
    import json

    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ..adapters import CONFIG_NAME, WEIGHTS_NAME

    path.mkdir(parents=True, exist_ok=True)
    # no embedding layers are adapted; "auto" would ask the Hub for the base's config to find out
    weights = get_peft_model_state_dict(model, save_embedding_layers=False)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in weights.items()}
    save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    config = model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = base_name
    config["inference_mode"] = True
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path
