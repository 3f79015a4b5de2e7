"""The API server's cost: TTFT and streamed tokens/s through `c2c serve`'s server against the engine in-process.

    python benchmarks/serve.py [--json] [--modes fusion,relay] [--rounds 10] [--tokens 128] [--threads 1]
                               [--client httpx|openai]

On the shipped demo pair (resources/demo, CPU), the same greedy request (a demo question, ``--tokens`` new tokens
with end-of-sequence ignored) is answered alternately

- **in-process**: ``Engine.answer`` with an ``on_event`` callback, clocked from the call to each answer token's
  event;
- **served**: the real server (:class:`fusers.serve.server.ApiServer` on a free port of 127.0.0.1, uvicorn in its
  own thread, the answer on the models' thread) called with a streaming request by a client in a process of its
  own, as real clients are, clocked there from sending the request to each content chunk as it reads it
  (``--client httpx`` reads the raw event stream; ``openai`` goes through the official client, which adds its
  own parsing).

TTFT is the time to the first answer token; tokens/s is the rate of the tokens after it (the streamed rate a
client sees). Rounds alternate in-process and served so that load on the machine falls on both alike; medians
are reported, and the TTFT overhead is the median of the per-round differences. Goals: TTFT overhead <= 5 ms and
served tokens/s >= 0.95 x in-process.

Wall-clock figures depend on how busy the machine is: served, three threads want a core (the answer's, the
server's event loop and the client), in-process one. So it also reports, from the engine's own timing record in
each answer's ``stats``, the TTFT the server adds around the engine's, and CPU time per answer token (Linux), which
load does not change: the server's event-loop thread, and the answer's thread served and in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusers.chat import user  # noqa: E402
from fusers.engine import Engine, Mode, TokenEvent  # noqa: E402
from fusers.generation import GenerationSettings  # noqa: E402

QUESTION = user("What is the national animal of Mavar?")
TTFT_GOAL_MS, RATE_GOAL = 5.0, 0.95


def in_process(engine: Engine, mode: Mode, settings: GenerationSettings) -> tuple[float, float, int, float, float]:
    """(TTFT s, tokens/s after the first, tokens with text; the engine's own TTFT and tokens/s) of one answer,
    clocked from the call."""
    times: list[float] = []

    def on_event(event: object) -> None:
        if isinstance(event, TokenEvent) and event.part == "answer" and event.text:  # as a stream sends them
            times.append(time.perf_counter())

    t0 = time.perf_counter()
    answer = engine.answer(mode, QUESTION, settings, on_event=on_event)
    t = answer.timing
    return times[0] - t0, (len(times) - 1) / (times[-1] - times[0]), len(times), t.ttft, t.decode_tokens_per_s


def served_httpx(http: object, url: str, body: dict) -> tuple[float, float, int, float, float]:
    """(TTFT s, tokens/s after the first, chunks; the engine's own TTFT and tokens/s in the server) of one
    streamed request, clocked at the client."""
    times: list[float] = []
    stats: dict = {}
    t0 = time.perf_counter()
    with http.stream("POST", f"{url}/chat/completions", json=body) as response:  # type: ignore[attr-defined]
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                times.append(time.perf_counter())
            elif '"stats":' in line:
                stats = json.loads(line[len("data: "):])["stats"]
    return (times[0] - t0, (len(times) - 1) / (times[-1] - times[0]), len(times), stats["time_to_first_token"],
            stats["tokens_per_second"])


def served_openai(client: object, body: dict) -> tuple[float, float, int, float, float]:
    times: list[float] = []
    stats: dict = {}
    t0 = time.perf_counter()
    extra = {"ignore_eos": body["ignore_eos"], "hint_max_new_tokens": body["hint_max_new_tokens"]}
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model=body["model"], messages=body["messages"], max_tokens=body["max_tokens"], temperature=0, stream=True,
        extra_body=extra)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        if getattr(chunk, "stats", None):
            stats = chunk.stats
    return (times[0] - t0, (len(times) - 1) / (times[-1] - times[0]), len(times), stats["time_to_first_token"],
            stats["tokens_per_second"])


def client_worker(url: str, client_kind: str) -> int:
    """The client, in a process of its own as a real client is: one JSON request body a line on stdin, one line
    of [TTFT, tokens/s, chunks] on stdout."""
    import httpx
    from openai import OpenAI

    with httpx.Client(timeout=300) as http, OpenAI(base_url=url, api_key="none", max_retries=0) as client:
        for line in sys.stdin:
            body = json.loads(line)
            got = served_httpx(http, url, body) if client_kind == "httpx" else served_openai(client, body)
            print(json.dumps(got), flush=True)
    return 0


def thread_cpu(native_id: int) -> float:
    """Seconds of CPU a thread of this process has used (Linux: /proc), whatever else loads the machine."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_threads() -> tuple[int, int]:
    """The native ids of the server's event-loop thread and of its models' thread."""
    names = {t.name: t.native_id for t in threading.enumerate()}
    return names["c2c-serve"], next(v for k, v in names.items() if k.startswith("c2c-serve-models"))


def measure(mode: Mode, rounds: int, tokens: int, client: "subprocess.Popen[str]", client_kind: str,
            engine: Engine) -> dict:
    settings = GenerationSettings(max_new_tokens=tokens, hint_max_new_tokens=32, ignore_eos=True)
    body = {"model": f"demo/{mode.value}", "messages": QUESTION, "max_tokens": tokens, "temperature": 0,
            "hint_max_new_tokens": 32, "ignore_eos": True, "stream": True}
    rows: dict[str, list[tuple[float, ...]]] = {"in_process": [], "served": []}
    cpu = {"in_process": 0.0, "server_loop": 0.0, "served_models": 0.0}  # CPU seconds of the counted rounds
    for round_ in range(rounds + 1):  # the first round warms both paths up and is not counted
        before = time.thread_time()
        a = in_process(engine, mode, settings)
        in_process_cpu = time.thread_time() - before
        loop_thread, models_thread = server_threads() if round_ else (0, 0)
        before_loop, before_models = (thread_cpu(loop_thread), thread_cpu(models_thread)) if round_ else (0, 0)
        client.stdin.write(json.dumps(body) + "\n")
        client.stdin.flush()
        b = tuple(json.loads(client.stdout.readline()))
        if round_:
            rows["in_process"].append(a)
            rows["served"].append(b)
            cpu["in_process"] += in_process_cpu
            cpu["server_loop"] += thread_cpu(loop_thread) - before_loop
            cpu["served_models"] += thread_cpu(models_thread) - before_models
    counts = {r[2] for rs in rows.values() for r in rs}
    assert len(counts) == 1, f"in-process and served answers differ in length: {counts}"
    ttft = {k: statistics.median(r[0] for r in v) for k, v in rows.items()}
    rate = {k: statistics.median(r[1] for r in v) for k, v in rows.items()}
    overhead = statistics.median(b[0] - a[0] for a, b in zip(rows["in_process"], rows["served"]))
    engine_ttft = {k: statistics.median(r[3] for r in v) for k, v in rows.items()}
    engine_rate = {k: statistics.median(r[4] for r in v) for k, v in rows.items()}
    # what the server adds around an answer: the client's TTFT less the engine's own, served minus in-process
    around = statistics.median((b[0] - b[3]) - (a[0] - a[3]) for a, b in zip(rows["in_process"], rows["served"]))
    return {"mode": mode.value, "rounds": rounds, "tokens": tokens, "text_chunks": counts.pop(), "client": client_kind,
            "ttft_in_process_ms": ttft["in_process"] * 1e3, "ttft_served_ms": ttft["served"] * 1e3,
            "ttft_overhead_ms": overhead * 1e3, "tokens_per_s_in_process": rate["in_process"],
            "tokens_per_s_served": rate["served"], "tokens_per_s_ratio": rate["served"] / rate["in_process"],
            "engine_ttft_in_process_ms": engine_ttft["in_process"] * 1e3, "engine_ttft_served_ms":
            engine_ttft["served"] * 1e3, "ttft_overhead_around_engine_ms": around * 1e3,
            "engine_tokens_per_s_in_process": engine_rate["in_process"],
            "engine_tokens_per_s_served": engine_rate["served"],
            # CPU time per answer token, which the machine's load does not change: the server's own work (its
            # event loop's thread), and the answer's on the models' thread served and in-process
            "cpu_us_per_token_server_loop": cpu["server_loop"] / (rounds * tokens) * 1e6,
            "cpu_us_per_token_models_served": cpu["served_models"] / (rounds * tokens) * 1e6,
            "cpu_us_per_token_in_process": cpu["in_process"] / (rounds * tokens) * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="fusion,relay", help="answer modes, comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128, help="answer tokens per request (EOS ignored)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's models gain nothing "
                        "from more, and the server's thread needs a core too)")
    parser.add_argument("--client", choices=("httpx", "openai"), default="httpx")
    parser.add_argument("--json", action="store_true", help="one JSON object per mode")
    parser.add_argument("--client-worker", metavar="URL", help=argparse.SUPPRESS)  # the client process
    args = parser.parse_args()
    if args.client_worker:
        return client_worker(args.client_worker, args.client)

    import torch

    from fusers.demo import pair_paths
    from fusers.engine import warm_up
    from fusers.pair import ModelSpec, load_pair
    from fusers.serve.server import ApiServer

    torch.set_num_threads(args.threads)
    receiver, sharer, fuser = pair_paths()
    pair = load_pair(ModelSpec(str(receiver), "cpu"), ModelSpec(str(sharer), "cpu"), fuser)
    warm_up(pair)
    engine = Engine(pair)
    server = ApiServer(Engine(pair), "demo", port=0).start()
    client = subprocess.Popen([sys.executable, __file__, "--client-worker", server.url, "--client", args.client],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        results = [measure(Mode(m.strip()), args.rounds, args.tokens, client, args.client, engine)
                   for m in args.modes.split(",") if m.strip()]
    finally:
        client.stdin.close()
        client.wait(60)
        server.close()
        server.join(30)
    load = os.getloadavg()
    for r in results:
        r["load_average"] = load
        if args.json:
            print(json.dumps(r))
            continue
        ok_ttft = "ok" if r["ttft_overhead_ms"] <= TTFT_GOAL_MS else "MISSED"
        ok_rate = "ok" if r["tokens_per_s_ratio"] >= RATE_GOAL else "MISSED"
        print(f"{r['mode']:>8}: TTFT {r['ttft_in_process_ms']:.1f} ms in-process, {r['ttft_served_ms']:.1f} ms "
              f"served: overhead {r['ttft_overhead_ms']:+.2f} ms (goal <= {TTFT_GOAL_MS:g}: {ok_ttft}) | "
              f"{r['tokens_per_s_in_process']:.0f} vs {r['tokens_per_s_served']:.0f} tokens/s: "
              f"{r['tokens_per_s_ratio']:.3f}x (goal >= {RATE_GOAL}: {ok_rate})")
        print(f"{'':>8}  the engine's own record: TTFT {r['engine_ttft_in_process_ms']:.1f} vs "
              f"{r['engine_ttft_served_ms']:.1f} ms, {r['engine_tokens_per_s_in_process']:.0f} vs "
              f"{r['engine_tokens_per_s_served']:.0f} tokens/s; TTFT the server adds around the engine's "
              f"{r['ttft_overhead_around_engine_ms']:+.2f} ms")
        print(f"{'':>8}  CPU per answer token: the server's event loop {r['cpu_us_per_token_server_loop']:.0f} us; "
              f"the answer {r['cpu_us_per_token_models_served']:.0f} us served, "
              f"{r['cpu_us_per_token_in_process']:.0f} us in-process")
    if not args.json:
        print(f"{args.rounds} rounds of {args.tokens} tokens, client {args.client}, torch threads {args.threads}, "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
