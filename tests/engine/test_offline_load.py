"""Loading makes no Hub request, online or not, with `kernels` installed or not (transformers >= 5.25 requires
it and would kernelize every load: fusers.libraries.LOAD_OPTIONS switches that off)."""

from __future__ import annotations

import json

LOAD = r"""
from fusers.pair import ModelSpec, load_pair
from fusers.sources import default_pair
receiver, sharer, fuser = default_pair()
for quantize in ("none", "8bit"):  # quantizing imports bitsandbytes, which asked the Hub on some CPUs
    pair = load_pair(ModelSpec(receiver, "cpu", "float32", quantize), ModelSpec(sharer, "cpu", "float32", quantize),
                     fuser)
    print("loaded", pair.receiver.quantize, pair.fuser is not None)
"""


def test_loading_the_demo_pair_plain_and_quantized_asks_the_hub_nothing(counting_hub):
    out = counting_hub.run_child(LOAD)
    assert "loaded none True" in out and "loaded 8bit True" in out
    assert counting_hub.requests == []


def test_the_counting_hub_sees_a_request_that_reaches_it(counting_hub):
    """The check above can fail: a Hub id the engine must look up is a request this hub records."""
    out = counting_hub.run_child(r"""
from fusers.errors import ModelLoadError
from fusers.pair import ModelSpec, load_model
try:
    load_model(ModelSpec("someone/no-such-model", "cpu"), "receiver")
except ModelLoadError as exc:
    print("refused")
""")
    assert "refused" in out
    assert any("someone/no-such-model" in r for r in counting_hub.requests)


CLI = "import sys; from fusers.cli import main; sys.exit(main(sys.argv[1:]))"  # `c2c ...`, as its entry point runs it


def test_the_shipped_demo_fuser_alone_loads_its_pair_from_the_cli_with_no_hub_request(counting_hub):
    """The demo fuser records its pair as c2c-demo/receiver and c2c-demo/sharer: names the engine maps to the
    shipped folders, so `--fuser FOLDER` (and `--pair FOLDER`) alone load the pair, online, asking the Hub nothing."""
    from fusers.demo import pair_paths

    fuser = str(pair_paths()[2])
    for option in ("--fuser", "--pair"):
        out = counting_hub.run_child(CLI, "compare", option, fuser, "--prompt", "What is the national animal of Mavar?",
                                     "--modes", "fusion", "--max-new-tokens", "12", "--device", "cpu", "--json")
        answer = json.loads(out.splitlines()[-1])
        assert answer["mode"] == "fusion" and "owl" in answer["text"].lower()  # a fact only the sharer knows
    assert counting_hub.requests == []


def test_a_hub_id_that_is_nowhere_fails_at_once_when_the_hub_cannot_be_reached(tmp_path):
    """One look at the Hub, not the Hub client's five retries: an endpoint that takes each connection and drops it
    is counted, and the error names the role, the model and the fix."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    from pathlib import Path

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    connections = []

    def drop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)
            conn.close()

    threading.Thread(target=drop, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{server.getsockname()[1]}"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run([sys.executable, "-c", CLI, "compare", "--receiver", "someone/not-here", "--sharer",
                               "someone/not-here-either", "--prompt", "Hi"], env=env, capture_output=True, text=True,
                              timeout=600)
    finally:
        server.close()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: The receiver someone/not-here is not on this machine")
    assert "cannot be reached" in error and "local folder or .gguf file" in error
    assert len(connections) == 1  # one look, no retries
