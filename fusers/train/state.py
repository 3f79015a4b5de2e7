"""Resumable training checkpoints, stored without pickle.

A checkpoint is a folder that is also a fuser in our format::

    checkpoints/step-000100/
        fuser.json, fuser.safetensors   the fuser (fusers.checkpoint.save_fuser): `c2c compare --fuser` loads it
        trainer_state.json              step, settings, scheduler, optimizer hyperparameters, history (sorted JSON)
        optimizer.safetensors           AdamW moments, one tensor per parameter and name
        rng-rank{R}.safetensors         each process's RNG state (the gate noise and dropout draw from it)

Folders are written under a ``.tmp`` name and renamed when complete, so a crash never
leaves a checkpoint that looks whole.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import WEIGHTS_NAME, save_fuser
from ..errors import TrainingError

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
RNG_NAME = "rng-rank{rank}.safetensors"
CHECKPOINTS_DIR = "checkpoints"
REPORT_NAME = "train_report.json"
STATE_FORMAT = "c2c-playground-train-state"
STATE_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS_DIR / f"step-{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder under ``out``, or None."""
    root = out / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))
             and (p / STATE_NAME).is_file()]
    return max(found)[1] if found else None


@dataclass
class TrainState:
    """What a resume reads back besides the tensors."""

    step: int
    total_steps: int
    world_size: int
    config: dict[str, Any]
    receiver: str
    sharer: str
    scheduler: dict[str, Any]
    param_groups: list[dict[str, Any]]
    history: list[dict[str, Any]]
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "format_version": STATE_VERSION, **vars(self)}


# The RNG files are ours, not accelerate's: accelerate saves RNG state only inside ``Accelerator.save_state``
# (``checkpointing.save_accelerator_state``), together with every prepared model and optimizer, pickled
# (``random_states_{rank}.pkl`` through ``torch.save``); and ``load_state`` catches any failure to read them and
# only logs "Could not load random states" at INFO, so a missing or corrupt file resumes on another random
# stream without a word: the run no longer continues exactly. Here a missing file is a TrainingError, and the
# states are two tensors in safetensors, like the rest of the checkpoint. (Python's and NumPy's global RNGs,
# which accelerate also saves, are not drawn from in training.)
def write_rng(folder: Path, rank: int) -> None:
    from safetensors.torch import save_file

    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    save_file(tensors, str(folder / RNG_NAME.format(rank=rank)))


def read_rng(folder: Path, rank: int) -> None:
    from safetensors.torch import load_file

    path = folder / RNG_NAME.format(rank=rank)
    if not path.is_file():
        raise TrainingError(f"{path} is missing: the checkpoint was written by fewer processes than are running now.")
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["cpu"])
    cuda = sorted((int(k[4:]), v) for k, v in tensors.items() if k.startswith("cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda][: torch.cuda.device_count()])


def write_checkpoint(folder: Path, fuser: Any, optimizer: torch.optim.Optimizer, state: TrainState,
                     fuser_extra: dict[str, Any], save: Any = None) -> None:
    """Everything but the RNG files (each process writes its own with :func:`write_rng`). ``save(folder, extra)``
    writes the fuser (a team's writes its team folder); by default :func:`~fusers.checkpoint.save_fuser`."""
    from safetensors.torch import save_file

    if save is None:
        save_fuser(fuser, folder, extra=fuser_extra)
    else:
        save(folder, fuser_extra)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in opt["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"state.{index}.{name}"] = value
    save_file(tensors, str(folder / OPTIMIZER_NAME), metadata={"format": STATE_FORMAT})
    state.param_groups = [_jsonable(group) for group in opt["param_groups"]]
    state.extra = {**state.extra, "optimizer_scalars": scalars}
    (folder / STATE_NAME).write_text(json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n")


def read_state(folder: Path) -> TrainState:
    path = folder / STATE_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path} cannot be read ({exc}); resume from another checkpoint or start a new run.") from exc
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a {STATE_FORMAT} file.")
    if data.get("format_version") != STATE_VERSION:
        raise TrainingError(f"{path} has format version {data.get('format_version')!r}; this version reads "
                            f"{STATE_VERSION}. Resume with the C2C Playground that wrote it.")
    try:
        return TrainState(**{k: data[k] for k in TrainState.__dataclass_fields__})
    except KeyError as exc:
        raise TrainingError(f"{path} lacks {exc}; the checkpoint is incomplete.") from None


def read_optimizer(folder: Path, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Load AdamW's state; every parameter's moments must match the fuser's shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / OPTIMIZER_NAME
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise TrainingError(f"{path} is missing or corrupt ({exc}); resume from another checkpoint.") from exc
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(state.extra.get("optimizer_scalars", {}).items()):
        _, index, name = key.split(".", 2)
        per_param.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    groups = state.param_groups
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current["param_groups"]]:
        raise TrainingError(f"{path} holds optimizer state for another fuser shape; start a new run.")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, values in per_param.items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                raise TrainingError(f"{path}: state {index}.{name} has shape {tuple(value.shape)}, the fuser's "
                                    f"parameter has {tuple(params[index].shape)}; start a new run.")
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def finish_folder(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def prune(out: Path, keep: int) -> None:
    root = out / CHECKPOINTS_DIR
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def has_run(out: Path) -> bool:
    """Whether ``out`` already holds a trained fuser or checkpoints (a new run would overwrite them)."""
    return (out / WEIGHTS_NAME).exists() or (out / CHECKPOINTS_DIR).is_dir() and any((out / CHECKPOINTS_DIR).iterdir())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
