"""Where a decoded token's time goes on the CUDA-graph path (fusers.static_decode): the graph alone, the graph with
the host reading each token, the decoder's whole loop (processors, sampling, the read), and the engine's answer
(timing, detokenizing, events). Qwen3-0.6B shapes, random weights, bfloat16.

    python benchmarks/decode_breakdown.py [--device cuda] [--tokens 64] [--setup qwen|tiny]

Prints one JSON object: milliseconds per token for each level, so the overhead of each layer over the one under
it is the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modes import build_setup  # noqa: E402

from fusers.chat import encode  # noqa: E402
from fusers.devices import synchronize  # noqa: E402
from fusers.engine import Engine, Mode, warm_up  # noqa: E402
from fusers.generation import GenerationSettings, prefill  # noqa: E402


def per_token(fn, n: int, device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--setup", default="qwen")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--cache-lengths", type=lambda t: [int(x) for x in t.split(",")], default=[256, 1024],
                        help="also time the captured step on static caches of these lengths")
    args = parser.parse_args()
    device = torch.device(args.device)
    pair, messages = build_setup(args.setup, torch.bfloat16, device=device)
    paths = pair.prepare_decoding()
    warm_up(pair)
    decoder, n = pair.receiver.decoder, args.tokens
    out: dict = {"decode_paths": [p.describe() for p in paths], "tokens": n}
    ids = encode(pair.receiver.tokenizer, messages)
    if decoder is not None and decoder.graph is not None:
        out["graph_replay_ms"] = per_token(lambda: [decoder.graph.replay() for _ in range(n)], n, device)
        out["graph_replay_and_read_ms"] = per_token(
            lambda: [(decoder.graph.replay(), int(decoder.logits[0, 0])) for _ in range(n)], n, device)

    if decoder is not None and decoder.graph is not None:  # the same step on static caches of other lengths
        from fusers.static_decode import StaticDecoder

        for tokens in args.cache_lengths:
            other = StaticDecoder(pair.receiver.model, tokens, graphs=True)
            out[f"graph_replay_ms_at_{tokens}"] = per_token(lambda: [other.graph.replay() for _ in range(n)], n, device)
            del other

    from transformers import GenerationConfig

    prompt = torch.tensor([ids], device=device)
    cache = prefill(pair.receiver.model, prompt[:, :-1])
    config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=[], pad_token_id=0,
                              temperature=None, top_p=None, top_k=None)
    if decoder is not None:
        out["decoder_loop_ms"] = per_token(lambda: decoder.decode(prompt, cache, config, lambda t: None, lambda: False),
                                           n, device)
    settings = GenerationSettings(max_new_tokens=n, ignore_eos=True)
    engine = Engine(pair)
    answers = [engine.answer(Mode.RECEIVER, messages, settings) for _ in range(3)]
    out["engine_decode_ms"] = min(1000 / a.timing.decode_tokens_per_s for a in answers)
    out["engine_ttft_ms"] = min(a.timing.ttft * 1000 for a in answers)
    out["engine_receiver_prefill_ms"] = min(a.timing.receiver_prefill * 1000 for a in answers)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
