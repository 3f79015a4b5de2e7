"""Decoding on a static cache, each token one replayed CUDA graph (gpt-fast's recipe), for every answer mode.

``generate`` on a dynamic cache launches each kernel of each layer from Python for every token: on a GPU that is
launch-bound (32-47 tok/s for a 0.6B model on an H200, whose memory allows ~4,000). Here each model gets, when
the pair loads, a static cache of :data:`STATIC_TOKENS` positions and one decode step (token in, logits out)
captured as a CUDA graph; a token is then one replay, the sampling on the GPU and one read of the token id.

The prompt's prefill stays as it is (its length varies, and cache fusion edits its cache); its keys and values
are copied into the static cache, which is all cache fusion's fused prefill needs. Every layer of the static
cache keeps every position, as :func:`fusers.generation.new_cache` does: sliding-window layers (Gemma 3) are
limited by their attention masks, so they stay exact past the window.

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
            return f"{self.role}: CUDA graphs {self.detail} ({self.seconds:.1f} s to capture)"
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


class StaticDecoder:
    """One model's static cache and its captured decode step. One answer at a time (:attr:`lock`)."""

    def __init__(self, model: "PreTrainedModel", tokens: int = STATIC_TOKENS, graphs: bool = True):
        import torch
        from transformers.cache_utils import Cache, StaticLayer

        from .fuser import ModelShape

        self.model = model
        self.tokens = tokens
        self.lock = threading.Lock()
        shape = ModelShape.of(model.config)
        device, dtype = model.device, model.dtype
        with torch.inference_mode():
            self.cache: Cache = Cache(layers=[StaticLayer(max_cache_len=tokens) for _ in range(shape.layers)])
            empty = torch.empty(1, shape.kv_heads, 0, shape.head_dim, dtype=dtype, device=device)
            for layer in self.cache.layers:
                layer.lazy_initialization(empty, empty)  # allocates (1, kv_heads, tokens, head_dim) now, not mid-answer
            self.token = torch.zeros((1, 1), dtype=torch.long, device=device)  # (1, 1) the step's input
            self.position = torch.zeros((1,), dtype=torch.long, device=device)  # (1,) its position
        self.graph: Any = None
        self.logits: "torch.Tensor | None" = None  # (1, V) the captured step's output
        if graphs:
            self._capture()

    def fits(self, tokens: int) -> bool:
        return tokens <= self.tokens

    def _set_length(self, n: int) -> None:
        import torch

        with torch.inference_mode():  # the cache's tensors were made there: in-place updates must be too
            for layer in self.cache.layers:  # StaticLayer writes at its own counter, not at cache_position
                layer.cumulative_length.fill_(n)

    def _step(self) -> "torch.Tensor":
        """Logits (1, V) of ``self.token`` at ``self.position``, its keys and values written into the cache."""
        out = self.model(input_ids=self.token, position_ids=self.position[None], cache_position=self.position,
                         use_cache=True, **cache_kwargs(self.model, self.cache))
        return out.logits[:, -1, :]

    def _capture(self) -> None:
        import torch

        device = self.model.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.inference_mode(), torch.cuda.stream(side):  # warm-up off the capture: lazy inits, kernel choices
            for _ in range(3):
                self._set_length(0)
                self._step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self._set_length(0)  # a host-side fill: never inside the capture
        with torch.inference_mode(), torch.cuda.graph(graph):
            self.logits = self._step()
        self.graph = graph

    def load_prefix(self, prefix: "Cache") -> int:
        """Copy a prefilled (and maybe fused) cache's positions into the static cache; returns their count."""
        n = prefix.get_seq_length()
        for static, layer in zip(self.cache.layers, prefix.layers):
            static.keys[:, :, :n].copy_(layer.keys)
            static.values[:, :, :n].copy_(layer.values)
        self._set_length(n)
        return n

    def decode(self, input_ids: "torch.Tensor", prefix: "Cache", config: "GenerationConfig",
               on_token: Callable[[int], None], should_stop: Callable[[], bool]) -> None:
        """Decode after ``input_ids`` (1, N), ``prefix`` holding its first N-1 positions, as ``generate`` would
        with ``config``: each new token (end-of-sequence included) goes to ``on_token``; ``should_stop`` is
        asked after each."""
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
            if self.load_prefix(prefix) != n_prompt - 1:
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
            tokens: int = STATIC_TOKENS) -> tuple["StaticDecoder | None", DecodePath]:
    """A captured static decoder for ``model`` where CUDA graphs can serve it, and what was decided."""
    reason = "turned off" if not enabled else unavailable_reason(model, quantized)
    if reason:
        return None, DecodePath(role, False, False, 0.0, reason)
    import torch

    t0 = time.perf_counter()
    try:
        decoder = StaticDecoder(model, tokens, graphs=True)
        torch.cuda.synchronize(model.device)
    except Exception as exc:  # noqa: BLE001  (an unsupported model: today's path serves it, and says why)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, DecodePath(role, False, False, time.perf_counter() - t0,
                                f"capture failed: {type(exc).__name__}: {first[:200]}")
    return decoder, DecodePath(role, True, True, time.perf_counter() - t0, "")


def prepare_fuser(fuser: Any, receiver: Any, sharer: Any, enabled: bool = True) -> DecodePath:
    """Capture ``fuser``'s inference passes (fusers.fuser_graphs) where both models share its CUDA device."""
    reason = ("turned off" if not enabled else unavailable_reason(receiver.model, False)
              or ("" if sharer.device == receiver.device else "the sharer is on another device"))
    fuser.graphs = None
    if reason:
        return DecodePath("fuser", False, False, 0.0, reason)
    import torch

    from .fuser_graphs import BUCKETS, CAPTURED_AT_LOAD, FuserGraphs

    t0 = time.perf_counter()
    try:
        graphs = FuserGraphs(fuser, receiver.shape, sharer.shape, receiver.dtype, receiver.device)
        graphs.prepare()
        torch.cuda.synchronize(receiver.device)
    except Exception as exc:  # noqa: BLE001  (the eager pass serves, and the reason is said)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return DecodePath("fuser", False, False, time.perf_counter() - t0,
                          f"capture failed: {type(exc).__name__}: {first[:200]}")
    fuser.graphs = graphs
    return DecodePath("fuser", True, True, time.perf_counter() - t0, "",
                      f"for prompts up to {BUCKETS[CAPTURED_AT_LOAD - 1]} positions, longer on first use")
