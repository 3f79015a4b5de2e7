"""Tiny models, tokenizers and fusers built on the spot: for tests, benchmarks and the docs.

Nothing here downloads anything. Models are real ``transformers`` architectures
(Qwen3, Qwen2, Llama) with small configs and random weights; tokenizers are real
``tokenizers`` objects with a ChatML chat template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .chat import FALLBACK_CHAT_TEMPLATE
from .fuser import Fuser, FuserInfo, ModelShape
from .layer_map import build_layer_map
from .projector import C2CProjector, ProjectorConfig

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ARCHITECTURES = ("qwen3", "qwen2", "llama", "gemma3")

# A little English so a byte-level BPE learns ordinary merges.
_CORPUS = """
The capital of France is Paris. The river Seine runs through the city. Water boils at one hundred degrees.
What is the capital of Italy? Rome is the capital of Italy, and the Tiber flows through it.
In one clear sentence, describe the most essential background knowledge needed to answer the question.
Based on the background, accurately answer the question. Do not directly solve or give the answer.
Machine learning models read tokens and write tokens; a cache keeps the keys and values of earlier tokens.
The receiver answers the user, the sharer shares what it knows, and the fuser carries the cache between them.
Hello, how are you today? I am fine, thank you. Please tell me a short story about a small red fox.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Dates: 1848, 1912, 2024. Names: Ada, Alan, Grace, Linus.
user assistant system
"""


def bpe_tokenizer(vocab_size: int = 400, corpus: str | None = None) -> Any:
    """A byte-level BPE tokenizer (exact round trip of any text) with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = (corpus or _CORPUS).strip().splitlines()
    tok.train_from_iterator(lines * 4, trainer)
    return _wrap(PreTrainedTokenizerFast(tokenizer_object=tok))


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer of any size: token ``i`` is the word ``w{i}``; ids round-trip through text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIAL_TOKENS + ["[UNK]", "user", "assistant", "system"]
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f"w{i}": i for i in range(len(words), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _wrap(PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]"))


def _wrap(tokenizer: Any) -> Any:
    tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)  # template markers are never split or merged
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def tiny_config(
    arch: str,
    vocab_size: int,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int | None = None,
    intermediate_size: int = 128,
    max_position_embeddings: int = 1024,
    tokenizer: Any = None,
    sliding_window: int = 8,
) -> Any:
    """``sliding_window`` is for gemma3 only: its layers alternate sliding, sliding, full, like Gemma-3's
    five-to-one pattern but with a full layer within three."""
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}")
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
    )
    if tokenizer is not None:
        common.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.eos_token_id)
    if arch == "qwen3":
        return Qwen3Config(head_dim=head_dim or hidden_size // heads, **common)
    if arch == "qwen2":
        if head_dim not in (None, hidden_size // heads):
            raise ValueError("qwen2 derives head_dim from hidden_size / heads")
        return Qwen2Config(**common)
    if arch == "gemma3":
        types = ["full_attention" if i % 3 == 2 else "sliding_attention" for i in range(layers)]
        return Gemma3TextConfig(head_dim=head_dim or hidden_size // heads, sliding_window=sliding_window,
                                layer_types=types, **common)
    return LlamaConfig(head_dim=head_dim or hidden_size // heads, **common)


def build_model(config: Any, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model.eval()


def save_model(path: str | Path, arch: str, tokenizer: Any, seed: int = 0, **config_kwargs: Any) -> Path:
    """Build a tiny model for ``tokenizer`` and save both to ``path``, as a Hub folder would hold them."""
    path = Path(path)
    config = tiny_config(arch, len(tokenizer), tokenizer=tokenizer, **config_kwargs)
    build_model(config, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def random_fuser(
    receiver_config: Any,
    sharer_config: Any,
    *,
    receiver: str = "receiver",
    sharer: str = "sharer",
    mapping: str = "last_aligned",
    hidden_dim: int = 32,
    intermediate_dim: int = 48,
    num_layers: int = 3,
    gates_open: bool = True,
    zero_init: bool = False,
    seed: int = 0,
    alignment: str | None = None,
) -> Fuser:
    """A fuser with random weights for a pair of configs: every receiver layer gets its own projector."""
    r, s = ModelShape.of(receiver_config), ModelShape.of(sharer_config)
    torch.manual_seed(seed)
    cfg = ProjectorConfig(
        source_dim=s.head_dim, target_dim=r.head_dim, source_num_heads=s.kv_heads, target_num_heads=r.kv_heads,
        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, num_layers=num_layers, dropout=0.0,
        zero_init=zero_init,
    )
    projectors = []
    for _ in range(r.layers):
        proj = C2CProjector(cfg)
        with torch.no_grad():
            for name, param in proj.named_parameters():
                if name.endswith("norm.weight"):
                    param.uniform_(0.5, 1.5)  # not all ones, so a wrong norm shows in parity tests
            sign = 1.0 if gates_open else -1.0
            proj.key_gate_logit.fill_(sign * 2.0)
            proj.value_gate_logit.fill_(sign * 1.5)
        projectors.append(proj)
    info = FuserInfo(
        receiver=receiver, sharer=sharer, receiver_layers=r.layers, sharer_layers=s.layers, mapping=mapping,
        is_do_alignment=alignment is not None, alignment_strategy=alignment or "first", format="random",
    )
    return Fuser(projectors, build_layer_map(mapping, r.layers, s.layers), info).eval()
