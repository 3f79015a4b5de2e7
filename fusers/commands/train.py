"""``c2c train``: train a fuser for a receiver/sharer pair on JSONL conversations.

Every ``TrainConfig`` field is an option (``--batch-size`` for ``batch_size``), with its
help text. Several processes (data-parallel through accelerate): ``torchrun --nproc_per_node N
-m fusers.cli train ...`` (GPUs or CPU/gloo), or ``accelerate launch --multi_gpu --num_processes N
-m fusers.cli train ...`` (GPUs; ``accelerate launch --cpu`` starts one process).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from ..train.config import TrainConfig, option_fields
from .common import add_field_option, add_pair_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a fuser for a receiver/sharer pair on JSONL conversations",
        description="Train a fuser: the receiver and sharer stay frozen, one fuser per receiver layer learns to fuse "
        "the sharer's cache into the receiver's, with the loss on the last assistant turn of each conversation. "
        "Several processes (GPUs, or CPUs on gloo): torchrun --nproc_per_node N -m fusers.cli train ...; on GPUs "
        "also accelerate launch --multi_gpu --num_processes N -m fusers.cli train ...",
    )
    add_pair_options(p, fuser=False, cuda_graphs=False, team=True, notes={
        "receiver": "With --resume: the saved run's.",
        "sharer": "With --resume: the saved run's. Several times: a team, whose fusers train together (one per "
                  "sharer, each named after its sharer's folder, or NAME=SOURCE).",
        "device": "Several processes: each its own GPU.", "dtype": "The fuser keeps float32 weights.",
        "quantize": "The models stay frozen."})
    io = p.add_argument_group("data and output")
    io.add_argument("--data", required=True, help='JSONL file, one {"messages": [...]} conversation per line')
    io.add_argument("--eval-data", help="held-out JSONL file (default: --eval-split of --data)")
    io.add_argument("--out", required=True, help="folder for the fuser, checkpoints and train_report.json")
    io.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    io.add_argument("--json", action="store_true", help="one JSON line per logging step instead of a progress bar")
    groups: dict[str, Any] = {}
    for f in option_fields():
        group_name = f.metadata.get("group", "training")
        group = groups.get(group_name) or groups.setdefault(group_name, p.add_argument_group(group_name))
        add_field_option(group, f, default=None, metavar="NAME" if str(f.type).startswith("str") else None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ModelLoadError
    from ..pair import ModelSpec, load_model
    from ..train.state import latest_checkpoint, read_state

    given = {f.name: getattr(args, f.name) for f in option_fields() if getattr(args, f.name) is not None}
    out = Path(args.out)
    from ..team import is_team, read_team, sharer_names

    receiver, sharers = args.receiver, list(args.sharer or [])
    checkpoint = latest_checkpoint(out) if args.resume else None
    if checkpoint is not None:
        # settings left out on the command line come from the saved run; given ones must match it
        state = read_state(checkpoint)
        config = TrainConfig.from_dict({**state.config, **given})
        receiver = receiver or state.receiver
        if not sharers and is_team(checkpoint):  # a team's run: its sharers, by name, from the checkpoint
            sharers = [f"{s.name}={s.sharer}" for s in read_team(checkpoint).sharers]
        sharers = sharers or [state.sharer]
    else:
        config = TrainConfig(**given)
    receiver = receiver or args.receiver_adapter
    sharers = sharers or [args.sharer_adapter]
    if not receiver or not all(sharers):
        raise ModelLoadError("Give --receiver and --sharer (Hub ids or local folders).")
    team = len(sharers) > 1 or (checkpoint is not None and is_team(checkpoint))
    names, sharers = sharer_names(sharers)
    main_process = int(os.environ.get("RANK", "0")) == 0
    from ..train.data import load_conversations

    # bad data fails before minutes of loading
    data = load_conversations(args.data)
    eval_data = load_conversations(args.eval_data) if args.eval_data else None

    def say(text: str) -> None:
        if main_process and not args.json:
            print(text, file=sys.stderr, flush=True)

    device = _process_device(args.device)
    models = []
    roles = [("receiver", receiver, args.receiver_adapter, args.receiver_quantize)] + [
        ("sharer", sharer, args.sharer_adapter, args.sharer_quantize) for sharer in sharers]
    for i, (role, source, adapter, quantize) in enumerate(roles, start=1):
        say(f"[{i}/{len(roles)}] Loading {role} {source}" + (f" + adapter {adapter}" if adapter else ""))
        models.append(load_model(ModelSpec(source, device, args.dtype, quantize or args.quantize, adapter or ""), role))
    for m in models:
        say(f"  {m.describe()}")

    from ..train import train

    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        say("\nstopping after this step and writing a checkpoint (Ctrl-C again to abort)")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)
    show = _JsonLines() if args.json else _Bar()
    try:
        if team:
            from ..train.team import train_team

            report = train_team(models[0], dict(zip(names, models[1:])), data, config, out, eval_data=eval_data,
                                resume=args.resume, progress=show, cancel=cancel)
        else:
            report = train(models[0], models[1], data, config, out, eval_data=eval_data,
                           resume=args.resume, progress=show, cancel=cancel)
    finally:
        show.close()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    if not main_process:
        return 0
    if args.json:
        print(json.dumps({"event": "report", **report.to_dict()}), flush=True)
        return 0
    print(format_report(report))
    return 0


def _process_device(device: str) -> str:
    """Under torchrun/accelerate launch, ``auto`` means this process's own GPU."""
    local = os.environ.get("LOCAL_RANK")
    if device == "auto" and local is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(local)}"
        return "cpu"
    return device


class _JsonLines:
    def __call__(self, p: Any) -> None:
        print(json.dumps(p.to_dict()), flush=True)

    def close(self) -> None:
        pass


class _Bar:
    """tqdm progress bar on stderr: loss, learning rate, tokens/s; tqdm adds the ETA."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, p: Any) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=p.total_steps, initial=0, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.bar.n = p.step
        if p.event == "log":
            self.bar.set_postfix(loss=f"{p.loss:.4f}", lr=f"{p.lr:.2e}", tok_s=f"{p.tokens_per_s:,.0f}", refresh=False)
        elif p.event == "eval" and p.eval:
            self.bar.write(f"step {p.step}: " + format_eval(p.eval))
        elif p.event == "checkpoint":
            self.bar.write(f"step {p.step}: checkpoint {p.path}")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_eval(ev: dict) -> str:
    f, r = ev["fuser"], ev["receiver"]
    return (f"held-out loss {f['loss']:.4f} (receiver alone {r['loss']:.4f}), next-token accuracy "
            f"{f['token_accuracy']:.1%} (receiver alone {r['token_accuracy']:.1%}), first answer token "
            f"{f['first_token_accuracy']:.1%} (receiver alone {r['first_token_accuracy']:.1%})")


def format_report(report: Any) -> str:
    lines = [
        f"fuser written to {report.out}",
        f"{report.steps} steps ({report.epochs:.2f} epochs) on {report.train_samples} conversations"
        + (f", {report.truncated_samples} truncated" if report.truncated_samples else "")
        + f", {report.world_size} process(es), {report.tokens_per_s:,.0f} tokens/s, {report.seconds:.1f} s",
        f"final training loss {report.final_loss:.4f}" if report.final_loss is not None else "no training loss",
    ]
    if report.eval:
        lines.append(f"eval on {report.eval_samples} conversations: " + format_eval(report.eval))
    return "\n".join(lines)
