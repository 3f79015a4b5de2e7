"""Cache fusion against its floor, text relay, relay + fusion and receiver alone.

    python benchmarks/modes.py [--json] [--setups tiny,qwen] [--dtypes float32,bfloat16] [--rounds 3]
                               [--device cpu|cuda] [--variants]

Two set-ups: a tiny pair, and the real Qwen3-0.6B receiver / Qwen2.5-0.5B-Instruct sharer
architectures (configs below) with random weights, a 128-token prompt, 64 new tokens with EOS
ignored, and 28 published-shape fusers (hidden 1024, intermediate 1024, 3 layers, gates open).
Text relay runs as the reference does it: the sharer writes a 64-token hint (and, reported too,
a 256-token hint), then the receiver answers 64 tokens. Relay + fusion writes the same 64-token hint, then
both models prefill relay's answer prompt and the fused receiver answers 64 tokens: its cost over text relay
is the sharer's second prefill and the fuse.

Every mode runs through fusers.engine.Engine, as the app and `c2c compare` run it. Rounds are
interleaved and medians reported. The floor is what cache fusion cannot avoid: receiver time
plus the sharer's prefill plus the fusers' forward pass. The sharer's prefill is measured as a
user would call it: a plain forward over the prompt without its last token, with cache and all
logits.

``--variants`` also runs cache fusion with its prefills one after the other and at the same time
(``Engine(prefills=...)``; at the same time is what a GPU does by default), and with the fusers' paths
one after another (``Fuser.paths_per_pass = 1``) and batched (the default), and reports each one's
TTFT, total and fuse phase. ``--device cuda`` builds the models on the GPU.

``--decode compiled,graphs,generate`` runs each set-up once per way of decoding: each model's decode step
compiled (torch.compile) and captured in a CUDA graph on a static cache, its prefills captured per padded length
and the fuser's pass captured over the static caches (``Pair.prepare_decoding``, what loading does on a GPU;
elsewhere it falls back and says so); the same without compiling; and transformers' generate. Each run also reports what the capture cost, the first answer after the load
(the load's own warm-up done, as the app does) over later ones, and the receiver's TTFT over a plain forward's
(the prompt through the model and an argmax, no engine around it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusers import tiny  # noqa: E402
from fusers.chat import encode, user  # noqa: E402
from fusers.devices import synchronize  # noqa: E402
from fusers.engine import Engine, Mode, warm_up  # noqa: E402
from fusers.fuser import Fuser, FuserInfo, ModelShape  # noqa: E402
from fusers.generation import GenerationSettings, new_cache, prefill  # noqa: E402
from fusers.layer_map import build_layer_map  # noqa: E402
from fusers.libraries import cache_kwargs  # noqa: E402
from fusers.pair import LoadedModel, Pair  # noqa: E402
from fusers.projector import C2CProjector, ProjectorConfig  # noqa: E402

PROMPT_TOKENS = 128
NEW_TOKENS = 64

# Written out from the published configs of Qwen/Qwen3-0.6B and Qwen/Qwen2.5-0.5B-Instruct.
QWEN3_0_6B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)
QWEN2_5_0_5B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)
PUBLISHED_FUSER = dict(hidden_dim=1024, intermediate_dim=1024, num_layers=3, dropout=0.0)


def build_setup(name: str, dtype: torch.dtype, context: int = 1024,
                device: torch.device = torch.device("cpu")) -> tuple[Pair, list[dict[str, str]]]:
    from transformers import Qwen2Config, Qwen3Config

    if name == "qwen":
        tok = tiny.word_tokenizer(QWEN3_0_6B["vocab_size"])
        ids = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id)
        rcfg, scfg = Qwen3Config(**QWEN3_0_6B, **ids), Qwen2Config(**QWEN2_5_0_5B, **ids)
        fuser_dims = PUBLISHED_FUSER
    else:
        tok = tiny.word_tokenizer(2000)
        rcfg = tiny.tiny_config("qwen3", len(tok), layers=4, hidden_size=128, heads=4, kv_heads=2, head_dim=32,
                                intermediate_size=256, max_position_embeddings=context, tokenizer=tok)
        scfg = tiny.tiny_config("qwen2", len(tok), layers=3, hidden_size=96, heads=4, kv_heads=1,
                                intermediate_size=192, max_position_embeddings=context, tokenizer=tok)
        fuser_dims = dict(hidden_dim=64, intermediate_dim=64, num_layers=3, dropout=0.0)
    with device:  # random weights made where they run: no host copy of the Qwen shapes
        receiver = tiny.build_model(rcfg, seed=1).to(dtype)
        sharer = tiny.build_model(scfg, seed=2).to(dtype)
    r, s = ModelShape.of(rcfg), ModelShape.of(scfg)
    pcfg = ProjectorConfig(source_dim=s.head_dim, target_dim=r.head_dim, source_num_heads=s.kv_heads,
                           target_num_heads=r.kv_heads, **fuser_dims)
    torch.manual_seed(3)
    projectors = []
    for _ in range(r.layers):
        proj = C2CProjector(pcfg)
        with torch.no_grad():
            proj.key_gate_logit.fill_(1.0)
            proj.value_gate_logit.fill_(1.0)
        projectors.append(proj)
    info = FuserInfo(receiver=f"{name}-receiver", sharer=f"{name}-sharer", receiver_layers=r.layers,
                     sharer_layers=s.layers)
    fuser = Fuser(projectors, build_layer_map("last_aligned", r.layers, s.layers), info).to(device, dtype).eval()
    pair = Pair(LoadedModel.from_model(receiver, tok, "receiver", f"{name}-receiver", device, dtype),
                LoadedModel.from_model(sharer, tok, "sharer", f"{name}-sharer", device, dtype), fuser)
    # a user message whose rendered prompt is exactly PROMPT_TOKENS tokens
    overhead = len(encode(tok, user("w10"))) - 1
    gen = torch.Generator().manual_seed(0)
    words = torch.randint(10, len(tok), (PROMPT_TOKENS - overhead,), generator=gen).tolist()
    messages = user(" ".join(f"w{i}" for i in words))
    assert len(encode(tok, messages)) == PROMPT_TOKENS
    return pair, messages


@torch.inference_mode()
def time_sharer_prefill(pair: Pair, messages) -> float:
    """A plain forward over the prompt without its last token, with cache and all logits."""
    model = pair.sharer.model
    ids = torch.tensor([encode(pair.receiver.tokenizer, messages)[:-1]], device=pair.sharer.device)
    synchronize(pair.sharer.device)
    t0 = time.perf_counter()
    model(input_ids=ids, use_cache=True, **cache_kwargs(model, new_cache(model)))
    synchronize(pair.sharer.device)
    return time.perf_counter() - t0


@torch.inference_mode()
def time_plain_forward_ttft(pair: Pair, messages) -> float:
    """The first token with no engine around it: the whole prompt through the receiver, then an argmax."""
    model = pair.receiver.model
    ids = torch.tensor([encode(pair.receiver.tokenizer, messages)], device=pair.receiver.device)
    synchronize(pair.receiver.device)
    t0 = time.perf_counter()
    int(model(input_ids=ids, use_cache=True, **cache_kwargs(model, new_cache(model))).logits[0, -1].argmax())
    return time.perf_counter() - t0


def time_fuser_forward(pair: Pair, caches) -> float:
    import copy

    receiver_cache = copy.deepcopy(caches[0])  # fusing works in place: every round starts from the prefill
    sharer_cache = caches[1]
    synchronize(pair.receiver.device)
    t0 = time.perf_counter()
    pair.fuser.fuse_cache(receiver_cache, sharer_cache)
    synchronize(pair.receiver.device)
    return time.perf_counter() - t0


def run_variants(pair: Pair, messages, settings: GenerationSettings, rounds: int) -> dict:
    """Cache fusion with its prefills one after the other or at once, and its fusers' paths one after another
    or batched: medians of TTFT, total and the fuse phase, interleaved."""
    combos = [(prefills, passes) for prefills in ("sequential", "overlap") for passes in ("per_path", "batched")]
    engines = {prefills: Engine(pair, prefills=prefills) for prefills, _ in combos}
    timings: dict[str, list] = {f"{p}+{f}": [] for p, f in combos}
    for prefills, passes in combos:  # warm-up of each: the batched pass packs its weights on its first call
        pair.fuser.paths_per_pass = 1 if passes == "per_path" else None
        engines[prefills].answer(Mode.FUSION, messages, GenerationSettings(max_new_tokens=2))
    for _ in range(rounds):
        for prefills, passes in combos:
            pair.fuser.paths_per_pass = 1 if passes == "per_path" else None
            timings[f"{prefills}+{passes}"].append(engines[prefills].answer(Mode.FUSION, messages, settings).timing)
    pair.fuser.paths_per_pass = None
    return {key: {field: statistics.median(getattr(t, field) for t in ts)
                  for field in ("ttft", "total", "fuse", "sharer_prefill", "receiver_prefill")}
            for key, ts in timings.items()}


def run_setup(name: str, dtype_name: str, rounds: int, long_hint: bool, device: torch.device = torch.device("cpu"),
              variants: bool = False, decode: str = "generate") -> dict:
    dtype = getattr(torch, dtype_name)
    pair, messages = build_setup(name, dtype, device=device)
    t0 = time.perf_counter()
    paths = pair.prepare_decoding(cuda_graphs=decode != "generate", compile=decode == "compiled")  # as loading
    capture_s = time.perf_counter() - t0
    engine = Engine(pair)
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, hint_max_new_tokens=NEW_TOKENS, ignore_eos=True)
    long = GenerationSettings(max_new_tokens=NEW_TOKENS, hint_max_new_tokens=256, ignore_eos=True)

    ids = torch.tensor([encode(pair.receiver.tokenizer, messages)[:-1]], device=device)
    caches = (prefill(pair.receiver.model, ids), prefill(pair.sharer.model, ids))
    warm_up(pair)  # the load's last step: a few tokens in each mode
    first = engine.answer(Mode.FUSION, messages, settings).timing  # the first answer after the load
    time_plain_forward_ttft(pair, messages)  # its own first call
    runs: dict[str, list] = {k: [] for k in ("receiver", "relay", "fusion", "hybrid", "relay_256", "sharer_prefill",
                                            "fuser_forward", "plain_forward_ttft")}
    for _ in range(rounds):  # interleaved, so drift in the machine's speed hits every measure alike
        runs["receiver"].append(engine.answer(Mode.RECEIVER, messages, settings).timing)
        runs["relay"].append(engine.answer(Mode.RELAY, messages, settings).timing)
        runs["fusion"].append(engine.answer(Mode.FUSION, messages, settings).timing)
        runs["hybrid"].append(engine.answer(Mode.HYBRID, messages, settings).timing)
        runs["sharer_prefill"].append(time_sharer_prefill(pair, messages))
        runs["fuser_forward"].append(time_fuser_forward(pair, caches))
        runs["plain_forward_ttft"].append(time_plain_forward_ttft(pair, messages))
        if long_hint:
            runs["relay_256"].append(engine.answer(Mode.RELAY, messages, long).timing)

    def med(key, field=None):
        values = runs[key] if field is None else [getattr(t, field) for t in runs[key]]
        return statistics.median(values) if values else None

    out = {
        "setup": name,
        "decode": decode,
        "decode_paths": [p.describe() for p in paths],
        "capture_s": capture_s,
        "device": str(pair.receiver.device),
        "dtype": dtype_name,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "receiver_total_s": med("receiver", "total"),
        "receiver_ttft_s": med("receiver", "ttft"),
        "receiver_decode_tok_s": med("receiver", "decode_tokens_per_s"),
        "relay_total_s": med("relay", "total"),
        "relay_ttft_s": med("relay", "ttft"),
        "relay_256_total_s": med("relay_256", "total"),
        "fusion_total_s": med("fusion", "total"),
        "fusion_ttft_s": med("fusion", "ttft"),
        "fusion_decode_tok_s": med("fusion", "decode_tokens_per_s"),
        "fusion_sharer_prefill_s": med("fusion", "sharer_prefill"),
        "fusion_fuse_s": med("fusion", "fuse"),
        "hybrid_total_s": med("hybrid", "total"),
        "hybrid_ttft_s": med("hybrid", "ttft"),
        "hybrid_fuse_s": med("hybrid", "fuse"),
        "sharer_prefill_s": med("sharer_prefill"),
        "fuser_forward_s": med("fuser_forward"),
        "plain_forward_ttft_s": med("plain_forward_ttft"),
        "first_fusion_total_s": first.total,
        "first_fusion_ttft_s": first.ttft,
        "fuser_parameters": pair.fuser.parameter_count(),
        "fusion_prefills": "overlapped" if engine.overlaps_prefills() else "sequential",
        # the last fusion run's peak per device (CUDA max allocated; the process's peak RSS for the CPU)
        "fusion_peak_memory_by_device": runs["fusion"][-1].peak_memory_by_device,
    }
    extra = out["sharer_prefill_s"] + out["fuser_forward_s"]
    out["fusion_ttft_over_floor"] = (out["fusion_ttft_s"] - out["receiver_ttft_s"]) / extra
    out["fusion_total_over_floor"] = out["fusion_total_s"] / (out["receiver_total_s"] + extra)
    out["fused_decode_speed_ratio"] = out["fusion_decode_tok_s"] / out["receiver_decode_tok_s"]
    out["relay_over_fusion_total"] = out["relay_total_s"] / out["fusion_total_s"]
    out["fusion_total_over_relay_total"] = out["fusion_total_s"] / out["relay_total_s"]
    out["hybrid_total_over_relay_total"] = out["hybrid_total_s"] / out["relay_total_s"]  # the goal: <= 1.15
    out["receiver_ttft_over_plain_forward"] = out["receiver_ttft_s"] / out["plain_forward_ttft_s"]
    out["first_over_later_fusion_total"] = out["first_fusion_total_s"] / out["fusion_total_s"]
    if out["relay_256_total_s"] is not None:
        out["relay_256_over_fusion_total"] = out["relay_256_total_s"] / out["fusion_total_s"]
    if variants:
        out["variants"] = run_variants(pair, messages, settings, rounds)
        v = out["variants"]
        out["overlapped_over_sequential_ttft"] = v["overlap+batched"]["ttft"] / v["sequential+batched"]["ttft"]
        out["batched_over_per_path_fuse"] = v["sequential+batched"]["fuse"] / v["sequential+per_path"]["fuse"]
    pair.close()
    return out


def print_table(results: list[dict]) -> None:
    rows = [
        ("receiver total", "receiver_total_s", "s"), ("receiver TTFT", "receiver_ttft_s", "s"),
        ("relay total (64-token hint)", "relay_total_s", "s"), ("relay total (256-token hint)", "relay_256_total_s", "s"),
        ("fusion total", "fusion_total_s", "s"), ("fusion TTFT", "fusion_ttft_s", "s"),
        ("relay + fusion total", "hybrid_total_s", "s"), ("relay + fusion TTFT", "hybrid_ttft_s", "s"),
        ("sharer prefill", "sharer_prefill_s", "s"), ("fuser forward", "fuser_forward_s", "s"),
        ("receiver decode", "receiver_decode_tok_s", "tok/s"), ("fused decode", "fusion_decode_tok_s", "tok/s"),
        ("fusion_ttft_over_floor", "fusion_ttft_over_floor", ""), ("fusion_total_over_floor", "fusion_total_over_floor", ""),
        ("fused_decode_speed_ratio", "fused_decode_speed_ratio", ""), ("relay_over_fusion_total", "relay_over_fusion_total", ""),
        ("relay_256_over_fusion_total", "relay_256_over_fusion_total", ""),
        ("hybrid_total_over_relay_total", "hybrid_total_over_relay_total", ""),
        ("overlapped_over_sequential_ttft", "overlapped_over_sequential_ttft", ""),
        ("batched_over_per_path_fuse", "batched_over_per_path_fuse", ""),
        ("receiver_ttft_over_plain_forward", "receiver_ttft_over_plain_forward", ""),
        ("first_over_later_fusion_total", "first_over_later_fusion_total", ""),
        ("capture (s)", "capture_s", "s"),
    ]
    head = "| measure | " + " | ".join(f"{r['setup']} {r['dtype']} {r['decode']}" for r in results) + " |"
    print(head)
    print("|---|" + "---|" * len(results))
    for label, key, unit in rows:
        cells = []
        for r in results:
            v = r.get(key)
            cells.append("-" if v is None else (f"{v:.3f} {unit}".strip() if unit != "tok/s" else f"{v:.1f} tok/s"))
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="tiny,qwen")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-long-hint", action="store_true", help="skip the 256-token hint relay")
    parser.add_argument("--json", action="store_true", help="print one JSON object per set-up and dtype")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the models are built and run")
    parser.add_argument("--variants", action="store_true",
                        help="also cache fusion with sequential / overlapped prefills and per-path / batched fusers")
    parser.add_argument("--decode", default="generate",
                        help="comma-separated: compiled (static caches, compiled steps in CUDA graphs, where a GPU "
                             "allows), graphs (the same, not compiled), generate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fusers.devices import resolve_device

    device = resolve_device(args.device)
    from fusers.libraries import quiet_libraries

    quiet_libraries()
    results = []
    for setup in args.setups.split(","):
        for dtype in args.dtypes.split(","):
            for decode in args.decode.split(","):
                result = run_setup(setup, dtype, args.rounds, not args.no_long_hint, device, args.variants, decode)
                results.append(result)
                if args.json:
                    print(json.dumps(result), flush=True)
                else:
                    print(f"done: {setup} {dtype} {decode}: {json.dumps(result)}", file=sys.stderr, flush=True)
    if not args.json:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
