"""`c2c train` as a user runs it: the fuser learns what only the sharer knows, and `c2c compare` uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusers.checkpoint import load_fuser

from .conftest import FAST, KEYS, value_of


def c2c(*args, check=True):
    # one thread, as in this process (see conftest.one_thread)
    proc = subprocess.run([sys.executable, "-m", "fusers.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"c2c {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def options(settings: dict) -> list[str]:
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_training_learns_from_the_sharer_and_compare_uses_the_fuser(task_dirs, tmp_path):
    out = tmp_path / "fuser"
    proc = c2c("train", "--receiver", task_dirs.receiver, "--sharer", task_dirs.sharer, "--data", task_dirs.data,
               "--out", out, "--steps", 300, "--eval-split", 0.1, "--log-every", 50, "--eval-every", 150,
               "--save-every", 150, "--device", "cpu", "--json", *options(FAST))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    events = [line["event"] for line in lines]
    assert events == ["log"] * 3 + ["eval", "checkpoint"] + ["log"] * 3 + ["done", "report"]
    logs = [line for line in lines if line["event"] == "log"]
    assert [line["step"] for line in logs] == [50, 100, 150, 200, 250, 300]
    for line in logs:
        assert line["total_steps"] == 300 and line["tokens_per_s"] > 0 and line["lr"] > 0
        assert line["eta_s"] is not None and line["gate_temperature"] > 0
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    # the gates' Gumbel temperature anneals geometrically from 1 towards 0.001 over the run
    temperatures = [line["gate_temperature"] for line in logs]
    assert temperatures == sorted(temperatures, reverse=True)
    assert temperatures[0] == pytest.approx(0.001 ** (49 / 300), rel=1e-5)
    assert temperatures[-1] == pytest.approx(0.001 ** (299 / 300), rel=1e-5)

    report = lines[-1]
    ev = report["eval"]
    assert report["train_samples"] == 360 and report["eval_samples"] == 40 and report["truncated_samples"] == 0
    # zero-initialised outputs: before training, the fuser scored exactly what the receiver alone scores
    assert ev["initial"] == ev["receiver"]
    # held-out loss falls well below its start; the first answer token (the key's value) is only knowable
    # through the sharer's cache: the receiver alone cannot tell the keys apart
    assert ev["fuser"]["loss"] < 0.3 * ev["initial"]["loss"]
    assert ev["fuser"]["first_token_accuracy"] >= 0.9
    assert ev["receiver"]["first_token_accuracy"] <= 0.25

    fuser = load_fuser(out)
    assert fuser.info.receiver == str(task_dirs.receiver.resolve()) and fuser.info.mapping == "last_aligned"
    assert [(link.receiver_layer, link.sharer_layer) for link in fuser.layer_map] == [(0, 1), (1, 2)]
    assert all(k and v for _, k, v in fuser.gates())
    assert (out / "checkpoints" / "step-000150" / "trainer_state.json").is_file()
    assert load_fuser(out / "checkpoints" / "step-000300").info.extra["training"]["step"] == 300
    assert json.loads((out / "train_report.json").read_text())["eval"] == ev

    key = KEYS[3]
    proc = c2c("compare", "--fuser", out, "--prompt", f"w41 w{key}", "--modes", "receiver,fusion",
               "--max-new-tokens", 3, "--device", "cpu", "--json")
    receiver, fusion = (json.loads(line) for line in proc.stdout.splitlines())
    assert fusion["text"].split()[0] == f"w{value_of(key)}"
    assert receiver["text"] != fusion["text"]


def test_bad_data_is_one_readable_line(task_dirs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "w10"}, {"role": "assistant", "content": "w30"}]}\n'
                   '{"messages": [{"role": "user", "content": "w10"}]}\n')
    proc = c2c("train", "--receiver", task_dirs.receiver, "--sharer", task_dirs.sharer, "--data", bad, "--out",
               tmp_path / "o", "--device", "cpu", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad} line 2 has no assistant turn; the last assistant message is the " \
                                  "answer the fuser learns."
    proc = c2c("train", "--receiver", task_dirs.receiver, "--sharer", task_dirs.sharer, "--data", task_dirs.small,
               "--out", tmp_path / "o", "--batch-size", 0, check=False)
    assert proc.returncode == 2 and "error: batch_size must be an integer >= 1" in proc.stderr
