"""Training a team's fusers jointly: one frozen receiver, several frozen sharers, one fuser per sharer.

Every step fuses the receiver's cache from every sharer at once, exactly as the engine does at inference
(:func:`fusers.team.combine`: the receiver's cache plus each fuser's residual), and the loss is the receiver's
answer on that cache: the fusers learn together what each sharer should add. Everything else is the pair's
trainer (:mod:`fusers.train.trainer`): schedule, gates, evaluation, progress, cancel and resume. The output is a
team folder (``team.json`` + ``fuser-NAME/`` per sharer), and so is every checkpoint.

    from fusers.train.team import train_team
    report = train_team(receiver, {"A": sharer_a, "B": sharer_b}, "data.jsonl", TrainConfig(steps=500), "my-team")
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import nn

from ..errors import TrainingError
from ..team import TEAM_MANIFEST, check_name, combine, load_team_fusers, save_team
from .config import TrainConfig
from .data import Conversation, collate, tokenize
from .forward import run_team_batch
from .model import build_fuser, choose_alignment, model_name
from .trainer import TrainProgress, TrainReport, _pad_id, _TrainingRun

if TYPE_CHECKING:
    from ..fuser import KV, Fuser
    from ..pair import LoadedModel


class TeamFuser(nn.Module):
    """A team's fusers, one per sharer, in the team's order; trained and saved as one."""

    def __init__(self, fusers: "dict[str, Fuser]"):
        super().__init__()
        self.names = list(fusers)
        self.fusers = nn.ModuleList(fusers.values())  # a list, not a dict: names may hold dots

    @property
    def projectors(self) -> list[nn.Module]:
        return [p for f in self.fusers for p in f.projectors]

    def by_name(self) -> "dict[str, Fuser]":
        return dict(zip(self.names, self.fusers))


class TeamFusionModule(nn.Module):
    """``forward(receiver_kv, *sharer_kvs, valid=...)``: every fuser's :meth:`~fusers.fuser.Fuser.fuse` on the
    receiver's own cache, combined as inference combines them."""

    def __init__(self, team: TeamFuser):
        super().__init__()
        self.team = team

    def forward(self, receiver_kv: "list[KV]", *sharer_kvs: "list[KV]", valid: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> "list[KV]":
        """``rows`` (sharers, B), 1 where a sharer takes part in a row (the data's ``"sharers"``): a row without
        a sharer gets none of its residual, exactly the cache ``fusion:`` of the others gives."""
        fused = [f.fuse(receiver_kv, kv, valid)[0] for f, kv in zip(self.team.fusers, sharer_kvs)]
        if rows is not None:
            fused = [_only_rows(receiver_kv, one, rows[j]) for j, one in enumerate(fused)]
        return combine(receiver_kv, fused)


def _only_rows(receiver_kv: "list[KV]", fused: "list[KV]", row: torch.Tensor) -> "list[KV]":
    """``fused`` where ``row`` (B,) is 1 and the receiver's own tensors elsewhere: base + row * residual."""
    out = []
    for base, one in zip(receiver_kv, fused):
        out.append(tuple(b if o is b else b + row.to(b.dtype).view(-1, 1, 1, 1) * (o - b)  # (B, H, L, D)
                         for b, o in zip(base, one)))
    return out


def train_team(
    receiver: "LoadedModel",
    sharers: "dict[str, LoadedModel]",
    data: "str | Path | Iterable[Any]",
    config: TrainConfig,
    out: str | Path,
    *,
    eval_data: "str | Path | Iterable[Any] | None" = None,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainReport:
    """Train one fuser per sharer of ``sharers`` (name -> model) jointly, and write the team folder ``out``.

    Settings, data, evaluation, cancel and resume as :func:`fusers.train.train`; ``config.init`` may name a team
    folder whose fusers (one per sharer, by name) are fine-tuned.
    """
    if not sharers:
        raise TrainingError("A team needs at least one sharer.")
    for name in sharers:
        check_name(name, "c2c train")
    return _TeamRun(receiver, sharers, config, Path(out), progress, cancel or threading.Event()).run(
        data, eval_data, resume)


class _TeamRun(_TrainingRun):
    def __init__(self, receiver: "LoadedModel", sharers: "dict[str, LoadedModel]", config: TrainConfig, out: Path,
                 progress: Callable[[TrainProgress], None] | None, cancel: threading.Event):
        first = next(iter(sharers.values()))
        for name, sharer in sharers.items():
            if sharer.device != receiver.device:
                raise TrainingError(f"The receiver is on {receiver.device} and sharer {name} on {sharer.device}; "
                                    "train with every model on one device.")
            sharer.model.eval()
            for param in sharer.model.parameters():
                param.requires_grad_(False)
        super().__init__(receiver, first, config, out, progress, cancel)
        self.sharers = dict(sharers)

    def _tokenize(self, train_convs: list[Conversation], eval_convs: list[Conversation]) -> None:
        from ..alignment import TokenAligner

        cfg = self.config
        self.inits = self._inits()
        max_length = min([cfg.max_length, self.receiver.context_length]
                         + [s.context_length for s in self.sharers.values()])
        self.choices, self.sets, self.sharer_pads = {}, {}, {}
        for name, sharer in self.sharers.items():
            choice = choose_alignment(cfg, self.receiver, sharer, self.inits.get(name))
            aligner = TokenAligner(self.receiver.tokenizer, sharer.tokenizer, choice[1]) if choice[0] else None
            self.choices[name] = choice
            self.sets[name] = (tokenize(train_convs, self.receiver, sharer, aligner, max_length, cfg.thinking),
                               tokenize(eval_convs, self.receiver, sharer, aligner, max_length, cfg.thinking))
            self.sharer_pads[name] = _pad_id(sharer.tokenizer if aligner else self.receiver.tokenizer)
        first = next(iter(self.sets))
        self.train_set, self.eval_set = self.sets[first]
        for name, (train_set, eval_set) in self.sets.items():  # every fuser reads the receiver's own tokens
            for a, b in zip(self.train_set + self.eval_set, train_set + eval_set):
                if not torch.equal(a.prompt, b.prompt):
                    raise TrainingError(f"Sharer {name}'s alignment tokenizes the receiver's prompt on line {a.line} "
                                        f"differently from sharer {first}'s; the team cannot be trained together.")
        self.pads = (_pad_id(self.receiver.tokenizer), self.sharer_pads[first])
        self.alignment = ", ".join(f"{n}: {c[1] if c[0] else 'none'}" for n, c in self.choices.items())

    def _inits(self) -> "dict[str, Fuser]":
        """The fusers of the team folder ``config.init`` names, by sharer name, checked against the sharers."""
        if self.config.init is None:
            return {}
        manifest, fusers = load_team_fusers(self.config.init)
        missing = [n for n in self.sharers if n not in fusers]
        if missing:
            raise TrainingError(f"The team {self.config.init} has no fuser for sharer {missing[0]}; its sharers are "
                                f"{', '.join(fusers)}.")
        for name, fuser in fusers.items():
            if name in self.sharers:
                fuser.check_pair(self.receiver.shape, self.sharers[name].shape, self.receiver.source,
                                 self.sharers[name].source)
        return fusers

    def _build_fuser(self) -> tuple[Any, nn.Module]:
        fusers = {}
        for i, (name, sharer) in enumerate(self.sharers.items()):
            # each fuser its own seed: two sharers of one shape must not start as the same fuser
            config = TrainConfig.from_dict({**self.config.to_dict(), "seed": self.config.seed + 1000 * i})
            fusers[name] = build_fuser(config, self.receiver, sharer, self.total, self.choices[name],
                                       self.inits.get(name))
        self.inits = {}
        team = TeamFuser(fusers)
        return team, TeamFusionModule(team).train()

    def _forward(self, examples: list[int], split: str, fusion: nn.Module | None) -> Any:
        index = 0 if split == "train" else 1
        batches = [collate([self.sets[name][index][i] for i in examples], self.pads[0], self.sharer_pads[name])
                   for name in self.sharers]
        batch = batches[0].to(self.device)
        prefixes = [b.sharer_prefix.to(self.device) for b in batches]
        rows = None
        if batch.sharers is not None:  # (sharers, B): who takes part in each row
            rows = torch.tensor([[row is None or name in row for row in batch.sharers] for name in self.sharers],
                                device=self.device)
        return run_team_batch(self.receiver.model, [s.model for s in self.sharers.values()], fusion, batch, prefixes,
                              rows=rows)

    def _check_sharers(self, named: set[str]) -> None:
        unknown = named - set(self.sharers)
        if unknown:
            raise TrainingError(f'The data names sharers {", ".join(sorted(unknown))} in "sharers", but the team\'s '
                                f"sharers are {', '.join(self.sharers)}; name them as the team does.")

    def _read_fuser(self, checkpoint: Path) -> nn.Module:
        _, fusers = load_team_fusers(checkpoint)
        if list(fusers) != list(self.sharers):
            raise TrainingError(f"{checkpoint} holds the fusers of sharers {', '.join(fusers)}, this run trains "
                                f"{', '.join(self.sharers)}; resume with the same sharers, in the same order.")
        return TeamFuser(fusers)

    def _write_fuser(self, folder: Path, extra: dict[str, Any]) -> None:
        save_team(folder, model_name(self.receiver), self.fuser.by_name(),
                  {name: model_name(s) for name, s in self.sharers.items()},
                  extra={"trained_together": True}, fuser_extra=extra)

    def _state_models(self) -> dict[str, Any]:
        return {"receiver": model_name(self.receiver), "sharer": ""}

    def _finished(self) -> bool:
        return (self.out / TEAM_MANIFEST).is_file()
