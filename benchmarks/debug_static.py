"""Diagnosis on a GPU: static prefill and in-place fusion against the dynamic path (tiny pair, float32)."""
import os, sys, time, copy
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from fusers import tiny
from fusers.chat import encode, user
from fusers.engine import Engine, Mode
from fusers.generation import GenerationSettings, prefill
from fusers.pair import LoadedModel, Pair, load_pair, ModelSpec
from fusers.static_decode import StaticDecoder
import fusers.static_decode as sd

dev = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
GPU = dev.type == "cuda"
tok = tiny.bpe_tokenizer(400)
import tempfile
root = Path(tempfile.mkdtemp())
r_dir = tiny.save_model(root / "r", "qwen3", tok, seed=1, layers=3, hidden_size=48, heads=4, kv_heads=2, head_dim=12)
s_dir = tiny.save_model(root / "s", "llama", tok, seed=2, layers=2, hidden_size=64, heads=4, kv_heads=2)

def kvdiff(static, dyn, n):
    out = []
    for sl, dl in zip(static.cache.layers, dyn.layers):
        out.append((float((sl.keys[:, :, :n] - dl.keys).abs().max()), float((sl.values[:, :, :n] - dl.values).abs().max())))
    return out

def one(label, pool_shared=True, graphs=True):
    pair = load_pair(ModelSpec(str(r_dir), str(dev), "float32"), ModelSpec(str(s_dir), str(dev), "float32"),
                     cuda_graphs=False)
    m = pair.receiver.model
    orig = StaticDecoder._captured
    if not pool_shared:
        def _captured(self, run, warm_ups, before=lambda: None):
            pool, self.pool = self.pool, None
            try:
                return orig(self, run, warm_ups, before)
            finally:
                self.pool = pool
        StaticDecoder._captured = _captured
    try:
        dec = StaticDecoder(m, 512, graphs=graphs and GPU, buckets=(64, 128, 256))
        dec.prepare_prefills(3)
    finally:
        StaticDecoder._captured = orig
    for n in (20, 63, 64, 100, 200):
        ids = torch.randint(5, 390, (1, n), device=dev, generator=torch.Generator(device=dev).manual_seed(n))
        dyn = prefill(m, ids)
        p = dec.prefill(ids)
        d = kvdiff(dec, dyn, n)
        p.release()
        print(label, "n", n, "max |dK|, |dV| per layer", [(f"{a:.1e}", f"{b:.1e}") for a, b in d], flush=True)
    # decode: tokens vs generate
    dataclasses = __import__("dataclasses")
    rec = dataclasses.replace(pair.receiver, decoder=dec)
    static_pair = Pair(rec, pair.sharer)
    settings = GenerationSettings(max_new_tokens=40, ignore_eos=True)
    for words in (3, 12, 30):
        msgs = user(" ".join(["tell me about the fox and the river"] * words))
        a = Engine(static_pair).answer(Mode.RECEIVER, msgs, settings)
        b = Engine(pair).answer(Mode.RECEIVER, msgs, settings)
        first = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
        print(label, "prompt", a.timing.tokens_in, "path", a.timing.decode_path, "first diff at", first, flush=True)

if len(sys.argv) == 1:
    t0 = time.time()
    one("shared-pool")
    one("own-pools", pool_shared=False)
    one("no-graphs", graphs=False)
    print("done", time.time() - t0)


def qwen(compile_: bool):
    from benchmarks.modes import build_setup, NEW_TOKENS
    pair, messages = build_setup("qwen", torch.bfloat16, device=dev)
    t = time.time()
    paths = pair.prepare_decoding(cuda_graphs=True, compile=compile_)
    print("qwen compile" if compile_ else "qwen graphs", "prepared in", round(time.time() - t, 1), [p.describe() for p in paths], flush=True)
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, hint_max_new_tokens=NEW_TOKENS, ignore_eos=True)
    engine = Engine(pair)
    for mode in (Mode.RECEIVER, Mode.SHARER, Mode.FUSION, Mode.RELAY, Mode.HYBRID, Mode.RELAY, Mode.FUSION):
        a = engine.answer(mode, messages, settings)
        torch.cuda.synchronize()
        print(mode.value, "tokens_in", a.timing.tokens_in, "ttft", round(a.timing.ttft * 1000, 1), "ms total",
              round(a.timing.total, 3), "tok/s", round(a.timing.decode_tokens_per_s or 0), a.timing.decode_path, flush=True)


if __name__ == "__main__" and len(sys.argv) > 1:
    qwen(sys.argv[1] == "compile")
