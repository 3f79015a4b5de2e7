"""Decoding on a static cache, each token one replayed CUDA graph (gpt-fast's recipe), for every answer mode.

``generate`` on a dynamic cache launches each kernel of each layer from Python for every token: on a GPU that is
launch-bound (32-47 tok/s for a 0.6B model on an H200, whose memory allows ~4,000). Here each model gets, when
the pair loads, a static cache of :data:`STATIC_TOKENS` positions and one decode step (token in, logits out)
captured as a CUDA graph; a token is then one replay, the sampling on the GPU and one read of the token id.

Before the capture the step is compiled (``torch.compile``, Inductor): transformers' eager layers launch ~70
kernels each, and a replayed graph of ~2,000 kernels still took 5.75 ms a token on an H200; Inductor fuses the
norms, rotary embeddings and element-wise work into a few kernels a layer.

The prompt's prefill runs into the same static cache, padded up to a bucket of :data:`PREFILL_BUCKETS` positions
and replayed as one captured graph per bucket (:meth:`StaticDecoder.prefill`): padding goes after the prompt, so
causal attention keeps it out of every real position, and the decode steps write over it. Cache fusion's fuser
then reads and writes the two static caches in place (fusers.fuser_graphs). A prefilled (and maybe fused)
dynamic cache is copied in instead where the static prefill cannot serve. Every layer of the static cache keeps
every position, as :func:`fusers.generation.new_cache` does: sliding-window layers (Gemma 3) are limited by
their attention masks, so they stay exact past the window.

Sampling uses ``generate``'s own logits processors (the model's generation config included), so answers match
``generate``'s token for token. On the CPU the same loop runs without graphs (the tests compare it with
``generate``); the engine uses ``generate`` there, which measures as fast.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .libraries import cache_kwargs

if TYPE_CHECKING:
    import torch
    from transformers import Cache, GenerationConfig, PreTrainedModel

# Positions in each model's static cache (prompt and answer): a longer conversation decodes the dynamic way.
# Qwen3-0.6B in bfloat16: 28 layers x 8 KV heads x 128 x 2 x 2 bytes = 115 KiB a position, 470 MiB in all.
STATIC_TOKENS = 4096
# Padded prompt lengths of the captured prefills: the first PREFILLS_AT_LOAD when the pair loads, a longer one
# on first use; a prompt past the last bucket prefills the dynamic way.
PREFILL_BUCKETS = (64, 128, 256, 512, 1024, 2048)
PREFILLS_AT_LOAD = 5
# torch.compile's backend for the decode step where it is compiled ("aot_eager": traced, not code-generated,
# what the CPU tests use to check that the step traces without running Inductor's compiler).
COMPILE_BACKEND = "inductor"
RECOMPILE_LIMIT = 256  # decoders a process may compile (see StaticDecoder)


@dataclass(frozen=True)
class DecodePath:
    """How one model decodes, as the load found it: said once, where the user sees the load."""

    role: str
    static: bool  # a static cache (else transformers' generate on a dynamic cache)
    graphs: bool  # each step a replayed CUDA graph
    seconds: float  # what preparing it cost at load (cache, warm-up, capture)
    reason: str  # why not faster, when it is not
    detail: str = "on a static cache"  # what was captured

    def describe(self) -> str:
        if self.graphs:
            return f"{self.role}: CUDA graphs {self.detail} ({self.seconds:.1f} s to prepare)"
        return f"{self.path()} ({self.reason})"

    def path(self) -> str:
        return f"{self.role}: " + ("CUDA graphs" if self.graphs else "its eager pass" if self.role == "fuser"
                                   else "transformers' generate")


def describe_paths(paths: list[DecodePath]) -> str:
    """One line for the pair: fallbacks that share a reason say it once."""
    reasons: dict[str, list[DecodePath]] = {}
    parts = []
    for path in paths:
        if path.graphs:
            parts.append(path.describe())
        else:
            reasons.setdefault(path.reason, []).append(path)
    parts += [", ".join(p.path() for p in same) + f" ({reason})" for reason, same in reasons.items()]
    return "; ".join(parts)


def unavailable_reason(model: "PreTrainedModel", quantized: bool) -> str:
    """Why CUDA graphs cannot serve this model, or "" when they can."""
    import torch

    device = model.device
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if quantized:  # bitsandbytes' 8-bit matmul picks outlier columns on the host: not capturable
        return "a bitsandbytes-quantized model is not captured"
    if not hasattr(torch.cuda, "CUDAGraph"):
        return f"torch {torch.__version__} has no CUDA graphs"
    return ""


@dataclass
class _Prefill:
    """One bucket's captured prefill: its static input, the cache it prefills into and, on a GPU, its graph.
    Everything a graph reads or writes lives here, as long as the graph: a replay into freed memory corrupts
    whatever was allocated there since."""

    ids: "torch.Tensor"  # (1, P) the padded prompt
    positions: "torch.Tensor"  # (P,) 0..P-1
    scratch: "Cache"  # P positions a layer (see _prefill_bucket)
    run: Callable[[], None] = lambda: None  # the pass, uncaptured
    graph: Any = None


class StaticPrefix:
    """A prompt prefilled into a decoder's static cache, the decoder held (its lock) until :meth:`release`."""

    def __init__(self, decoder: "StaticDecoder", length: int):
        self.decoder, self.length = decoder, length
        self._held = True

    def get_seq_length(self) -> int:
        return self.length

    def release(self) -> None:
        if self._held:
            self._held = False
            self.decoder.lock.release()


