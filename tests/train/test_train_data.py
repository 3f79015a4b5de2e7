"""Training data: bad lines are named, prompts are encoded as inference encodes them, batches are laid out right."""

from __future__ import annotations

import json

import pytest
import torch

from fusers.chat import encode
from fusers.errors import DataError, TrainingError
from fusers.train import TrainConfig
from fusers.train.data import IGNORE, collate, conversations_from, load_conversations, tokenize

GOOD = {"messages": [{"role": "user", "content": "w10"}, {"role": "assistant", "content": "w30"}]}


@pytest.mark.parametrize("lines, message", [
    ([json.dumps(GOOD), "{not json", json.dumps(GOOD)], "line 2 is not JSON"),
    ([json.dumps(GOOD), "", json.dumps({"messages": [{"role": "user", "content": "w10"}]})],
     "line 3 has no assistant turn"),
    ([json.dumps({"text": "w10"})], 'line 1: expected an object with a "messages" list'),
    ([json.dumps({"messages": [{"role": "robot", "content": "x"}]})], "line 1, message 1"),
    ([json.dumps({"messages": [{"role": "assistant", "content": "w30"}]})], "line 1: the turns before"),
    (["", "   "], "holds no conversations (the file is empty)"),
])
def test_bad_jsonl_names_the_line(tmp_path, lines, message):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_conversations(path)
    assert str(path) in str(err.value)


def test_missing_file_and_the_last_assistant_turn_is_the_target(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_conversations(tmp_path / "nope.jsonl")
    path = tmp_path / "d.jsonl"
    multi = {"messages": [
        {"role": "system", "content": "w40"}, {"role": "user", "content": "w10"},
        {"role": "assistant", "content": "w30"}, {"role": "user", "content": "w11"},
        {"role": "assistant", "content": "w31"}, {"role": "user", "content": "ignored"}]}
    path.write_text(json.dumps(multi) + "\n\n" + json.dumps(GOOD) + "\n")
    convs = load_conversations(path)
    assert [c.line for c in convs] == [1, 3]
    assert convs[0].answer == "w31" and convs[0].messages[-1] == {"role": "user", "content": "w11"}
    assert len(convs[0].messages) == 4


def test_prompts_encode_as_at_inference_and_long_ones_are_truncated(task_models):
    receiver, sharer = task_models
    convs = conversations_from([GOOD, {"messages": [
        {"role": "user", "content": " ".join(f"w{40 + i % 8}" for i in range(30))},
        {"role": "assistant", "content": " ".join(["w31"] * 20)}]}])
    full = tokenize(convs, receiver, sharer, None, 1024, False)
    assert full[0].prompt.tolist() == encode(receiver.tokenizer, convs[0].messages)
    eos = receiver.tokenizer.eos_token_id
    assert full[0].answer.tolist() == [receiver.tokenizer.convert_tokens_to_ids("w30"), eos]  # end of turn included
    assert not any(e.truncated for e in full)
    cut = tokenize(convs, receiver, sharer, None, 24, False)
    assert not cut[0].truncated and cut[1].truncated
    assert cut[1].tokens == 24
    assert cut[1].prompt.tolist() == full[1].prompt.tolist()[-(24 - cut[1].answer.shape[0]):]  # the prompt's end
    assert cut[1].answer.tolist() == full[1].answer.tolist()[: cut[1].answer.shape[0]]  # the answer's start


def test_batch_layout_pads_the_prefix_right_and_masks_it(task_models):
    receiver, sharer = task_models
    convs = conversations_from([GOOD, {"messages": [{"role": "user", "content": "w40 w41 w10 w42"},
                                                          {"role": "assistant", "content": "w30 w31"}]}])
    a, b = tokenize(convs, receiver, sharer, None, 1024, False)
    batch = collate([a, b], 0, 0)
    la, lb = a.prompt.shape[0] - 1, b.prompt.shape[0] - 1
    big_l = max(la, lb)
    assert batch.receiver_prefix.shape == (2, big_l)
    assert batch.receiver_prefix[0, :la].tolist() == a.prompt[:-1].tolist()
    assert batch.tail[0, 0] == a.prompt[-1] and batch.tail[1, 0] == b.prompt[-1]
    assert batch.labels[0].tolist()[: a.answer.shape[0]] == a.answer.tolist()
    assert batch.labels[0].tolist()[a.answer.shape[0]:] == [IGNORE] * (batch.tail.shape[1] - a.answer.shape[0])
    assert batch.position_ids[0].tolist() == list(range(la, la + batch.tail.shape[1]))
    mask = batch.attention_mask[0].tolist()
    assert mask[:big_l] == [1] * la + [0] * (big_l - la)  # the prefix's padding is masked
    assert mask[big_l:] == [1] * a.answer.shape[0] + [0] * (batch.tail.shape[1] - a.answer.shape[0])
    assert batch.tokens == a.tokens + b.tokens and batch.answer_tokens == a.answer.shape[0] + b.answer.shape[0]
    assert torch.equal(batch.first, torch.tensor([[True] + [False] * (batch.tail.shape[1] - 1)] * 2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(lr=-1.0), "lr must be > 0"),
    (dict(schedule="exponential"), "schedule must be one of"),
    (dict(mapping="random"), "mapping must be one of"),
    (dict(eval_split=1.0), r"eval_split must be in \[0, 1\)"),
    (dict(num_layers=2), "num_layers must be >= 3"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(alignment="maybe"), "alignment must be one of"),
])
def test_config_checks_name_the_setting(kwargs, message):
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**kwargs)


