"""A tiny pair with something to learn: the sharer can tell the keys apart, the receiver cannot.

The task: the user message holds one key word among filler words; the answer is that
key's value word. The receiver's embedding rows of the eight keys are made identical, so
the receiver alone cannot do better than guess among them; the sharer sees distinct keys,
so a fuser that carries the sharer's cache into the receiver's can answer. The receiver's
output head is scaled up so that a random tiny model can be confident at all.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

KEYS = list(range(10, 18))  # word ids w10..w17
VALUES = list(range(30, 38))  # key i answers w{VALUES[i]}
FILLERS = list(range(40, 48))
VOCAB = 48

# settings that learn the task in a few hundred CPU steps
FAST = dict(batch_size=16, lr=1e-2, hidden_dim=32, intermediate_dim=32, dropout=0.0, gate_init=3.0, warmup_steps=10)


def value_of(key: int) -> int:
    return VALUES[KEYS.index(key)]


def conversation(rng: random.Random) -> dict:
    k = rng.randrange(len(KEYS))
    words = [f"w{rng.choice(FILLERS)}" for _ in range(rng.randrange(0, 4))]
    words.insert(rng.randrange(len(words) + 1), f"w{KEYS[k]}")
    return {"messages": [{"role": "user", "content": " ".join(words)},
                         {"role": "assistant", "content": f"w{VALUES[k]}"}]}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@dataclass
class TaskPair:
    root: Path
    receiver: Path
    sharer: Path
    data: Path  # 400 conversations
    small: Path  # 64 conversations: quick runs


def build_task_pair(root: Path) -> TaskPair:
    import torch

    from fusers import tiny

    tok = tiny.word_tokenizer(VOCAB)
    rcfg = tiny.tiny_config("qwen3", VOCAB, layers=2, hidden_size=32, heads=2, kv_heads=1, head_dim=16,
                            intermediate_size=64, tokenizer=tok)
    scfg = tiny.tiny_config("qwen2", VOCAB, layers=3, hidden_size=32, heads=2, kv_heads=1, intermediate_size=64,
                            tokenizer=tok)
    receiver, sharer = tiny.build_model(rcfg, seed=1), tiny.build_model(scfg, seed=2)
    with torch.no_grad():
        emb = receiver.get_input_embeddings().weight
        emb[KEYS] = emb[KEYS[0]].clone()  # the receiver cannot tell the keys apart
        receiver.lm_head.weight.mul_(10.0)
    for model, name in ((receiver, "receiver"), (sharer, "sharer")):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    rng = random.Random(0)
    records = [conversation(rng) for _ in range(400)]
    return TaskPair(root, root / "receiver", root / "sharer", write_jsonl(root / "data.jsonl", records),
                    write_jsonl(root / "small.jsonl", records[:64]))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models gain nothing from more, and lose a lot when the cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def task_dirs(tmp_path_factory) -> TaskPair:
    return build_task_pair(tmp_path_factory.mktemp("task-pair"))


@pytest.fixture(scope="session")
def task_models(task_dirs):
    """(receiver, sharer) loaded on the CPU in float32."""
    from fusers.pair import ModelSpec, load_model

    return (load_model(ModelSpec(str(task_dirs.receiver), "cpu"), "receiver"),
            load_model(ModelSpec(str(task_dirs.sharer), "cpu"), "sharer"))