class StaticDecoder:
    """One model's static cache, its decode step (compiled, captured) and its captured prefills. One answer at a
    time (:attr:`lock`)."""

    def __init__(self, model: "PreTrainedModel", tokens: int = STATIC_TOKENS, graphs: bool = True,
                 compile: str | None = None, buckets: tuple[int, ...] = PREFILL_BUCKETS):
        import torch
        from transformers.cache_utils import Cache, StaticLayer

        from .fuser import ModelShape

        self.model = model
        self.tokens = tokens
        self.lock = threading.Lock()
        self.compiled = compile
        self.buckets = tuple(b for b in buckets if b < tokens)
        self.use_graphs = graphs
        shape = ModelShape.of(model.config)
        device, dtype = model.device, model.dtype
        with torch.inference_mode():
            self.cache: Cache = Cache(layers=[StaticLayer(max_cache_len=tokens) for _ in range(shape.layers)])
            empty = torch.empty(1, shape.kv_heads, 0, shape.head_dim, dtype=dtype, device=device)
            for layer in self.cache.layers:
                layer.lazy_initialization(empty, empty)  # allocates (1, kv_heads, tokens, head_dim) now, not mid-answer
            self.token = torch.zeros((1, 1), dtype=torch.long, device=device)  # (1, 1) the step's input
            self.position = torch.zeros((1,), dtype=torch.long, device=device)  # (1,) its position
        self._lengths = [layer.cumulative_length for layer in self.cache.layers]  # () each: where a layer writes next
        self._kwargs = cache_kwargs(model, self.cache)
        self._forward: Callable[[], "torch.Tensor"] = self._eager_step
        if compile:
            # each decoder's step compiles anew (its cache's addresses are baked in), and past dynamo's limit of
            # recompiles a step would run uncompiled without a word: a process may load many pairs
            config = torch._dynamo.config
            name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
            self._forward = torch.compile(self._eager_step, backend=compile, dynamic=False)
        self.pool = torch.cuda.graph_pool_handle() if graphs else None  # the step's and the prefills' graphs
        self._prefills: dict[int, _Prefill] = {}
        self.graph: Any = None
        self.logits: "torch.Tensor | None" = None  # (1, V) the captured step's output
        if graphs:
            self._capture()

    def fits(self, tokens: int) -> bool:
        return tokens <= self.tokens

    def bucket(self, n: int) -> int | None:
        """The padded length a prefill of ``n`` positions runs at, or None past the last bucket."""
        return next((b for b in self.buckets if b >= n), None)

    def _set_length(self, n: int) -> None:
        import torch

        with torch.inference_mode():  # the cache's tensors were made there: in-place updates must be too
            torch._foreach_zero_(self._lengths)  # StaticLayer writes at its own counter, not at cache_position
            if n:
                torch._foreach_add_(self._lengths, n)

    def _eager_step(self) -> "torch.Tensor":
        """Logits (1, V) of ``self.token`` at ``self.position``, its keys and values written into the cache."""
        out = self.model(input_ids=self.token, position_ids=self.position[None], cache_position=self.position,
                         use_cache=True, **self._kwargs)
        return out.logits[:, -1, :]

    def _step(self) -> "torch.Tensor":
        return self._forward()

    def _captured(self, run: Callable[[], Any], warm_ups: int, before: Callable[[], None] = lambda: None
                  ) -> tuple[Any, Any]:
        """``run`` warmed up off the capture (lazy inits, compilation, kernel choices), then captured into the
        decoder's pool: (graph, what the captured run returned). ``before`` runs ahead of each, outside."""
        import torch

        device = self.model.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(warm_ups):
                before()
                run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        before()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self.pool):
            out = run()
        return graph, out

    def _capture(self) -> None:
        # the length is set from the host before each step, never inside the step's graph
        self.graph, self.logits = self._captured(self._step, 3, before=lambda: self._set_length(0))

    # -- the prompt ---------------------------------------------------------------------------------------

    def prepare_prefills(self, count: int = PREFILLS_AT_LOAD) -> None:
        for padded in self.buckets[:count]:
            self._prefill_bucket(padded)

    def _prefill_bucket(self, padded: int) -> _Prefill:
        import torch
        from transformers.cache_utils import Cache, StaticLayer

        bucket = self._prefills.get(padded)
        if bucket is not None:
            return bucket
        device = self.model.device
        with torch.inference_mode():
            # The prefill runs into a cache of exactly ``padded`` positions, then is copied into the decoder's:
            # with as many keys as queries, transformers' mask needs no host read of the cache's offset (which
            # a graph cannot hold), where a 4,096-position cache's would.
            scratch = Cache(layers=[StaticLayer(max_cache_len=padded) for _ in self.cache.layers])
            for layer, main in zip(scratch.layers, self.cache.layers):
                layer.lazy_initialization(main.keys[:, :, :0], main.values[:, :, :0])
            bucket = _Prefill(torch.zeros((1, padded), dtype=torch.long, device=device),
                              torch.arange(padded, device=device), scratch)
        lengths = [layer.cumulative_length for layer in scratch.layers]
        kwargs = cache_kwargs(self.model.base_model, scratch)

        def run() -> None:
            torch._foreach_zero_(lengths)  # inside the graph: a replay starts from position 0
            self.model.base_model(input_ids=bucket.ids, position_ids=bucket.positions[None],
                                  cache_position=bucket.positions, use_cache=True, **kwargs)
            for main, layer in zip(self.cache.layers, bucket.scratch.layers):
                main.keys[:, :, :padded].copy_(layer.keys)
                main.values[:, :, :padded].copy_(layer.values)

        bucket.run = run
        if self.use_graphs:
            bucket.graph, _ = self._captured(run, 2)
        self._prefills[padded] = bucket
        return bucket

    def prefill(self, input_ids: "torch.Tensor", held: bool = False) -> StaticPrefix | None:
        """Prefill ``input_ids`` (1, N) into the static cache, holding the decoder until the returned prefix is
        released (decoding it releases it); None, and nothing done, where this cannot serve: a prompt past the
        last bucket, or the decoder busy with another answer. ``held``: the caller has taken :attr:`lock`."""
        import torch

        n = input_ids.shape[-1]
        padded = self.bucket(n)
        if padded is None or n == 0:
            if held:
                raise ValueError(f"a prefill of {n} positions cannot run on the static cache")
            return None
        if not held and not self.lock.acquire(blocking=False):
            return None
        try:
            bucket = self._prefill_bucket(padded)
            with torch.inference_mode():
                bucket.ids[:, :n].copy_(input_ids)
                bucket.ids[:, n:].fill_(0)  # padding: any token; no real position attends to it
                if bucket.graph is not None:
                    bucket.graph.replay()
                else:
                    bucket.run()
            self._set_length(n)
        except BaseException:
            self.lock.release()
            raise
        return StaticPrefix(self, n)

    def load_prefix(self, prefix: "Cache") -> int:
        """Copy a prefilled (and maybe fused) cache's positions into the static cache; returns their count."""
        n = prefix.get_seq_length()
        for static, layer in zip(self.cache.layers, prefix.layers):
            static.keys[:, :, :n].copy_(layer.keys)
            static.values[:, :, :n].copy_(layer.values)
        self._set_length(n)
        return n

    def decode(self, input_ids: "torch.Tensor", prefix: "Cache | StaticPrefix", config: "GenerationConfig",
               on_token: Callable[[int], None], should_stop: Callable[[], bool]) -> None:
        """Decode after ``input_ids`` (1, N), ``prefix`` holding its first N-1 positions (a dynamic cache, copied
        in, or this decoder's :class:`StaticPrefix`), as ``generate`` would with ``config``: each new token
        (end-of-sequence included) goes to ``on_token``; ``should_stop`` is asked after each."""
        import torch

        model, device = self.model, self.model.device
        n_prompt = input_ids.shape[-1]
        with torch.inference_mode():
            # generate's own steps: the model's generation config under ours, its special tokens, its processors
            config, _ = model._prepare_generation_config(config)
            model._prepare_special_tokens(config, True, device=device)
            processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=n_prompt,
                                                     encoder_input_ids=input_ids, device=device, model_kwargs={})
            eos = set(config._eos_token_tensor.tolist()) if config._eos_token_tensor is not None else set()
            limit = config.max_new_tokens
            ids = torch.empty((1, n_prompt + limit), dtype=torch.long, device=device)  # (1, N + new)
            ids[:, :n_prompt] = input_ids
            if isinstance(prefix, StaticPrefix):
                if prefix.decoder is not self or prefix.length != n_prompt - 1:
                    raise ValueError("the static prefix must be this decoder's, holding every prompt position "
                                     "but the last")
            elif self.load_prefix(prefix) != n_prompt - 1:
                raise ValueError("the prefilled cache must hold every prompt position but the last")
            length = n_prompt
            for _ in range(limit):
                self.token.copy_(ids[:, length - 1:length])
                self.position.fill_(length - 1)
                if self.graph is not None:
                    self.graph.replay()
                    logits = self.logits
                else:
                    logits = self._step()
                scores = processors(ids[:, :length], logits.float())  # (1, V), as generate scores
                if config.do_sample:
                    token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[:, 0]  # (1,)
                else:
                    token = scores.argmax(dim=-1)  # (1,)
                ids[:, length] = token
                length += 1
                token_id = int(token)  # the one host synchronisation a token
                on_token(token_id)
                if token_id in eos or should_stop():
                    break


