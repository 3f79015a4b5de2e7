"""Loading with `kernels` installed and the Hub unreachable: the requests a load makes and what it costs.

    python benchmarks/load_offline.py [--pairs demo,quantized,real] [--rounds 3] [--json]

transformers >= 5.25 requires the `kernels` package and by default "kernelizes" every model it loads. The engine
switches that off in one place (``fusers.libraries.LOAD_OPTIONS``). This measures, for each pair, a load through
``fusers.pair.load_pair`` with the engine's options and one with transformers' defaults (``use_kernels`` not
passed), each in a fresh process whose ``HF_ENDPOINT`` is a local server that counts every request and answers
none usefully (a 503 at once, as a dead proxy would), with ``HF_HUB_OFFLINE`` unset: an online user on a bad
network. Printed: requests per load, median load seconds, and the ratio of the defaults' time over the engine's.

Pairs: ``demo`` (the bundled demo pair), ``quantized`` (the demo pair in 8-bit), ``real`` (SmolLM2 receiver and
Gemma-3 sharer, the GGUF files of `make real-models`; the first round converts them into the cache, so it is
dropped from the median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from fusers import libraries
if sys.argv[2] == "defaults":
    libraries.LOAD_OPTIONS.clear()  # transformers' own defaults: kernelize where `kernels` is installed
from fusers.pair import ModelSpec, load_pair
import transformers, importlib.util
name = sys.argv[1]
if name in ("demo", "quantized"):
    from fusers.sources import default_pair
    r, s, f = default_pair()
    q = "8bit" if name == "quantized" else "none"
    specs = ModelSpec(r, "cpu", "float32", q), ModelSpec(s, "cpu", "float32", q)
else:
    from fusers import real_models
    specs = ModelSpec(str(real_models.smollm2_path()), "cpu"), ModelSpec(str(real_models.gemma3_target()), "cpu")
    f = None
t0 = time.perf_counter()
error = ""
try:
    load_pair(*specs, f)
except Exception as exc:
    error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
print(json.dumps({"seconds": time.perf_counter() - t0, "error": error, "transformers": transformers.__version__,
                  "kernels": importlib.util.find_spec("kernels") is not None}))
"""


class _Counter(BaseHTTPRequestHandler):
    seen: list[str] = []

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def load_once(pair: str, options: str, endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
    before = len(_Counter.seen)
    out = subprocess.run([sys.executable, "-c", CHILD, pair, options], env=env, capture_output=True, text=True,
                         check=True, timeout=900)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["requests"] = _Counter.seen[before:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="demo,quantized,real")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", file=sys.stderr)
    for pair in args.pairs.split(","):
        row: dict = {"pair": pair}
        for options in ("engine", "defaults"):
            runs = [load_once(pair, options, endpoint) for _ in range(args.rounds + (pair == "real"))]
            timed = runs[1:] if pair == "real" else runs
            row[options] = {"median_s": statistics.median(r["seconds"] for r in timed),
                            "requests": sorted({q for r in runs for q in r["requests"]}),
                            "errors": sorted({r["error"] for r in runs if r["error"]})}
            row["transformers"], row["kernels_installed"] = runs[0]["transformers"], runs[0]["kernels"]
        row["defaults_over_engine"] = row["defaults"]["median_s"] / row["engine"]["median_s"]
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{pair}: transformers {row['transformers']}, kernels installed: {row['kernels_installed']}")
            for options in ("engine", "defaults"):
                r = row[options]
                print(f"  {options:8s} median {r['median_s']:.2f} s, {len(r['requests'])} distinct requests "
                      f"{r['requests'][:3]}{' errors: ' + '; '.join(r['errors']) if r['errors'] else ''}")
            print(f"  defaults over engine: {row['defaults_over_engine']:.2f}")


if __name__ == "__main__":
    main()
