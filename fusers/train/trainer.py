"""The training loop: frozen receiver and sharer, one trainable fuser, one or several processes.

Several processes (``torchrun`` or ``accelerate launch``) run data-parallel through
accelerate: each takes its slice of the global batch, gradients are averaged by DDP, and
the loss is normalised by the global number of answer tokens, so N processes with batch
B follow the same curve as one process with batch N*B.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..errors import Cancelled, TrainingError
from ..pair import LoadedModel
from ..quantization import keep_4bit_layers_differentiable
from .config import TrainConfig
from .data import Conversation, collate, conversations_from, tokenize
from .forward import FusionModule, backward, run_batch
from .model import build_fuser, choose_alignment, load_init
from .records import EvalMetrics, TrainProgress, TrainReport  # noqa: F401  (re-exported from here too)
from .state import (
    REPORT_NAME, TrainState, finish_folder, has_run, latest_checkpoint, prune, read_optimizer, read_rng, read_state,
    step_dir, write_checkpoint, write_rng,
)


def train(
    receiver: LoadedModel,
    sharer: LoadedModel,
    data: "str | Path | Iterable[Any]",
    config: TrainConfig,
    out: str | Path,
    *,
    eval_data: "str | Path | Iterable[Any] | None" = None,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainReport:
    """Train a fuser for ``receiver`` and ``sharer`` on ``data`` and write it to ``out``.

    ``data``/``eval_data``: a JSONL path or ``{"messages": [...]}`` records. Without
    ``eval_data``, ``config.eval_split`` of ``data`` is held out. ``progress`` is called on
    the main process only. Setting ``cancel`` stops between steps, writes a resumable
    checkpoint, and raises :class:`~fusers.errors.Cancelled`.
    """
    return _TrainingRun(receiver, sharer, config, Path(out), progress, cancel or threading.Event()).run(data, eval_data, resume)


class _TrainingRun:
    """One training run of a fuser: the frozen pair, accelerate, the optimizer and the loop, from set-up to report."""

    def __init__(self, receiver: LoadedModel, sharer: LoadedModel, config: TrainConfig, out: Path,
                 progress: Callable[[TrainProgress], None] | None, cancel: threading.Event):
        from accelerate import Accelerator

        self.receiver, self.sharer, self.config, self.out = receiver, sharer, config, out
        self.cancel = cancel
        self.device = receiver.device
        if sharer.device != self.device:
            raise TrainingError(f"The receiver is on {receiver.device} and the sharer on {sharer.device}; "
                                "train with both on one device.")
        for loaded in (receiver, sharer):  # frozen: no gradients kept for them, no dropout in them
            loaded.model.eval()
            for param in loaded.model.parameters():
                param.requires_grad_(False)
        keep_4bit_layers_differentiable(receiver)  # the loss reaches the fuser through the receiver
        self.acc = Accelerator(cpu=self.device.type == "cpu")
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        if self.world > 1 and self.device.type != "cpu" and self.device != self.acc.device:
            raise TrainingError(f"This process ({self.rank}) has its models on {self.device} but accelerate gave it "
                                f"{self.acc.device}; load the models with --device auto under torchrun/accelerate.")
        self._emit = progress if self.acc.is_main_process else None
        self.history: list[dict[str, Any]] = []

    # -- set-up ---------------------------------------------------------------------------------------------

    def run(self, data: Any, eval_data: Any, resume: bool) -> TrainReport:
        cfg, out = self.config, self.out
        checkpoint = latest_checkpoint(out)
        state: TrainState | None = None
        if resume:
            if checkpoint is None:
                raise TrainingError(f"{out} holds no checkpoint to resume; drop --resume to start a new run there.")
            state = read_state(checkpoint)
            self._check_resume(state)
        elif has_run(out):
            raise TrainingError(f"{out} already holds a training run; pass --resume to continue it, or choose a new "
                                "--out folder (nothing was overwritten).")

        train_convs, eval_convs = self._split(conversations_from(data),
                                              None if eval_data is None else conversations_from(eval_data))
        self._tokenize(train_convs, eval_convs)
        self.truncated = sum(e.truncated for e in self.train_set + self.eval_set)
        self._check_adapters()

        self.global_batch = cfg.batch_size * self.world
        per_step = self.global_batch * cfg.grad_accum
        self.steps_per_epoch = len(self.train_set) // per_step
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"One optimizer step takes {per_step} conversations (batch size {cfg.batch_size} x {self.world} "
                f"process(es) x {cfg.grad_accum} accumulation), but the training split has only {len(self.train_set)}. "
                "Add data, or lower --batch-size / --grad-accum / --eval-split."
            )
        self.total = cfg.total_steps(self.steps_per_epoch)
        self.answer_lengths = torch.tensor([e.answer.shape[0] for e in self.train_set])
        self.lengths = torch.tensor([e.tokens for e in self.train_set])

        self.fuser, self.fusion = self._build_fuser()
        self.model = self.acc.prepare_model(self.fusion, device_placement=False)  # DDP when several processes
        self.params = [p for p in self.fuser.parameters() if p.requires_grad]
        self.optimizer = _adamw(self.fuser, cfg)
        self.scheduler = lr_scheduler(self.optimizer, cfg.warmup(self.total), self.total, cfg.schedule)
        self.last_lr = float(self.scheduler.get_last_lr()[0])

        start = 0
        self.initial_eval: dict[str, Any] | None = None
        if state is not None:
            start = self._restore(checkpoint, state)
        self.receiver_alone = self._evaluate(None) if self.eval_set else None
        if state is None and self.eval_set:
            self.initial_eval = asdict(self._evaluate(self.fusion))
        elif state is not None:
            self.initial_eval = state.extra.get("initial_eval")
        return self._loop(start, resumed_from=start if state is not None else None)

    def _tokenize(self, train_convs: list[Conversation], eval_convs: list[Conversation]) -> None:
        """``train_set`` and ``eval_set``, in token ids as inference encodes them, and what building the fuser needs."""
        cfg = self.config
        self.init = load_init(cfg, self.receiver, self.sharer)
        alignment = choose_alignment(cfg, self.receiver, self.sharer, self.init)
        aligner = None
        if alignment[0]:
            from ..alignment import TokenAligner

            aligner = TokenAligner(self.receiver.tokenizer, self.sharer.tokenizer, alignment[1])
        max_length = min(cfg.max_length, self.receiver.context_length, self.sharer.context_length)
        self.train_set = tokenize(train_convs, self.receiver, self.sharer, aligner, max_length, cfg.thinking)
        self.eval_set = tokenize(eval_convs, self.receiver, self.sharer, aligner, max_length, cfg.thinking)
        self.pads = (_pad_id(self.receiver.tokenizer), _pad_id(self.sharer.tokenizer if aligner else
                                                                self.receiver.tokenizer))
        self.alignment_choice = alignment
        self.alignment = alignment[1] if alignment[0] else "none"

    def _build_fuser(self) -> tuple[Any, torch.nn.Module]:
        """The fuser that trains (new, or the init one to fine-tune), and the module that runs it."""
        fuser = build_fuser(self.config, self.receiver, self.sharer, self.total, self.alignment_choice, self.init)
        self.init = None
        return fuser, FusionModule(fuser).train()

    def _forward(self, examples: list[int], split: str, fusion: torch.nn.Module | None) -> Any:
        """One micro-batch of ``split`` ("train" or "eval", by index) through the frozen models and ``fusion``."""
        data = self.train_set if split == "train" else self.eval_set
        batch = collate([data[i] for i in examples], *self.pads).to(self.device)
        return run_batch(self.receiver.model, self.sharer.model, fusion, batch)

    def _read_fuser(self, checkpoint: Path) -> torch.nn.Module:
        from ..checkpoint import load_fuser

        return load_fuser(checkpoint)

    def _write_fuser(self, folder: Path, extra: dict[str, Any]) -> None:
        from ..checkpoint import save_fuser

        save_fuser(self.fuser, folder, extra=extra)

    def _state_models(self) -> dict[str, Any]:
        """What the checkpoint records as the run's models (a resume loads them)."""
        return {"receiver": self.fuser.info.receiver, "sharer": self.fuser.info.sharer}

    def _check_adapters(self) -> None:
        """Every sharer adapter the data names is held beside the sharer's weights; a pair's data names no team
        sharers."""
        self._check_sharers({n for e in self.train_set + self.eval_set for n in e.sharers or ()})
        named = {e.sharer_adapter for e in self.train_set + self.eval_set} - {None}
        if not named:
            return
        from ..adapters import adapter_names

        held = adapter_names(self.sharer.model)
        if named - set(held):
            raise TrainingError(
                f"The data names sharer adapters {', '.join(sorted(named - set(held)))}, but the sharer holds "
                f"{', '.join(held) or 'no adapter beside its weights'}; load every named adapter with peft's "
                "load_adapter (not merged), or drop sharer_adapter from the data.")

    def _check_sharers(self, named: set[str]) -> None:
        if named:
            raise TrainingError(
                f'The data names team sharers ({", ".join(sorted(named))}) in "sharers", but this run trains one '
                "fuser for one sharer; train a team (several --sharer NAME=SOURCE), or drop \"sharers\" from the data.")

    def _split(self, convs: list[Conversation], eval_convs: list[Conversation] | None):
        if eval_convs is not None:
            return convs, eval_convs
        n_eval = round(self.config.eval_split * len(convs))
        if self.config.eval_split > 0 and len(convs) > 1:
            n_eval = max(1, n_eval)
        order = torch.randperm(len(convs), generator=torch.Generator().manual_seed(self.config.seed)).tolist()
        held = set(order[:n_eval])
        return [c for i, c in enumerate(convs) if i not in held], [convs[i] for i in sorted(held)]

    def _check_resume(self, state: TrainState) -> None:
        try:
            saved = TrainConfig.from_dict(state.config)
        except (TrainingError, TypeError) as exc:
            raise TrainingError(f"The checkpoint's settings cannot be read ({exc}); start a new run.") from exc
        diffs = saved.differences(self.config)
        if diffs:
            raise TrainingError("Resuming needs the settings of the saved run; these differ: " + "; ".join(diffs)
                                + ". Resume with the saved settings, or start a new run with --init to fine-tune.")
        if state.world_size != self.world:
            raise TrainingError(f"The saved run used {state.world_size} process(es), this one has {self.world}; "
                                "resume with the same number of processes.")

    def _restore(self, checkpoint: Path, state: TrainState) -> int:
        from ..checkpoint import WEIGHTS_NAME

        saved = self._read_fuser(checkpoint)
        with torch.no_grad():
            ours = self.fuser.state_dict()
            theirs = saved.state_dict()
            if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
                raise TrainingError(f"{checkpoint} holds a fuser of another shape; start a new run.")
            for key, value in theirs.items():
                ours[key].copy_(value)
        read_optimizer(checkpoint, self.optimizer, state)
        self.scheduler.load_state_dict(state.scheduler)
        read_rng(checkpoint, self.rank)
        self.history = list(state.history)
        if state.step >= self.total and ((self.out / WEIGHTS_NAME).exists() or self._finished()):
            raise TrainingError(f"The run in {self.out} is already complete ({state.step} of {self.total} steps); "
                                "start a new run with --init to train further.")
        return state.step

    # -- the loop -------------------------------------------------------------------------------------------

    def _loop(self, start: int, resumed_from: int | None) -> TrainReport:
        cfg = self.config
        began = time.perf_counter()
        train_seconds = 0.0
        window = self._new_window()
        tokens_total = 0
        step = start
        last_loss: float | None = None
        grad_norm: float | None = None
        for step in range(start, self.total):
            if self._cancelled():
                self._stop(step)
            t0 = time.perf_counter()
            temperature = self._anneal(step)
            loss_sum, answer_tokens, tokens, norm = self._step(step)
            dt = time.perf_counter() - t0
            train_seconds += dt
            tokens_total += tokens
            window["loss"] += loss_sum
            window["answer_tokens"] += answer_tokens
            window["tokens"] += tokens
            window["seconds"] += dt
            done = step + 1
            if done % cfg.log_every == 0 or done == self.total:
                # the one device sync of a logging window
                total_loss = float(self.acc.reduce(window["loss"], "sum")) if self.world > 1 else float(window["loss"])
                last_loss = total_loss / max(window["answer_tokens"], 1)
                grad_norm = float(norm)
                record = self._progress("log", done, last_loss, grad_norm, window["tokens"] / max(window["seconds"], 1e-9),
                                        began, train_seconds / (done - start), temperature)
                self.history.append(record.to_dict())
                self._send(record)
                window = self._new_window()
            if cfg.eval_every and done % cfg.eval_every == 0 and done < self.total and self.eval_set:
                metrics = self._eval_or_stop(done)
                record = self._progress("eval", done, None, None, 0.0, began, train_seconds / (done - start),
                                        temperature, eval=metrics)
                self.history.append(record.to_dict())
                self._send(record)
            if cfg.save_every and done % cfg.save_every == 0 and done < self.total:
                path = self._save(done, final=False)
                self._send(self._progress("checkpoint", done, None, None, 0.0, began, train_seconds / (done - start),
                                          temperature, path=str(path)))
        final_eval = self._eval_or_stop(self.total) if self.eval_set else None
        report = TrainReport(
            out=str(self.out), steps=self.total, total_steps=self.total, epochs=self.total / self.steps_per_epoch,
            world_size=self.world, train_samples=len(self.train_set), eval_samples=len(self.eval_set),
            truncated_samples=self.truncated, train_tokens=tokens_total, seconds=time.perf_counter() - began,
            tokens_per_s=tokens_total / max(train_seconds, 1e-9), final_loss=last_loss,
            eval=None if final_eval is None else {**final_eval, "initial": self.initial_eval},
            alignment=self.alignment, resumed_from=resumed_from, history=self.history, config=cfg.to_dict(),
        )
        path = self._save(self.total, final=True, report=report)
        self._send(self._progress("done", self.total, last_loss, grad_norm, report.tokens_per_s, began, 0.0,
                                  float(self.fuser.projectors[0].gate_temperature), eval=final_eval, path=str(path)))
        return report

    @property
    def _sum_dtype(self) -> torch.dtype:
        return torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64

    def _new_window(self) -> dict[str, Any]:
        zero = torch.zeros((), dtype=self._sum_dtype, device=self.device)
        return {"loss": zero, "answer_tokens": 0, "tokens": 0, "seconds": 0.0}

    def _stop(self, done: int) -> None:
        """Cancelled: keep the work done so far in a checkpoint, then raise."""
        self._save(done, final=False)
        raise Cancelled(f"Training was cancelled after step {done} of {self.total}; the checkpoint in {self.out} "
                        "continues it with --resume.")

    def _eval_or_stop(self, done: int) -> dict[str, Any]:
        try:
            return self._eval_dict()
        except Cancelled:
            self._stop(done)
            raise  # unreachable: _stop raises

    def _step(self, step: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (local loss sum, global answer tokens,
        global tokens, grad norm), the tensors left on the device (no sync per step)."""
        cfg = self.config
        indices = self._step_indices(step)  # (grad_accum, global batch)
        answer_tokens = int(self.answer_lengths[indices].sum())
        tokens = int(self.lengths[indices].sum())
        scale = self.world / answer_tokens  # DDP averages over processes: the sum over all of them / all tokens
        loss_sum = torch.zeros((), dtype=self._sum_dtype, device=self.device)
        for micro in range(cfg.grad_accum):
            local = indices[micro, self.rank * cfg.batch_size:(self.rank + 1) * cfg.batch_size].tolist()
            sync = micro == cfg.grad_accum - 1 or self.world == 1
            with contextlib.nullcontext() if sync else self.acc.no_sync(self.model):
                result = self._forward(local, "train", self.model)
                backward(result, scale)
            loss_sum += result.loss_sum.detach().to(self._sum_dtype)
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
        self.last_lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, answer_tokens, tokens, norm

    def _step_indices(self, step: int) -> torch.Tensor:
        """Conversation indices of one optimizer step, (grad_accum, global batch): a pure function of the step,
        so a resume and every process agree without sharing a sampler."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(self.config.seed + 1 + epoch))
        per_step = self.global_batch * self.config.grad_accum
        return order[within * per_step:(within + 1) * per_step].view(self.config.grad_accum, self.global_batch)

    def _anneal(self, step: int) -> float:
        temps = [p.set_anneal_step(step) for p in self.fuser.projectors]
        return temps[0] if temps else 0.0

    def _cancelled(self) -> bool:
        flag = self.cancel.is_set()
        if self.world > 1:  # every process stops at the same step
            flag = bool(self.acc.reduce(torch.tensor([float(flag)], device=self.device), "sum").item() > 0)
        return flag

    # -- evaluation -----------------------------------------------------------------------------------------

    def _eval_dict(self) -> dict[str, Any]:
        return {"fuser": asdict(self._evaluate(self.fusion)), "receiver": asdict(self.receiver_alone)}

    def _evaluate(self, fusion: FusionModule | None) -> EvalMetrics:
        """Metrics on this process's share of the held-out split, summed over processes.

        The fuser runs in eval mode (hard gates, no dropout): the fusion inference performs.
        """
        # similar lengths: less padding
        shard = sorted(range(self.rank, len(self.eval_set), self.world), key=lambda i: self.eval_set[i].tokens)
        sums = torch.zeros(5, dtype=torch.float64)  # loss, correct, first correct, tokens, first tokens
        was_training = self.fusion.training
        self.fusion.eval()
        try:
            with torch.inference_mode():
                for i in range(0, len(shard), self.config.batch_size):
                    if self.world == 1 and self.cancel.is_set():
                        raise Cancelled("Training was cancelled during evaluation.")
                    r = self._forward(shard[i:i + self.config.batch_size], "eval", fusion)
                    sums += torch.tensor([float(r.loss_sum), float(r.correct), float(r.first_correct),
                                          r.answer_tokens, r.first_tokens], dtype=torch.float64)
        finally:
            self.fusion.train(was_training)
        if self.world > 1:
            sums = self.acc.reduce(sums.to(self.device), "sum").cpu()
        loss, correct, first_correct, tokens, first = sums.tolist()
        return EvalMetrics(loss / max(tokens, 1), correct / max(tokens, 1), first_correct / max(first, 1), int(tokens),
                           int(first))

    # -- output ---------------------------------------------------------------------------------------------

    def _save(self, step: int, final: bool, report: TrainReport | None = None) -> Path:
        """A resumable checkpoint (all processes take part); at the end also the fuser and report in ``out``."""
        import json

        folder = step_dir(self.out, step)
        tmp = folder.with_name(folder.name + ".tmp")
        if self.acc.is_main_process:
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        write_rng(tmp, self.rank)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            extra = self._fuser_extra(step)
            state = TrainState(
                step=step, total_steps=self.total, world_size=self.world, config=self.config.to_dict(),
                **self._state_models(),
                scheduler=self.scheduler.state_dict(), param_groups=[], history=self.history,
                extra={"initial_eval": self.initial_eval},
            )
            write_checkpoint(tmp, self.fuser, self.optimizer, state, extra, save=self._write_fuser)
            finish_folder(tmp, folder)
            prune(self.out, self.config.keep_checkpoints)
            if final:
                self._write_fuser(self.out, extra)
                if report is not None:
                    (self.out / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        self.acc.wait_for_everyone()
        return self.out if final else folder

    def _finished(self) -> bool:
        """Whether ``out`` holds the finished fuser (a team: its team.json)."""
        return False

    def _fuser_extra(self, step: int) -> dict[str, Any]:
        return {"training": {"step": step, "total_steps": self.total, "world_size": self.world,
                             "train_samples": len(self.train_set), "config": self.config.to_dict()}}

    def _progress(self, event: str, step: int, loss: float | None, grad_norm: float | None, tokens_per_s: float,
                  began: float, seconds_per_step: float, temperature: float, **kw: Any) -> TrainProgress:
        return TrainProgress(
            event=event, step=step, total_steps=self.total, epoch=step / self.steps_per_epoch, loss=loss,
            lr=self.last_lr, grad_norm=grad_norm, tokens_per_s=tokens_per_s,
            elapsed_s=time.perf_counter() - began,
            eta_s=(self.total - step) * seconds_per_step if seconds_per_step else None,
            gate_temperature=temperature, **kw,
        )

    def _send(self, record: TrainProgress) -> None:
        if self._emit is not None:
            self._emit(record)


def lr_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, schedule: str) -> Any:
    """transformers' schedule (linear warm-up over ``warmup`` steps, then ``schedule`` down towards 0 at
    ``total``), one step ahead: step ``s`` runs at the schedule's ``s + 1`` of ``total + 1``, so warm-up
    never spends a step at a zero learning rate."""
    from transformers import get_scheduler
    from transformers.optimization import get_constant_schedule_with_warmup

    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # starting at step 1 (last_epoch=0) needs it
    if schedule == "constant":  # get_scheduler passes no last_epoch to this one
        return get_constant_schedule_with_warmup(optimizer, warmup + 1, last_epoch=0)
    return get_scheduler(schedule, optimizer, num_warmup_steps=warmup + 1, num_training_steps=total + 1,
                         scheduler_specific_kwargs={"last_epoch": 0})


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """The multiplier of the peak LR that :func:`lr_scheduler` applies at ``step`` (0-based)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=1.0)
    return float(lr_scheduler(optimizer, warmup, total, schedule).lr_lambdas[0](step + 1))


def _adamw(fuser: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; biases, norm weights and gate logits are not decayed (decay would only pull gates shut)."""
    decay, plain = [], []
    for name, param in fuser.named_parameters():
        if not param.requires_grad:
            continue
        (plain if param.dim() < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    device = next(fuser.parameters()).device
    # the fused kernel is several times faster than the per-tensor loop for a fuser's many small tensors
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda") or None)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0

