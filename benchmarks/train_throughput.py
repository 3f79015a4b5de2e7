"""Fuser training throughput on the CPU, and where a training step's time goes.

    python benchmarks/train_throughput.py [--steps 40] [--batch-size 8] [--threads N] [--json]

The tiny pair of benchmarks/modes.py (Qwen3-shaped receiver, 4 layers, hidden 128; Qwen2-shaped
sharer, 3 layers, hidden 96; word tokenizer of 2000 words; fusers of hidden 64) trains on
synthetic conversations: prompts of 24-96 words, answers of 8-24 words, so batches carry padding
as real data does.

1. Throughput: ``fusers.train.train`` as the CLI runs it; tokens/s is prompt + answer tokens per
   second of training steps (set-up and evaluation excluded).
2. Step breakdown: the same step (``run_batch`` + ``backward`` + AdamW) with each phase timed:
   the frozen models' forwards (sharer prefill, receiver prefill, receiver over the answer with
   its LM head and loss), the backward through the frozen receiver down to the fused cache, and
   the fuser's own work (its forward, its backward, the optimizer). The baseline in the same run
   is the frozen forwards alone: ``step_over_frozen_forwards`` is how much a training step costs
   on top of what merely running the pair on the same batch costs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusers import tiny  # noqa: E402
from fusers.pair import LoadedModel  # noqa: E402
from fusers.train import TrainConfig, train  # noqa: E402
from fusers.train.data import collate, conversations_from, tokenize  # noqa: E402
from fusers.train.forward import FusionModule, PhaseTimer, backward, run_batch  # noqa: E402
from fusers.train.model import build_fuser  # noqa: E402
from fusers.train.trainer import _adamw  # noqa: E402

FUSER = dict(hidden_dim=64, intermediate_dim=64, num_layers=3, dropout=0.1)
FROZEN_FORWARD = ("sharer_prefill", "receiver_prefill", "receiver_answer")
FUSER_WORK = ("fuse", "fuser_backward", "optimizer")


def build_pair() -> tuple[LoadedModel, LoadedModel]:
    tok = tiny.word_tokenizer(2000)
    rcfg = tiny.tiny_config("qwen3", len(tok), layers=4, hidden_size=128, heads=4, kv_heads=2, head_dim=32,
                            intermediate_size=256, tokenizer=tok)
    scfg = tiny.tiny_config("qwen2", len(tok), layers=3, hidden_size=96, heads=4, kv_heads=1,
                            intermediate_size=192, tokenizer=tok)
    cpu = torch.device("cpu")
    models = []
    for cfg, seed, role in ((rcfg, 1, "receiver"), (scfg, 2, "sharer")):
        model = tiny.build_model(cfg, seed)
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(LoadedModel.from_model(model, tok, role, f"tiny-{role}", cpu, torch.float32))
    return models[0], models[1]


def conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(10, 2000)}" for _ in range(k))

    return [{"messages": [{"role": "user", "content": words(rng.randint(24, 96))},
                          {"role": "assistant", "content": words(rng.randint(8, 24))}]} for _ in range(n)]


def throughput(receiver, sharer, data, steps: int, batch_size: int) -> dict:
    config = TrainConfig(steps=steps, batch_size=batch_size, eval_split=0.0, log_every=steps, warmup_steps=0,
                         **FUSER)
    with tempfile.TemporaryDirectory() as out:
        report = train(receiver, sharer, data, config, Path(out) / "fuser")
    return {"tokens_per_s": report.tokens_per_s, "steps": steps, "batch_size": batch_size,
            "tokens_per_step": report.train_tokens / steps}


def breakdown(receiver, sharer, data, steps: int, batch_size: int) -> dict:
    examples = tokenize(conversations_from(data), receiver, sharer, None, 1024, False)
    fuser = build_fuser(TrainConfig(**FUSER), receiver, sharer, steps, (False, "first"), None)
    fusion = FusionModule(fuser).train()
    optimizer = _adamw(fuser, TrainConfig(**FUSER))
    pad = receiver.tokenizer.pad_token_id
    rng = random.Random(1)
    totals, tokens = [], 0
    timer = PhaseTimer(receiver.device)
    for step in range(steps + 2):
        batch = collate(rng.sample(examples, batch_size), pad, pad)
        if step == 2:  # the first steps warm the allocator up
            timer.seconds.clear()
            totals.clear()
            tokens = 0
        t0 = time.perf_counter()
        result = run_batch(receiver.model, sharer.model, fusion, batch, timer=timer)
        backward(result, 1.0 / result.answer_tokens, timer=timer)
        with timer.phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        totals.append(time.perf_counter() - t0)
        tokens += batch.tokens
    total = sum(totals)
    phases = {name: seconds / total for name, seconds in sorted(timer.seconds.items())}
    frozen = sum(phases.get(k, 0.0) for k in FROZEN_FORWARD)
    return {
        "step_s_median": statistics.median(totals),
        "tokens_per_s": tokens / total,
        "phase_fractions": phases,
        "frozen_forward_fraction": frozen,
        "frozen_backward_fraction": phases.get("receiver_backward", 0.0),
        "fuser_fraction": sum(phases.get(k, 0.0) for k in FUSER_WORK),
        "other_fraction": max(0.0, 1.0 - sum(phases.values())),
        "step_over_frozen_forwards": 1.0 / frozen,
        "fuser_parameters": fuser.parameter_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    receiver, sharer = build_pair()
    data = conversations(max(64, args.batch_size * args.steps))
    result = {"threads": torch.get_num_threads(),
              "train": throughput(receiver, sharer, data, args.steps, args.batch_size),
              "breakdown": breakdown(receiver, sharer, data, args.steps, args.batch_size)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t, b = result["train"], result["breakdown"]
    print(f"tiny pair, CPU, {result['threads']} thread(s), batch {t['batch_size']}, "
          f"{t['tokens_per_step']:.0f} tokens/step, fuser {b['fuser_parameters'] / 1e6:.2f}M parameters")
    print(f"training throughput (c2c train):   {t['tokens_per_s']:,.0f} tokens/s")
    print(f"training throughput (timed steps): {b['tokens_per_s']:,.0f} tokens/s, median step {b['step_s_median'] * 1e3:.1f} ms")
    print("| share of a training step | fraction |")
    print("|---|---|")
    for label, key in (("frozen models' forwards (prefills, receiver over the answer)", "frozen_forward_fraction"),
                       ("backward through the frozen receiver", "frozen_backward_fraction"),
                       ("fuser (forward, backward, optimizer)", "fuser_fraction"),
                       ("other (batching, caches)", "other_fraction")):
        print(f"| {label} | {b[key]:.1%} |")
    print("| phase | fraction |")
    print("|---|---|")
    for name, frac in b["phase_fractions"].items():
        print(f"| {name} | {frac:.1%} |")
    print(f"step_over_frozen_forwards: {b['step_over_frozen_forwards']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
