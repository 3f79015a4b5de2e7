"""Loading pairs: quantization, different tokenizers (alignment), and load errors."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from fusers import tiny
from fusers.alignment import TokenAligner
from fusers.chat import encode, user
from fusers.checkpoint import save_fuser
from fusers.engine import Engine, Mode, warm_up
from fusers.errors import ModelLoadError, PairMismatchError
from fusers.generation import GenerationSettings
from fusers.pair import ModelSpec, Placement, load_pair

SHORT = GenerationSettings(max_new_tokens=4, hint_max_new_tokens=4)
QUESTION = user("What is the capital of France?")


@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_tiny_pair_runs_all_four_modes(tiny_dirs, quantize):
    pair = load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu", quantize=quantize),
                     ModelSpec(str(tiny_dirs.sharer), "cpu", quantize=quantize), tiny_dirs.ours)
    full = load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"), None)
    assert pair.receiver.quantize == quantize
    assert pair.receiver.memory_bytes < full.receiver.memory_bytes  # the weights really are smaller
    linear = type(pair.receiver.model.model.layers[0].mlp.down_proj).__name__
    assert linear == ("Linear8bitLt" if quantize == "8bit" else "Linear4bit")
    engine = Engine(pair)
    for mode in Mode:
        answer = engine.answer(mode, QUESTION, SHORT)
        assert len(answer.token_ids) > 0, mode
    assert any(f.key_gate_open for f in engine.answer(Mode.FUSION, QUESTION, SHORT).fusion)


@pytest.fixture(scope="module")
def aligned_dirs(tmp_path_factory):
    """A receiver and a sharer with different tokenizers, and a fuser that aligns tokens."""
    root = tmp_path_factory.mktemp("aligned")
    r_tok = tiny.bpe_tokenizer(400)
    s_tok = tiny.bpe_tokenizer(270)  # few merges: most receiver tokens split into several sharer tokens
    receiver = tiny.save_model(root / "receiver", "qwen3", r_tok, seed=1, layers=2)
    sharer = tiny.save_model(root / "sharer", "llama", s_tok, seed=2, layers=3, hidden_size=32, heads=2, kv_heads=2)
    rcfg, scfg = AutoConfig.from_pretrained(receiver), AutoConfig.from_pretrained(sharer)
    aligned = save_fuser(tiny.random_fuser(rcfg, scfg, receiver=str(receiver), sharer=str(sharer),
                                           alignment="longest"), root / "aligned")
    unaligned = save_fuser(tiny.random_fuser(rcfg, scfg, receiver=str(receiver), sharer=str(sharer)),
                           root / "unaligned")
    return receiver, sharer, aligned, unaligned, r_tok, s_tok


def test_alignment_gives_one_sharer_token_per_receiver_position(aligned_dirs):
    *_, r_tok, s_tok = aligned_dirs
    for strategy in ("first", "longest"):
        al = TokenAligner(r_tok, s_tok, strategy).align_chat(QUESTION)
        assert al.sectioned
        assert al.receiver_ids == encode(r_tok, QUESTION)
        assert len(al.sharer_ids) == len(al.receiver_ids)
        assert max(al.sharer_ids) < len(s_tok)
    # a receiver token the sharer splits: "first" takes the first piece, "longest" the longest
    aligner_first, aligner_longest = TokenAligner(r_tok, s_tok, "first"), TokenAligner(r_tok, s_tok, "longest")
    for rid in encode(r_tok, QUESTION):
        piece = r_tok.decode([rid])
        pieces = s_tok.encode(piece, add_special_tokens=False)
        if rid in r_tok.all_special_ids or len(pieces) < 2:
            continue
        assert aligner_first.align_token(rid) == pieces[0]
        lengths = [len(s_tok.decode([p])) for p in pieces]
        assert aligner_longest.align_token(rid) == pieces[lengths.index(max(lengths))]
        break
    else:
        pytest.fail("no receiver token was split by the sharer's tokenizer")
    # template tokens map onto the sharer's own template tokens
    im_start_r = r_tok.convert_tokens_to_ids("<|im_start|>")
    im_start_s = s_tok.convert_tokens_to_ids("<|im_start|>")
    al = TokenAligner(r_tok, s_tok, "first").align_chat(QUESTION)
    assert al.sharer_ids[al.receiver_ids.index(im_start_r)] == im_start_s


def test_pair_with_different_tokenizers_runs_cache_fusion_through_alignment(aligned_dirs):
    receiver, sharer, aligned, unaligned, *_ = aligned_dirs
    pair = load_pair(ModelSpec(str(receiver), "cpu"), ModelSpec(str(sharer), "cpu"), aligned)
    answer = Engine(pair).answer(Mode.FUSION, QUESTION, SHORT)
    assert len(answer.token_ids) > 0 and all(f.key_gate_open for f in answer.fusion)
    # without alignment the receiver's ids overflow this sharer's vocabulary: a clear error, not garbage
    pair.fuser = load_pair(ModelSpec(str(receiver), "cpu"), ModelSpec(str(sharer), "cpu"), unaligned).fuser
    with pytest.raises(PairMismatchError, match="does not align tokens"):
        Engine(pair).answer(Mode.FUSION, QUESTION, SHORT)


def test_fuser_for_another_pair_is_refused_at_load(tiny_dirs, aligned_dirs):
    receiver, sharer, aligned, *_ = aligned_dirs
    with pytest.raises(PairMismatchError, match="This fuser was made for receiver .*but the loaded pair is"):
        load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"), aligned)


def test_model_load_errors_are_readable(tmp_path, tiny_dirs):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pair(ModelSpec(str(tmp_path / "missing"), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_pair(ModelSpec(str(tmp_path / "empty"), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"))
    with pytest.raises(ModelLoadError, match="Unknown quantization"):
        ModelSpec("x", quantize="3bit")
    with pytest.raises(ModelLoadError, match="sees no CUDA GPU|does not exist"):
        load_pair(ModelSpec(str(tiny_dirs.receiver), "cuda:7"), ModelSpec(str(tiny_dirs.sharer), "cpu"))
    # a Hub id while offline (the tests run with HF_HUB_OFFLINE=1)
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE is set"):
        load_pair(ModelSpec("someone/not-cached-model", "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"))


def test_models_given_as_strings_or_paths_load_with_the_defaults_placement(tiny_dirs):
    pair = load_pair(str(tiny_dirs.receiver), tiny_dirs.sharer, tiny_dirs.ours, defaults=Placement("cpu", "bfloat16"))
    assert (pair.receiver.source, pair.sharer.source) == (str(tiny_dirs.receiver), str(tiny_dirs.sharer))
    assert str(pair.receiver.dtype) == str(pair.sharer.dtype) == "torch.bfloat16"
    assert Engine(pair).answer(Mode.FUSION, QUESTION, SHORT).token_ids
    with pytest.raises(ModelLoadError, match=r"The sharer is a dict; give a ModelSpec, or its source as a string or a "
                                             r"path"):
        load_pair(str(tiny_dirs.receiver), {"source": str(tiny_dirs.sharer)})


def test_load_reports_progress_and_can_be_cancelled(tiny_dirs):
    import threading

    from fusers.errors import Cancelled

    steps = []
    pair = load_pair(None, None, tiny_dirs.published, progress=steps.append, defaults=Placement("cpu"))
    assert [s.step for s in steps] == [1, 2, 3, 3] and steps[-1].message == "Ready"
    assert pair.receiver.source == str(tiny_dirs.receiver)  # taken from the fuser's config
    cancel = threading.Event()

    def stop_after_receiver(p):
        if p.message.startswith("Loading receiver"):
            cancel.set()

    with pytest.raises(Cancelled):
        load_pair(None, None, tiny_dirs.published, progress=stop_after_receiver, cancel=cancel,
                  defaults=Placement("cpu"))


def test_models_given_by_name_are_placed_by_the_defaults(tiny_dirs):
    """load_pair("folder", "folder") from Python, as with the specs: the placement comes from ``defaults``."""
    pair = load_pair(str(tiny_dirs.receiver), tiny_dirs.sharer, tiny_dirs.published, defaults=Placement("cpu"))
    assert (pair.receiver.source, pair.sharer.source) == (str(tiny_dirs.receiver), str(tiny_dirs.sharer))
    assert pair.receiver.device.type == "cpu" and pair.fuser is not None
    assert Engine(pair).answer(Mode.FUSION, QUESTION, SHORT).token_ids


def test_a_message_that_repeats_template_text_is_not_found_inside_the_template(aligned_dirs):
    *_, r_tok, s_tok = aligned_dirs
    messages = [{"role": "user", "content": "user"}]
    al = TokenAligner(r_tok, s_tok, "longest").align_chat(messages)
    assert al.sectioned and len(al.sharer_ids) == len(al.receiver_ids)
    head = set(s_tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"])
    tail = set(s_tok("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    n_head = len(r_tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"])
    n_message = len(r_tok("user", add_special_tokens=False)["input_ids"])
    aligner = TokenAligner(r_tok, s_tok, "longest")
    # template positions take the sharer's own template tokens; the message is aligned token by token
    assert set(al.sharer_ids[:n_head]) <= head
    message = slice(n_head, n_head + n_message)
    assert al.sharer_ids[message] == [aligner.align_token(i) for i in al.receiver_ids[message]]
    assert set(al.sharer_ids[n_head + n_message:]) <= tail


def test_warm_up_is_a_step_of_the_load_and_leaves_answers_as_they_were(tiny_dirs):
    """The warm-up (a short answer in each mode) counts in the load's progress and changes no later answer."""
    import threading

    from fusers.errors import Cancelled

    steps = []
    warm = load_pair(None, None, tiny_dirs.published, progress=steps.append, defaults=Placement("cpu"),
                     warm_up=warm_up)
    assert [s.step for s in steps] == [1, 2, 3, 4, 4] and {s.total for s in steps} == {4}
    assert steps[-2].message.startswith("Warming up") and steps[-1].message == "Ready"
    cold = load_pair(None, None, tiny_dirs.published, defaults=Placement("cpu"))
    for mode in (Mode.RELAY, Mode.FUSION, Mode.RECEIVER):
        assert Engine(warm).answer(mode, QUESTION, SHORT).token_ids == \
            Engine(cold).answer(mode, QUESTION, SHORT).token_ids, mode
    cancel = threading.Event()

    def stop_at_warm_up(p):
        if p.message.startswith("Warming up"):
            cancel.set()

    with pytest.raises(Cancelled):  # cancelled while warming up: the load ends as cancelled
        load_pair(None, None, tiny_dirs.published, progress=stop_at_warm_up, cancel=cancel,
                  defaults=Placement("cpu"), warm_up=warm_up)
