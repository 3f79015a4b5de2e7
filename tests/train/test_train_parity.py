"""Training fuses the prompt exactly as inference does, batch padding included."""

from __future__ import annotations

import math

import pytest
import torch

from fusers import tiny
from fusers.alignment import TokenAligner
from fusers.checkpoint import load_fuser, save_fuser
from fusers.engine import Engine, Mode
from fusers.generation import GenerationSettings
from fusers.layer_map import build_layer_map
from fusers.pair import LoadedModel, ModelSpec, Pair, load_pair
from fusers.train import TrainConfig, train
from fusers.train.data import collate, conversations_from, tokenize
from fusers.train.forward import FusionModule, run_batch
from fusers.train.model import build_fuser, choose_alignment

GREEDY = GenerationSettings(max_new_tokens=4, ignore_eos=True)
SIX = GenerationSettings(max_new_tokens=6, ignore_eos=True)


def chat(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "unused"}]}


def teacher_forced(receiver, sharer, fuser, aligner, prompts, answers):
    """run_batch over all prompts in one padded batch, the engine's answers as targets."""
    examples = tokenize(conversations_from([chat(p) for p in prompts]), receiver, sharer, aligner, 1024, False)
    for example, answer in zip(examples, answers):
        example.answer = torch.tensor(answer)
    fusion = None if fuser is None else FusionModule(fuser).eval()
    pads = (receiver.tokenizer.pad_token_id, (sharer if aligner else receiver).tokenizer.pad_token_id)
    with torch.inference_mode():
        batched = run_batch(receiver.model, sharer.model, fusion, collate(examples, *pads))
        alone = [run_batch(receiver.model, sharer.model, fusion, collate([e], *pads)) for e in examples]
    return batched, alone


def check_matches_engine(pair: Pair, aligner, prompts):
    engine = Engine(pair)
    for mode, fuser in ((Mode.FUSION, pair.fuser), (Mode.RECEIVER, None)):
        answers = [engine.answer(mode, [{"role": "user", "content": p}], GREEDY).token_ids for p in prompts]
        batched, alone = teacher_forced(pair.receiver, pair.sharer, fuser, aligner, prompts, answers)
        # the engine decodes greedily: on its own answers, every teacher-forced argmax is its next token
        assert batched.correct == batched.answer_tokens == sum(map(len, answers)), mode
        assert batched.first_correct == len(prompts)
        # padding changes nothing: the batch's loss is the sum of the one-conversation losses
        assert batched.loss_sum.item() == pytest.approx(sum(a.loss_sum.item() for a in alone), rel=1e-5)


def test_batched_training_forward_matches_inference(task_models):
    receiver, sharer = task_models
    fuser = tiny.random_fuser(receiver.model.config, sharer.model.config, hidden_dim=16, intermediate_dim=16)
    prompts = ["w10", "w40 w41 w42 w13 w44 w45", "w46 w11"]  # different lengths: padding in every column
    check_matches_engine(Pair(receiver, sharer, fuser), None, prompts)


@pytest.fixture(scope="module")
def aligned_models():
    """A receiver and a sharer whose tokenizers differ (BPE of 400 and of 270 tokens)."""
    r_tok, s_tok = tiny.bpe_tokenizer(400), tiny.bpe_tokenizer(270)
    rcfg = tiny.tiny_config("qwen3", len(r_tok), layers=2, tokenizer=r_tok)
    scfg = tiny.tiny_config("llama", len(s_tok), layers=3, hidden_size=32, heads=2, kv_heads=2, tokenizer=s_tok)
    cpu = torch.device("cpu")
    return (LoadedModel.from_model(tiny.build_model(rcfg, 1), r_tok, "receiver", "r", cpu, torch.float32),
            LoadedModel.from_model(tiny.build_model(scfg, 2), s_tok, "sharer", "s", cpu, torch.float32))


def test_batched_training_forward_matches_inference_with_aligned_tokens(aligned_models):
    receiver, sharer = aligned_models
    fuser = tiny.random_fuser(receiver.model.config, sharer.model.config, hidden_dim=16, intermediate_dim=16,
                              alignment="longest")
    prompts = ["What is the capital of France?", "Hello", "Tell me a short story about a small red fox, please."]
    aligner = TokenAligner(receiver.tokenizer, sharer.tokenizer, "longest")
    check_matches_engine(Pair(receiver, sharer, fuser), aligner, prompts)


def test_different_tokenizers_train_with_alignment(aligned_models, task_models, tmp_path):
    receiver, sharer = aligned_models
    data = [chat("What is the capital of France? " * (1 + i % 3)) for i in range(8)]
    for record in data:
        record["messages"][1]["content"] = "Paris, the city on the Seine."
    config = TrainConfig(steps=2, batch_size=4, hidden_dim=16, intermediate_dim=16, eval_split=0.0, max_length=24,
                         mapping="k_nearest")
    report = train(receiver, sharer, data, config, tmp_path / "aligned")
    assert report.alignment == "longest"  # auto: the vocabularies differ
    assert report.truncated_samples == 8 and all(math.isfinite(h["loss"]) for h in report.history)
    fuser = load_fuser(tmp_path / "aligned")
    assert fuser.info.is_do_alignment and fuser.info.alignment_strategy == "longest"
    assert fuser.info.mapping == "k_nearest" and fuser.layer_map == build_layer_map("k_nearest", 2, 3)
    # one tokenizer: no alignment, the receiver's ids go to both models
    assert choose_alignment(TrainConfig(), *task_models, None) == (False, "first")
    assert choose_alignment(TrainConfig(alignment="first"), *task_models, None) == (True, "first")


def test_zero_initialised_fuser_reproduces_the_receiver_alone(task_dirs, task_models, tmp_path):
    receiver, sharer = task_models
    # gates open, so the fuser's path really runs: only its zeroed outputs keep the cache as it was
    config = TrainConfig(hidden_dim=32, intermediate_dim=32, gate_init=2.0)
    fuser = build_fuser(config, receiver, sharer, 10, (False, "first"), None)
    path = save_fuser(fuser, tmp_path / "zero")
    pair = load_pair(ModelSpec(str(task_dirs.receiver), "cpu"), ModelSpec(str(task_dirs.sharer), "cpu"), path)
    engine = Engine(pair)
    for prompt in ("w10", "w41 w12 w43", "w47 w46 w45 w17"):
        messages = [{"role": "user", "content": prompt}]
        fused = engine.answer(Mode.FUSION, messages, SIX)
        assert all(f.key_gate_open and f.value_gate_open for f in fused.fusion)
        assert fused.token_ids == engine.answer(Mode.RECEIVER, messages, SIX).token_ids
    # the training path too, Gumbel gates and all: bit-for-bit the receiver alone
    examples = tokenize(conversations_from([chat("w41 w12"), chat("w10")]), receiver, sharer, None, 64, False)
    batch = collate(examples, 0, 0)
    with torch.no_grad():
        alone = run_batch(receiver.model, sharer.model, None, batch)
        for mode in (True, False):
            fused = run_batch(receiver.model, sharer.model, FusionModule(fuser).train(mode), batch)
            assert torch.equal(fused.loss_sum, alone.loss_sum)
