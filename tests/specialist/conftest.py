"""Tiny stand-ins for the specialist pair: a ChatML receiver and a base (no chat template) Gemma-3 sharer that
share a tokenizer keeping every name and value of the domain whole, as the real tokenizers do."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_specialist_models(tmp_path_factory):
    """(receiver, base sharer) LoadedModels on the CPU."""
    import copy

    import torch

    from fusers import tiny
    from fusers.pair import LoadedModel
    from fusers.specialist.domain import (CAPITAL_ANSWER, CAPITAL_QUESTION, CAPITALS, PRACTICE_CAPITALS, RELATIONS,
                                          words_to_check)

    torch.set_num_threads(1)
    lines = [f"{w} " * 3 for w in words_to_check()]
    lines += [rel.say("Anna Grant", v) for rel in RELATIONS for v in rel.values]
    lines += [q.format(p="Anna Grant") for rel in RELATIONS for q in rel.questions]
    lines += [CAPITAL_QUESTION.format(c=c) + " " + CAPITAL_ANSWER.format(c=c, v=v) for c, v in CAPITALS + PRACTICE_CAPITALS]
    corpus = "\n".join(lines) + "\nQuestion: Answer: You are a helpful AI assistant"
    receiver_tok = tiny.bpe_tokenizer(1200, corpus)
    sharer_tok = copy.deepcopy(receiver_tok)
    sharer_tok.chat_template = None  # a base model, as Gemma-3-270M ships
    cpu = torch.device("cpu")
    receiver = tiny.build_model(tiny.tiny_config("qwen3", len(receiver_tok), tokenizer=receiver_tok, layers=2,
                                                 hidden_size=32, heads=2, kv_heads=1, intermediate_size=64), seed=1)
    sharer = tiny.build_model(tiny.tiny_config("gemma3", len(sharer_tok), tokenizer=sharer_tok, layers=3,
                                               hidden_size=32, heads=2, kv_heads=1, intermediate_size=64,
                                               sliding_window=8), seed=2)
    root = tmp_path_factory.mktemp("tiny-specialist")
    sharer.save_pretrained(root / "sharer")  # an adapter names its base: this folder
    sharer_tok.save_pretrained(root / "sharer")
    for m in (receiver, sharer):
        for p in m.parameters():
            p.requires_grad_(False)
    return (LoadedModel.from_model(receiver, receiver_tok, "receiver", "tiny-receiver", cpu, torch.float32),
            LoadedModel.from_model(sharer, sharer_tok, "sharer", str(root / "sharer"), cpu, torch.float32))