def prepare(model: "PreTrainedModel", role: str, quantized: bool, enabled: bool = True,
            tokens: int = STATIC_TOKENS, compile: bool = True) -> tuple["StaticDecoder | None", DecodePath]:
    """A static decoder for ``model`` where CUDA graphs can serve it (its step compiled unless ``compile`` is
    off, its first prefills captured), and what was decided."""
    reason = "turned off" if not enabled else unavailable_reason(model, quantized)
    if reason:
        return None, DecodePath(role, False, False, 0.0, reason)
    import torch

    t0 = time.perf_counter()
    not_compiled = "not compiled: turned off" if not compile else ""
    for backend in ((COMPILE_BACKEND, None) if compile else (None,)):
        try:
            decoder = StaticDecoder(model, tokens, graphs=True, compile=backend)
            decoder.prepare_prefills()
            torch.cuda.synchronize(model.device)
            break
        except Exception as exc:  # noqa: BLE001  (an unsupported model: a slower path serves it, and says why)
            if backend is not None:  # compilation failed: capture the eager step instead
                not_compiled = f"not compiled: {first_line(exc)}"
                torch._dynamo.reset()
                continue
            return None, DecodePath(role, False, False, time.perf_counter() - t0,
                                    f"capture failed: {first_line(exc)}")
    detail = ("compiled, " if decoder.compiled else "") + "on a static cache, prefills captured up to " \
        f"{decoder.buckets[min(PREFILLS_AT_LOAD, len(decoder.buckets)) - 1]} positions" \
        + (f" ({not_compiled})" if not_compiled else "")
    return decoder, DecodePath(role, True, True, time.perf_counter() - t0, "", detail)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"
