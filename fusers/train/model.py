"""The fuser a run starts from: a new one (zeroed outputs) or a published/ours one to fine-tune."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import OURS, load_fuser
from ..fuser import Fuser, FuserInfo
from ..layer_map import build_layer_map
from ..projector import C2CProjector, ProjectorConfig
from .config import TrainConfig

if TYPE_CHECKING:
    from ..pair import LoadedModel


def model_name(model: "LoadedModel") -> str:
    """What the fuser records as its receiver/sharer: an absolute folder, or the Hub id. A model with an
    adapter is recorded as its adapter folder, which names its base."""
    path = Path(model.adapter or model.source).expanduser()
    return str(path.resolve()) if path.exists() else model.source


def choose_alignment(config: TrainConfig, receiver: "LoadedModel", sharer: "LoadedModel",
                     init: Fuser | None) -> tuple[bool, str]:
    """(align tokens?, strategy). ``auto`` follows the fuser being fine-tuned, else the vocabularies."""
    if config.alignment == "none":
        return False, "first"
    if config.alignment in ("first", "longest"):
        return True, config.alignment
    if init is not None:
        return init.info.is_do_alignment, init.info.alignment_strategy
    if shares_token_ids(receiver, sharer):
        return False, "first"
    return True, "longest"  # as the published pair with different tokenizers (Qwen3 + Llama 3.2)


def shares_token_ids(receiver: "LoadedModel", sharer: "LoadedModel") -> bool:
    """Whether the sharer can read the receiver's ids as they are (one vocabulary contains the other, same ids).

    True for the published Qwen pairs (Qwen3 only adds tokens to Qwen2.5's vocabulary), as the reference
    feeds them the receiver's ids.
    """
    r_vocab, s_vocab = receiver.tokenizer.get_vocab(), sharer.tokenizer.get_vocab()
    small, large = (r_vocab, s_vocab) if len(r_vocab) <= len(s_vocab) else (s_vocab, r_vocab)
    if any(large.get(token) != index for token, index in small.items()):
        return False
    return max(r_vocab.values()) < sharer.model.get_input_embeddings().num_embeddings


def build_fuser(config: TrainConfig, receiver: "LoadedModel", sharer: "LoadedModel", total_steps: int,
                alignment: tuple[bool, str], init: Fuser | None) -> Fuser:
    """A float32 fuser on the receiver's device, seeded by ``config.seed``.

    Fine-tuning keeps the init fuser's shapes, layer map and weights; the training-only
    settings (dropout, gate temperatures and annealing) come from ``config``.
    """
    r, s = receiver.shape, sharer.shape
    anneal = config.anneal(total_steps)
    training = dict(dropout=config.dropout, initial_temperature=config.initial_temperature,
                    final_temperature=config.final_temperature, anneal_steps=anneal, dtype="float32")
    torch.manual_seed(config.seed)
    if init is not None:
        projectors = []
        for old in init.projectors:
            proj = C2CProjector(replace(old.config, **training))
            proj.load_state_dict(old.state_dict(), strict=True)
            projectors.append(proj)
        layer_map = list(init.layer_map)
        mapping = init.info.mapping
        extra: dict[str, Any] = {"fine_tuned_from": init.info.source}
    else:
        cfg = ProjectorConfig(
            source_dim=s.head_dim, target_dim=r.head_dim, source_num_heads=s.kv_heads, target_num_heads=r.kv_heads,
            hidden_dim=config.hidden_dim, intermediate_dim=config.intermediate_dim, num_layers=config.num_layers,
            zero_init=config.zero_init, **training,
        )
        projectors = [C2CProjector(cfg) for _ in range(r.layers)]  # one fuser per receiver layer
        with torch.no_grad():
            for proj in projectors:
                proj.key_gate_logit.fill_(config.gate_init)
                proj.value_gate_logit.fill_(config.gate_init)
        layer_map = build_layer_map(config.mapping, r.layers, s.layers)
        mapping = config.mapping
        extra = {}
    info = FuserInfo(
        receiver=model_name(receiver), sharer=model_name(sharer), receiver_layers=r.layers, sharer_layers=s.layers,
        mapping=mapping, is_do_alignment=alignment[0], alignment_strategy=alignment[1], format=OURS, extra=extra,
    )
    fuser = Fuser(projectors, layer_map, info)
    return fuser.to(device=receiver.device, dtype=torch.float32)


def load_init(config: TrainConfig, receiver: "LoadedModel", sharer: "LoadedModel") -> Fuser | None:
    """The fuser named by ``config.init``, checked against the pair; None for a new fuser."""
    if config.init is None:
        return None
    from ..sources import resolve_fuser

    fuser = load_fuser(resolve_fuser(config.init))
    fuser.check_pair(receiver.shape, sharer.shape, receiver.source, sharer.source)
    return fuser
