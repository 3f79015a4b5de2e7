"""Training settings: one dataclass, with help text the CLI turns into options.

Kept free of torch so that ``c2c --help`` stays instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import ConfigBase, option

from ..errors import TrainingError
from ..layer_map import MAPPINGS

SCHEDULES = ("cosine", "linear", "constant")
ALIGNMENTS = ("auto", "none", "first", "longest")

# Settings that change the maths of a run: a resume must match them exactly.
RUN_DEFINING = (
    "steps", "epochs", "batch_size", "grad_accum", "lr", "warmup_steps", "warmup_ratio", "schedule", "weight_decay",
    "max_grad_norm", "seed", "eval_split", "max_length", "mapping", "alignment", "thinking", "hidden_dim",
    "intermediate_dim", "num_layers", "dropout", "initial_temperature", "final_temperature", "anneal_steps",
    "gate_init", "zero_init", "init",
)


@dataclass
class TrainConfig(ConfigBase):
    """How a fuser is trained. Every field is a ``c2c train`` option (``--batch-size`` for ``batch_size``)."""

    config_name: ClassVar[str] = "training settings"
    config_error: ClassVar[type[Exception]] = TrainingError

    # -- length of the run
    steps: int | None = option(None, "Optimizer steps to train; when left out, --epochs decides.")
    epochs: float = option(1.0, "Passes over the training split when --steps is not given.")
    batch_size: int = option(8, "Conversations per micro-batch on each process.")
    grad_accum: int = option(1, "Micro-batches per optimizer step (gradient accumulation).")
    # -- optimizer
    lr: float = option(1e-4, "Peak learning rate (AdamW).", "optimizer")
    warmup_steps: int | None = option(None, "Linear warm-up steps; when left out, --warmup-ratio of the steps.", "optimizer")
    warmup_ratio: float = option(0.05, "Fraction of the steps spent warming up when --warmup-steps is not given.",
                               "optimizer")
    schedule: str = option("cosine", f"Learning-rate schedule after warm-up: {', '.join(SCHEDULES)}.", "optimizer",
                           SCHEDULES)
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases, norms and gate logits).", "optimizer")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this value; 0 turns clipping off.", "optimizer")
    seed: int = option(0, "Seed for the fuser's initial weights, the data order, the eval split and the gate noise.")
    # -- data
    eval_split: float = option(0.05, "Fraction of the conversations held out for evaluation (0: no evaluation).", "data")
    eval_every: int = option(0, "Evaluate on the held-out split every N steps (0: only before and after training).",
                           "data")
    max_length: int = option(1024, "Most receiver tokens per conversation (prompt + answer); longer ones are truncated, "
                                 "the prompt from its start and the answer at its end.", "data")
    thinking: bool = option(False, "Render prompts with the thinking block open (Qwen3 templates), as at inference.",
                          "data")
    # -- the fuser
    mapping: str = option("last_aligned", f"Which sharer layer feeds each receiver layer: {', '.join(MAPPINGS)}.",
                        "fuser", MAPPINGS)
    alignment: str = option("auto", "Token alignment between tokenizers: auto (align only when the vocabularies "
                                  "differ, with the longest strategy), none, first or longest.", "fuser",
                                  ALIGNMENTS)
    hidden_dim: int = option(1024, "Fuser hidden width (the published fusers use 1024).", "fuser")
    intermediate_dim: int = option(1024, "Fuser FFN inner width (the published fusers use 1024).", "fuser")
    num_layers: int = option(3, "Depth of the fuser's projection path (>= 3; the published fusers use 3).", "fuser")
    dropout: float = option(0.1, "Dropout inside the fuser during training.", "fuser")
    initial_temperature: float = option(1.0, "Gumbel-sigmoid gate temperature at step 0.", "fuser")
    final_temperature: float = option(0.001, "Gate temperature at the end of annealing (geometric).", "fuser")
    anneal_steps: int | None = option(None, "Steps over which the gate temperature anneals; when left out, all of them.",
                                    "fuser")
    gate_init: float = option(0.0, "Initial gate logit of a new fuser. 0, as published, starts the gates half open "
                                 "under the Gumbel noise; a positive value starts them open and speeds short runs.",
                            "fuser")
    zero_init: bool = option(True, "Start a new fuser with zeroed output layers, so it leaves the receiver unchanged.",
                           "fuser")
    init: str | None = option(None, "Start from this fuser (a folder in either format, or a downloaded pair name) "
                                  "and fine-tune it; its shape and layer map are kept.", "fuser")
    # -- bookkeeping
    log_every: int = option(10, "Report loss, learning rate and tokens/s every N steps.", "output")
    save_every: int = option(0, "Write a resumable checkpoint every N steps (0: only at the end).", "output")
    keep_checkpoints: int = option(2, "How many step checkpoints to keep (the newest ones).", "output")

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_zero: bool = False, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            low = 0 if allow_zero else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise TrainingError(f"{name} must be an integer >= {low}, got {value!r}.")

        positive_int("steps", allow_none=True)
        positive_int("batch_size")
        positive_int("grad_accum")
        positive_int("warmup_steps", allow_zero=True, allow_none=True)
        positive_int("seed", allow_zero=True)
        positive_int("eval_every", allow_zero=True)
        positive_int("max_length")
        positive_int("hidden_dim")
        positive_int("intermediate_dim")
        positive_int("anneal_steps", allow_zero=True, allow_none=True)
        positive_int("log_every")
        positive_int("save_every", allow_zero=True)
        positive_int("keep_checkpoints")
        if self.max_length < 2:
            raise TrainingError(f"max_length must be at least 2 (one prompt and one answer token), got {self.max_length}.")
        if not isinstance(self.num_layers, int) or self.num_layers < 3:
            raise TrainingError(f"num_layers must be >= 3 (the fuser's projection path), got {self.num_layers!r}.")
        self._check_float("epochs", lambda v: v > 0, "> 0")
        self._check_float("lr", lambda v: v > 0, "> 0")
        self._check_float("warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)")
        self._check_float("weight_decay", lambda v: v >= 0, ">= 0")
        self._check_float("max_grad_norm", lambda v: v >= 0, ">= 0 (0 turns clipping off)")
        self._check_float("eval_split", lambda v: 0 <= v < 1, "in [0, 1)")
        self._check_float("dropout", lambda v: 0 <= v < 1, "in [0, 1)")
        self._check_float("initial_temperature", lambda v: v > 0, "> 0")
        self._check_float("final_temperature", lambda v: v > 0, "> 0")
        self._check_float("gate_init", lambda v: True, "a number")
        if self.schedule not in SCHEDULES:
            raise TrainingError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        if self.mapping not in MAPPINGS:
            raise TrainingError(f"mapping must be one of {', '.join(MAPPINGS)}, got {self.mapping!r}.")
        if self.alignment not in ALIGNMENTS:
            raise TrainingError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}.")
        if self.init is not None:
            self.init = str(self.init)

    def _check_float(self, name: str, ok: Any, rule: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise TrainingError(f"{name} must be {rule}, got {value!r}.")
        setattr(self, name, float(value))

    # -- derived values

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else max(1, math.ceil(self.epochs * steps_per_epoch))

    def warmup(self, total_steps: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_ratio * total_steps)

    def anneal(self, total_steps: int) -> int:
        return self.anneal_steps if self.anneal_steps is not None else total_steps

    def differences(self, other: "TrainConfig") -> list[str]:
        """The run-defining settings in which ``other`` differs, as readable ``name: a != b`` strings."""
        return [f"{name}: {getattr(other, name)!r} (saved run: {getattr(self, name)!r})"
                for name in RUN_DEFINING if getattr(self, name) != getattr(other, name)]


def option_fields() -> list[Any]:
    """The dataclass fields, for building CLI options from their help text."""
    return TrainConfig.help_fields()
