"""What a training reports: its progress as it runs (:class:`TrainProgress`), its evaluations
(:class:`EvalMetrics`) and its end (:class:`TrainReport`): plain records the CLI and the app read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EvalMetrics:
    loss: float  # mean next-token cross-entropy over answer tokens
    token_accuracy: float  # argmax == next answer token, over all answer tokens (teacher forcing)
    first_token_accuracy: float  # ... over each answer's first token only (what the fused prompt decides)
    tokens: int
    samples: int


@dataclass
class TrainProgress:
    """One report from a running training: the CLI's progress bar and ``--json`` lines, and the app's."""

    event: str  # "log", "eval", "checkpoint" or "done"
    step: int  # optimizer steps done
    total_steps: int
    epoch: float
    loss: float | None  # mean training loss since the last "log"
    lr: float
    grad_norm: float | None
    tokens_per_s: float  # prompt + answer tokens per second of training, all processes together
    elapsed_s: float
    eta_s: float | None
    gate_temperature: float
    eval: dict[str, Any] | None = None  # {"fuser": EvalMetrics, "receiver": EvalMetrics} as dicts
    path: str | None = None  # the checkpoint written ("checkpoint", "done")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainReport:
    out: str
    steps: int
    total_steps: int
    epochs: float
    world_size: int
    train_samples: int
    eval_samples: int
    truncated_samples: int  # conversations cut to max_length (train and eval)
    train_tokens: int  # prompt + answer tokens trained on in this run
    seconds: float
    tokens_per_s: float
    final_loss: float | None
    eval: dict[str, Any] | None  # {"fuser": ..., "receiver": ..., "initial": ...}
    alignment: str  # "none", "first" or "longest"
    resumed_from: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
