"""Training fusers: frozen receiver and sharer, one trainable C2C projector per receiver layer.

    from fusers.train import TrainConfig, train
    report = train(receiver, sharer, "data.jsonl", TrainConfig(steps=500), out="my-fuser",
                   progress=print, cancel=threading.Event())

``receiver``/``sharer`` are :class:`fusers.pair.LoadedModel` (``load_model`` or
``LoadedModel.from_model``). Only :class:`TrainConfig` is imported eagerly, so the CLI can
build its options without importing torch.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig

_LAZY = {
    "train": "trainer",
    "TrainReport": "trainer",
    "TrainProgress": "trainer",
    "EvalMetrics": "trainer",
    "load_conversations": "data",
    "Conversation": "data",
}

__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
