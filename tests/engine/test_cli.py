"""The `c2c` command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def c2c(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "fusers.cli", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"c2c {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def test_compare_json_has_one_line_per_mode(tiny_dirs):
    # no --modes: every mode of the engine, in its order
    proc = c2c("compare", "--fuser", str(tiny_dirs.published), "--prompt", "What is the capital of France?",
               "--max-new-tokens", "5", "--device", "cpu", "--json")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["mode"] for line in lines] == ["receiver", "sharer", "relay", "fusion", "hybrid"]
    for line in lines:
        assert {"mode", "text", "token_ids", "timing"} <= set(line)
        assert 0 < len(line["token_ids"]) <= 5
        for key in ("tokenize", "sharer_prefill", "receiver_prefill", "fuse", "ttft", "decode_tokens_per_s", "total",
                    "tokens_in", "tokens_out", "peak_memory_bytes"):
            assert key in line["timing"]
        # one device here: the CPU, whose figure is the process's peak RSS
        assert line["timing"]["peak_memory_by_device"] == {"cpu": line["timing"]["peak_memory_bytes"]} != {"cpu": 0}
    assert "hint" in lines[2] and "hint" not in lines[3] and "fusion" in lines[3]
    hybrid = lines[4]  # relay's hint, and fusion's record of each receiver layer
    assert hybrid["hint"] == lines[2]["hint"] and len(hybrid["fusion"]) == 3
    assert [p["name"] for p in hybrid["timing"]["phases"]] == [
        "tokenize", "sharer_prefill", "hint", "tokenize", "sharer_prefill", "receiver_prefill", "fuse", "decode"]


def test_compare_prints_answers_and_timing(tiny_dirs):
    proc = c2c("compare", "--receiver", str(tiny_dirs.receiver), "--sharer", str(tiny_dirs.sharer), "--fuser",
               str(tiny_dirs.ours), "--prompt", "Hello", "--modes", "relay,fusion,hybrid", "--max-new-tokens", "3")
    assert "== Text relay (relay) ==" in proc.stdout and "== Cache fusion (fusion) ==" in proc.stdout
    assert "== Relay + fusion (hybrid) ==" in proc.stdout
    assert "[hint]" in proc.stdout and "TTFT" in proc.stdout and "fuse" in proc.stdout
    assert proc.stdout.count("[hint] ") == proc.stdout.count("[answer] ") == 2  # relay's and hybrid's
    assert proc.stdout.count("| peak cpu ") == 3  # each run's peak, named by its device


def test_fuser_inspect_and_convert(tiny_dirs, tmp_path):
    info = json.loads(c2c("fuser", "inspect", str(tiny_dirs.published), "--json").stdout)
    assert info["format"] == "published" and info["receiver"] == str(tiny_dirs.receiver)
    assert info["layer_map"] == [[0, 0, 0], [1, 0, 1], [2, 1, 2]]
    text = c2c("fuser", "inspect", str(tiny_dirs.ours)).stdout
    assert "format    c2c-playground" in text and "0<-0, 1<-0, 2<-1" in text
    c2c("fuser", "convert", str(tiny_dirs.published), str(tmp_path / "ours"))
    assert json.loads(c2c("fuser", "inspect", str(tmp_path / "ours"), "--json").stdout)["format"] == "c2c-playground"
    again = c2c("fuser", "convert", str(tiny_dirs.published), str(tmp_path / "ours"), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["compare", "--prompt", "", "--fuser", "FUSER"], "error: The prompt is empty"),
    (["compare", "--prompt", "hi", "--fuser", "/nonexistent/fuser"], "error: No fuser folder or downloaded pair"),
    (["compare", "--prompt", "hi", "--modes", "telepathy", "--fuser", "FUSER"], "error: --modes takes"),
    (["fuser", "inspect", "/nonexistent"], "error: No fuser folder"),
])
def test_errors_are_one_readable_line(tiny_dirs, args, message):
    args = [str(tiny_dirs.published) if a == "FUSER" else a for a in args]
    proc = c2c(*args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback():
    proc = c2c("--debug", "fuser", "inspect", "/nonexistent", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "FuserFormatError" in proc.stderr


def test_compare_says_a_mode_that_cannot_run_in_its_row_runs_the_others_and_exits_non_zero(tiny_dirs):
    """The tiny models hold 1024 positions: 600 words fit the receiver alone, not text relay's answer prompt."""
    prompt = "capital " * 600
    common = ("compare", "--fuser", str(tiny_dirs.published), "--prompt", prompt, "--max-new-tokens", "3",
              "--device", "cpu")
    proc = c2c(*common, "--modes", "relay,receiver,fusion", check=False)
    assert proc.returncode == 2
    rows = proc.stdout.split("\n== ")
    assert rows[1].startswith("Text relay (relay) ==\nerror: Text relay: the prompt with text relay's instructions is ")
    assert "shorten the prompt" in rows[1] and "[hint]" not in rows[1]
    assert rows[2].startswith("Receiver alone (receiver) ==") and "TTFT" in rows[2]
    assert rows[3].startswith("Cache fusion (fusion) ==") and "TTFT" in rows[3]
    assert proc.stderr.splitlines()[-1] == "error: 1 of 3 modes failed: relay"
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in c2c(*common, "--modes", "relay,receiver", "--json", check=False).stdout
             .splitlines()]
    assert [line["mode"] for line in lines] == ["relay", "receiver"]
    assert lines[0]["error_type"] == "ContextLengthError" and "context holds 1024" in lines[0]["error"]
    assert "error" not in lines[1] and lines[1]["token_ids"]


def test_compare_takes_pair_as_the_app_does(tiny_dirs):
    """--pair FOLDER: a fuser folder, whose models the fuser names (the same as --fuser FOLDER)."""
    by_pair = c2c("compare", "--pair", str(tiny_dirs.published), "--prompt", "Hello", "--modes", "fusion",
                  "--max-new-tokens", "3", "--device", "cpu", "--json")
    by_fuser = c2c("compare", "--fuser", str(tiny_dirs.published), "--prompt", "Hello", "--modes", "fusion",
                   "--max-new-tokens", "3", "--device", "cpu", "--json")
    assert json.loads(by_pair.stdout)["token_ids"] == json.loads(by_fuser.stdout)["token_ids"]
    both = c2c("compare", "--pair", "demo", "--fuser", str(tiny_dirs.published), "--prompt", "Hi", check=False)
    assert both.returncode == 2 and "either --pair or --receiver/--sharer/--fuser" in both.stderr
