"""Prefill and decode as small functions, and the settings that drive decoding.

Decoding runs through transformers' own ``generate`` on a prefilled cache: it
honours every model's quirks and is as fast as a loop of our own for batch 1
(see ``benchmarks/modes.py``). Tokens stream through a callback, and a
``threading.Event`` cancels between tokens.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator

from .config import ConfigBase, option
from .errors import SettingsError
from .libraries import cache_kwargs
from .static_decode import StaticPrefix

if TYPE_CHECKING:
    import torch
    from transformers import Cache, PreTrainedModel

    from .static_decode import StaticDecoder


@dataclass
class GenerationSettings(ConfigBase):
    """How every answer mode decodes."""

    config_name: ClassVar[str] = "generation settings"
    config_error: ClassVar[type[Exception]] = SettingsError

    max_new_tokens: int = option(128, "Most tokens in an answer.")
    do_sample: bool = option(False, "Sample instead of greedy decoding.", aliases=("--sample",))
    temperature: float = option(0.7, "Sampling temperature (> 0); only when sampling.")
    top_p: float = option(0.8, "Nucleus sampling mass in (0, 1]; only when sampling.")
    top_k: int = option(20, "Keep the k most likely tokens (0 = all); only when sampling.")
    seed: int | None = option(0, "Seed for sampling; None draws a fresh one.")
    hint_max_new_tokens: int = option(64, "Most tokens in the sharer's hint (text relay, relay + fusion).")
    ignore_eos: bool = option(False, "Decode max_new_tokens even past end-of-sequence (benchmarks).")
    thinking: bool = option(False, "Let templates that support it (Qwen3) open a thinking block.")

    def __post_init__(self) -> None:
        # a saved or scripted value of the wrong type is an error here, never a surprise mid-run
        for name in ("do_sample", "ignore_eos", "thinking"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(f"{name} must be a number, got {value!r}")
        for name in ("max_new_tokens", "hint_max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        if not self.temperature > 0 or self.temperature == float("inf"):
            raise SettingsError(f"temperature must be > 0 and finite, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise SettingsError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise SettingsError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed < 2**63):
            raise SettingsError(f"seed must be an integer in [0, 2**63) or None, got {self.seed!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSettings":
        if not isinstance(data, dict):
            raise SettingsError(f"generation settings must be a mapping of names to values, got {type(data).__name__}")
        return super().from_dict(data)


def new_cache(model: "PreTrainedModel") -> "Cache":
    """A cache that keeps every position in every layer.

    Not ``DynamicCache(config=...)``: for sliding-window models (Gemma 2/3, Mistral) that one keeps only
    the last ``sliding_window`` positions in the sliding layers, and cache fusion needs every position of
    both models. Decoding on a full cache is what ``generate`` does: the sliding layers' masks still limit
    attention to their window.
    """
    from transformers import DynamicCache

    del model  # every model gets the same layout
    return DynamicCache()


# what Timing.decode_path says of a model's decode
STATIC_PATH = "cuda graphs"
GENERATE_PATH = "generate"


class Interrupted(Exception):
    """Raised inside a forward pass when its cancel event is set (see :func:`interruptible`)."""


@contextlib.contextmanager
def interruptible(model: "PreTrainedModel", cancel: threading.Event | None) -> Iterator[None]:
    """Let ``cancel`` stop a forward pass between decoder layers, not only between tokens.

    A long prompt's prefill is one forward pass; checking at every layer makes Stop take
    effect within one layer's time. The hooks do not change what the model computes.
    """
    if cancel is None:
        yield
        return

    def check(module: Any, args: Any) -> None:
        if cancel.is_set():
            raise Interrupted

    layers = getattr(model.base_model, "layers", None) or []
    handles = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def prefill(model: "PreTrainedModel", input_ids: "torch.Tensor", cancel: threading.Event | None = None) -> "Cache":
    """Run ``input_ids`` (1, N) through the decoder stack and return the filled cache.

    Raises :class:`Interrupted` if ``cancel`` is set while it runs.
    """
    import torch

    cache = new_cache(model)
    if input_ids.shape[-1] == 0:
        return cache
    with torch.inference_mode(), interruptible(model, cancel):
        model.base_model(input_ids=input_ids, use_cache=True, **cache_kwargs(model.base_model, cache))  # no LM head: a prefill needs no logits
    return cache


class _TokenStreamer:
    """transformers streamer protocol: ``put`` gets the prompt once, then each new token."""

    def __init__(self, on_token: Callable[[int], None]):
        self._on_token = on_token
        self._prompt_seen = False

    def put(self, value: "torch.Tensor") -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self._on_token(int(token))

    def end(self) -> None:
        pass


def decode(
    model: "PreTrainedModel",
    input_ids: "torch.Tensor",
    settings: GenerationSettings,
    *,
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    pad_token_id: int | None,
    cache: "Cache | None" = None,
    on_token: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    stop: threading.Event | None = None,
    static: "StaticDecoder | None" = None,
    on_path: Callable[[str], None] | None = None,
) -> list[int]:
    """Generate after ``input_ids`` (1, N); ``cache`` may hold the first N-1 positions.

    With ``static`` (a model's captured decoder) and a ``cache`` of N-1 positions that fits it, the answer
    decodes there (fusers.static_decode), token for token what ``generate`` gives; otherwise through ``generate``.
    ``on_path`` is told which: :data:`STATIC_PATH` or :data:`GENERATE_PATH`.

    Returns the new token ids, the final end-of-sequence token excluded. Raises
    :class:`Interrupted` if ``cancel`` is set during a forward pass. ``stop`` (set by ``on_token``,
    say at a stop string) ends decoding after the current token, as an end-of-sequence would.
    """
    import torch
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    eos = sorted(set(eos_token_ids))
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=settings.do_sample,
        # an empty list, not None: None would be filled in from the model's generation config
        eos_token_id=[] if settings.ignore_eos else (eos or None),
        pad_token_id=pad_token_id if pad_token_id is not None else (eos[0] if eos else 0),
        **(
            {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k}
            if settings.do_sample
            else {"temperature": None, "top_p": None, "top_k": None}
        ),
    )

    class _Cancel(StoppingCriteria):
        def __call__(self, ids: "torch.Tensor", scores: "torch.Tensor", **kwargs: Any) -> "torch.Tensor":
            done = should_stop()
            return torch.full((ids.shape[0],), done, dtype=torch.bool, device=ids.device)

    out_ids: list[int] = []

    def collect(token: int) -> None:
        out_ids.append(token)
        if on_token is not None:
            on_token(token)

    def should_stop() -> bool:
        return bool(cancel and cancel.is_set()) or bool(stop and stop.is_set())

    n = input_ids.shape[-1]
    if isinstance(cache, StaticPrefix):  # prefilled in the decoder's static cache, the decoder held for us
        try:
            if on_path is not None:
                on_path(STATIC_PATH if cache.decoder.graph is not None else "static cache")
            cache.decoder.decode(input_ids, cache, config, collect, should_stop)
        finally:
            cache.release()
        return _without_final_eos(out_ids, settings, eos)
    if (static is not None and cache is not None and cache.get_seq_length() == n - 1
            and static.fits(n + max_new_tokens) and static.lock.acquire(blocking=False)):
        try:
            if on_path is not None:
                on_path(STATIC_PATH if static.graph is not None else "static cache")
            static.decode(input_ids, cache, config, collect, should_stop)
        finally:
            static.lock.release()
        return _without_final_eos(out_ids, settings, eos)
    if on_path is not None:
        on_path(GENERATE_PATH)
    kwargs = cache_kwargs(model, cache) if cache is not None else {}
    with torch.inference_mode(), interruptible(model, cancel):
        model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=_TokenStreamer(collect),
            stopping_criteria=StoppingCriteriaList([_Cancel()]),
            **kwargs,
        )
    return _without_final_eos(out_ids, settings, eos)


def _without_final_eos(out_ids: list[int], settings: GenerationSettings, eos: list[int]) -> list[int]:
    if out_ids and not settings.ignore_eos and out_ids[-1] in eos:
        out_ids.pop()
    return out_ids


class Detokenizer:
    """Turns a growing list of token ids into text deltas, holding back broken UTF-8.

    Fast tokenizers decode incrementally (``tokenizers.decoders.DecodeStream``: constant work
    per token); others, and those that clean up spaces after decoding (which a stream cannot
    do), decode the whole answer again for every token.
    """

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream = None
        if self._backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        if self._stream is not None:
            delta = self._stream.step(self._backend, token_id) or ""  # None: a character is still incomplete
            self.text += delta
            return delta
        text = self._tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""  # a multi-byte character is still incomplete
        if text.startswith(self.text):
            delta = text[len(self.text):]
        else:  # the tokenizer rewrote earlier text (rare clean-ups): send only the tail difference
            common = 0
            while common < min(len(text), len(self.text)) and text[common] == self.text[common]:
                common += 1
            delta = text[common:]
        self.text = text
        return delta


# torch's sampling RNG is process-wide: runs that sample take turns, so concurrent runs stay reproducible
_SAMPLING_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded(settings: GenerationSettings, devices: "list[torch.device]") -> Iterator[None]:
    """Sampling draws from a private RNG state seeded per run; greedy runs leave RNG alone."""
    if not settings.do_sample:
        yield
        return
    import torch

    gpus = [d.index for d in devices if d.type == "cuda"]
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=gpus):
        torch.manual_seed(settings.seed)
        yield