def test_config_derives_steps_warmup_and_annealing():
    cfg = TrainConfig(epochs=2.5, warmup_ratio=0.1)
    assert cfg.total_steps(10) == 25 and cfg.warmup(25) == 2 and cfg.anneal(25) == 25
    cfg = TrainConfig(steps=7, warmup_steps=3, anneal_steps=5)
    assert cfg.total_steps(10) == 7 and cfg.warmup(7) == 3 and cfg.anneal(7) == 5
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig(lr=2e-4).differences(TrainConfig(lr=1e-4)) == ["lr: 0.0001 (saved run: 0.0002)"]


def test_learning_rate_warms_up_then_follows_the_schedule():
    from fusers.train.trainer import lr_factor

    cosine = [lr_factor(s, warmup=3, total=10, schedule="cosine") for s in range(10)]
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0]  # no step is spent at a zero learning rate
    assert all(a > b for a, b in zip(cosine[3:], cosine[4:])) and cosine[-1] > 0
    linear = [lr_factor(s, warmup=0, total=4, schedule="linear") for s in range(4)]
    assert linear == [1.0, 0.75, 0.5, 0.25]
    assert {lr_factor(s, warmup=2, total=5, schedule="constant") for s in range(2, 5)} == {1.0}


def test_a_conversation_may_name_the_sharer_adapter_that_prefills_it(task_models, tmp_path):
    receiver, sharer = task_models
    convs = conversations_from([{**GOOD, "sharer_adapter": "decoy"}, GOOD])
    assert [c.sharer_adapter for c in convs] == ["decoy", None]
    examples = tokenize(convs, receiver, sharer, None, 1024, False)
    assert collate(examples, 0, 0).sharer_adapters == ("decoy", None)  # None: the active adapter
    assert collate(examples[1:], 0, 0).sharer_adapters is None  # none named: the sharer as it is
    with pytest.raises(DataError, match='conversation 1: "sharer_adapter" must name'):
        conversations_from([{**GOOD, "sharer_adapter": 3}])
    # a sharer without that adapter beside its weights: refused before training, naming what it holds
    from fusers.train import train

    with pytest.raises(TrainingError, match="names sharer adapters decoy, but the sharer holds no adapter"):
        train(receiver, sharer, [{**GOOD, "sharer_adapter": "decoy"}] * 4, TrainConfig(steps=1, batch_size=2,
              eval_split=0.0), tmp_path / "run")
    assert not (tmp_path / "run" / "fuser.safetensors").exists()


def test_a_teams_conversation_may_name_the_sharers_fused_into_it(task_models, tmp_path):
    receiver, sharer = task_models
    convs = conversations_from([{**GOOD, "sharers": ["A"]}, GOOD])
    assert [c.sharers for c in convs] == [("A",), None]
    examples = tokenize(convs, receiver, sharer, None, 1024, False)
    assert collate(examples, 0, 0).sharers == (("A",), None)  # None: every sharer
    assert collate(examples[1:], 0, 0).sharers is None
    for bad in ([], "A", ["A", "A"], [""], [3]):
        with pytest.raises(DataError, match='conversation 1: "sharers" must be a non-empty list of distinct'):
            conversations_from([{**GOOD, "sharers": bad}])
    # a pair has no team sharers to name: refused before training
    from fusers.train import train

    with pytest.raises(TrainingError, match=r'names team sharers \(A\) in "sharers", but this run trains one'):
        train(receiver, sharer, [{**GOOD, "sharers": ["A"]}] * 4, TrainConfig(steps=1, batch_size=2,
              eval_split=0.0), tmp_path / "run")
    assert not (tmp_path / "run" / "fuser.safetensors").exists()
