"""``c2c serve`` as a user runs it: a process that loads the demo pair, serves it, and stops on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from openai import OpenAI

from fusers.engine import Mode


def _c2c(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusers.cli", *args], capture_output=True, text=True, timeout=300)


def test_c2c_serve_serves_the_named_pair_until_interrupted():
    # Ctrl-C as in a terminal: a shell running this in the background (CI) starts its children with SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler; the child gets the default back
    proc = subprocess.Popen([sys.executable, "-m", "fusers.cli", "serve", "--pair", "demo", "--port", "0",
                             "--max-new-tokens", "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()
        found = re.fullmatch(r"Serving demo on (http://127\.0\.0\.1:\d+/v1)\n", first)
        assert found, first + proc.stderr.read() if proc.poll() is not None else first
        assert proc.stdout.readline() == "models: " + ", ".join(f"demo/{m.value}" for m in Mode) + "\n"
        with OpenAI(base_url=found.group(1), api_key="none", max_retries=0, timeout=120) as client:
            assert [m.id for m in client.models.list().data] == [f"demo/{m.value}" for m in Mode]
            reply = client.chat.completions.create(model="demo/fusion",
                                                   messages=[{"role": "user", "content": "Hello"}])
            assert reply.usage.completion_tokens <= 6  # the server's --max-new-tokens is a request's default
            assert reply.choices[0].finish_reason in ("stop", "length")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert re.search(r"demo/fusion: \d+ tokens \((eos|length)\), TTFT", err), err  # one log line per answer


def test_c2c_serve_refuses_another_host_without_a_key_before_loading():
    proc = _c2c("serve", "--host", "0.0.0.0")
    assert proc.returncode == 2
    assert "give an API key too (--api-key KEY" in proc.stderr and "Loading" not in proc.stderr


def test_c2c_serve_refuses_a_port_out_of_range_before_loading():
    proc = _c2c("serve", "--port", "70000")
    assert proc.returncode == 2 and "--port must be in 0..65535" in proc.stderr and "Loading" not in proc.stderr


def test_c2c_serve_names_a_pair_it_does_not_know():
    proc = _c2c("serve", "--pair", "no-such-pair", "--port", "0")
    assert proc.returncode == 2 and "No fuser folder or downloaded pair named 'no-such-pair'" in proc.stderr
    proc = _c2c("serve", "--pair", "demo", "--fuser", "x", "--port", "0")
    assert proc.returncode == 2 and "either --pair or --receiver/--sharer/--fuser" in proc.stderr
