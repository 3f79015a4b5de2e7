"""Live at any answer length: the engine's cost per streamed token, and one token-diff update.

    python benchmarks/streaming.py [--json] [--lengths 100,1000,4000] [--rounds 2]

On the tiny pair of ``benchmarks/modes.py`` (a 128-token prompt, EOS ignored), for answers of
each length:

- **per-token streaming overhead**: the engine's work for each streamed token beyond the
  model's own step (turning the id into text, the timing record, the token event), timed
  inside the streamer that ``generate`` calls once per token, so the model's step is outside
  the clock by construction. Reported with the incremental decoder the engine uses
  (``DecodeStream``) and, as the baseline in the same run, with the decode-everything-again
  fallback that tokenizers without a stream get;
- **one diff update**: ``fusers.diff.align`` + ``summarize`` between the receiver's and the
  cache fusion's answers of that length, and between two unrelated answers of that length
  (nothing in common: the worst case). Time (median of rounds) and peak memory (the larger of
  Python's traced peak and the process's resident high-water mark, reset first).

Goals: overhead at the longest length / at the shortest <= 1.2; a diff update of two 4,000-token
answers <= 20 ms and <= 20 MiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modes import PROMPT_TOKENS, build_setup  # noqa: E402

from fusers import generation  # noqa: E402
from fusers.diff import align, summarize  # noqa: E402
from fusers.engine import Engine, Mode  # noqa: E402
from fusers.generation import GenerationSettings  # noqa: E402


class _TimedStreamer(generation._TokenStreamer):
    """The engine's streamer with a clock around each token's handling."""

    seconds: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        t0 = time.perf_counter()
        super().put(value)
        _TimedStreamer.seconds.append(time.perf_counter() - t0)


def streaming_overhead(engine: Engine, messages, length: int, incremental: bool) -> tuple[float, list[int]]:
    """Mean seconds of engine work per streamed token over an answer of ``length`` tokens."""
    settings = GenerationSettings(max_new_tokens=length, ignore_eos=True)
    original_init = generation.Detokenizer.__init__

    def fallback_init(self, tokenizer):
        original_init(self, tokenizer)
        self._stream = None

    generation._TokenStreamer, plain = _TimedStreamer, generation._TokenStreamer
    if not incremental:
        generation.Detokenizer.__init__ = fallback_init
    _TimedStreamer.seconds = []
    events: list = []
    try:
        answer = engine.answer(Mode.RECEIVER, messages, settings, on_event=events.append)
    finally:
        generation._TokenStreamer = plain
        generation.Detokenizer.__init__ = original_init
    per_token = _TimedStreamer.seconds[1:]  # the first put is the prompt
    assert len(answer.token_ids) == length == len(per_token), (len(answer.token_ids), len(per_token))
    return statistics.fmean(per_token), answer.token_ids


def _reset_peak_rss() -> int:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the resident high-water mark
    except OSError:
        pass
    return _rss("VmHWM")


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def diff_update(a: list[int], b: list[int], rounds: int) -> dict:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        summarize(align(a, b))
        times.append(time.perf_counter() - t0)
    base = _reset_peak_rss()  # the high-water mark now: the resident size before the update
    tracemalloc.start()
    ops = align(a, b)
    summary = summarize(ops)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    resident = max(0, _rss("VmHWM") - base)
    del ops
    return {"ms": 1000 * statistics.median(times), "peak_mib": max(traced, resident) / 2**20,
            "traced_mib": traced / 2**20, "resident_mib": resident / 2**20,
            "equal": summary.equal, "changed": summary.changed + summary.inserted + summary.deleted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="100,1000,4000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    pair, messages = build_setup("tiny", torch.float32, context=PROMPT_TOKENS + max(lengths) + 8)
    engine = Engine(pair)
    engine.answer(Mode.RECEIVER, messages, GenerationSettings(max_new_tokens=4))  # warm-up
    fused = {}
    rows = []
    for n in lengths:
        streamed = [streaming_overhead(engine, messages, n, True) for _ in range(args.rounds)]
        stream, receiver_ids = min(s for s, _ in streamed), streamed[0][1]
        full = min(streaming_overhead(engine, messages, n, False)[0] for _ in range(args.rounds))
        fused[n] = engine.answer(Mode.FUSION, messages, GenerationSettings(max_new_tokens=n,
                                                                            ignore_eos=True)).token_ids
        gen = torch.Generator().manual_seed(n)
        vocab = len(pair.receiver.tokenizer)
        x, y = (torch.randint(10, vocab, (n,), generator=gen).tolist() for _ in range(2))
        rows.append({
            "tokens": n, "overhead_us": 1e6 * stream, "fallback_overhead_us": 1e6 * full,
            "diff_answers": diff_update(receiver_ids, fused[n], max(3, args.rounds)),
            "diff_unrelated": diff_update(x, y, max(3, args.rounds)),
        })
    first, last = rows[0], rows[-1]
    result = {
        "prompt_tokens": PROMPT_TOKENS, "rows": rows,
        "overhead_ratio": last["overhead_us"] / first["overhead_us"],
        "fallback_overhead_ratio": last["fallback_overhead_us"] / first["fallback_overhead_us"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"| answer tokens | engine us/token (DecodeStream) | us/token (decode-all fallback) | diff of the two "
          f"modes' answers: ms, MiB | diff of unrelated answers: ms, MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        a, u = r["diff_answers"], r["diff_unrelated"]
        print(f"| {r['tokens']} | {r['overhead_us']:.1f} | {r['fallback_overhead_us']:.1f} | "
              f"{a['ms']:.2f}, {a['peak_mib']:.2f} | {u['ms']:.2f}, {u['peak_mib']:.2f} |")
    print(f"\noverhead at {last['tokens']} / at {first['tokens']}: {result['overhead_ratio']:.2f} (goal <= 1.2); "
          f"decode-all fallback: {result['fallback_overhead_ratio']:.2f}")


if __name__ == "__main__":
    main()
