"""Models without a chat template (base models) get plain Question:/Answer: turns and stop strings."""

from __future__ import annotations

import torch

from fusers import tiny
from fusers.chat import PLAIN_STOP_STRINGS, encode, find_stop, render
from fusers.engine import Engine, Mode
from fusers.generation import GenerationSettings
from fusers.pair import LoadedModel, Pair

MESSAGES = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"}]


def _base_model_pair():
    chat_tok, base_tok = tiny.bpe_tokenizer(400), tiny.bpe_tokenizer(400)
    base_tok.chat_template = None  # as Gemma-3-270M ships
    model = tiny.build_model(tiny.tiny_config("llama", len(base_tok), tokenizer=base_tok), seed=3)
    cpu = torch.device("cpu")
    receiver = LoadedModel.from_model(model, chat_tok, "receiver", "tiny-chat", cpu, torch.float32)
    sharer = LoadedModel.from_model(model, base_tok, "sharer", "tiny-base", cpu, torch.float32)
    return Pair(receiver, sharer)


def test_a_model_without_a_chat_template_gets_plain_turns_and_says_so():
    pair = _base_model_pair()
    sharer = pair.sharer
    assert sharer.fallback_template and sharer.stop_strings == PLAIN_STOP_STRINGS
    assert not pair.receiver.fallback_template and not pair.receiver.stop_strings
    assert "no chat template: plain Question:/Answer: turns" in pair.describe()[1]
    assert "no chat template" not in pair.describe()[0]
    text = render(sharer.tokenizer, MESSAGES)
    assert text == "Question: What is the capital of France?\nAnswer: Paris.\n\nQuestion: And of Italy?\nAnswer:"
    # nothing outside the words of the turns reaches the model: the ids are the text, round trip
    ids = encode(sharer.tokenizer, MESSAGES)
    assert sharer.tokenizer.decode(ids) == text


def test_the_relay_hint_and_the_sharers_answer_use_the_plain_turns():
    pair = _base_model_pair()
    engine = Engine(pair)
    settings = GenerationSettings(max_new_tokens=4, hint_max_new_tokens=4)
    for mode in (Mode.SHARER, Mode.RELAY):
        answer = engine.answer(mode, MESSAGES, settings)
        assert answer.finish_reason in ("eos", "length")
        assert "<|im_start|>" not in answer.text and "<|im_start|>" not in (answer.hint or "")


def test_stop_strings_end_an_answer_where_a_new_turn_begins():
    assert find_stop(" Paris\nQuestion: What", PLAIN_STOP_STRINGS) == (6, 0)
    assert find_stop(" Paris\nQues", PLAIN_STOP_STRINGS) == (None, 5)  # may still begin one: held back
    assert find_stop(" Paris\n", PLAIN_STOP_STRINGS) == (None, 1)
    assert find_stop(" Paris", PLAIN_STOP_STRINGS) == (None, 0)
    assert find_stop("A\nAnswer: B", PLAIN_STOP_STRINGS) == (1, 0)
