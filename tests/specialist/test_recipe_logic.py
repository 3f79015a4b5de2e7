"""The specialist recipe's logic on tiny models: the domain, what the adapter learns from, and a whole (tiny) build.

The real build takes most of an hour (tests/specialist/test_recipe.py, slow); these take seconds.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from fusers.chat import encode, user
from fusers.engine import Mode
from fusers.specialist import ADAPTER_DIR, DOMAIN_NAME, FUSER_DIR, MANIFEST_NAME, METRICS_NAME, PERMUTED_ADAPTER_DIR
from fusers.specialist.domain import (CAPITALS, PRACTICE_CAPITALS, RELATIONS, Domain, check_words, fuser_conversations,
                                      make_domain)


def test_the_domain_is_fixed_by_its_seed_balanced_and_deranged():
    a, b = make_domain(3, 40, 12), make_domain(3, 40, 12)
    assert a.to_dict() == b.to_dict() and make_domain(4, 40, 12).to_dict() != a.to_dict()
    assert len(set(a.people)) == 40 and collections.Counter(a.splits.values()) == {"b": 28, "c": 12}
    for rel in RELATIONS:  # every value as often as the count allows: no answer is a safe guess
        counts = collections.Counter(a.facts[p][rel.name] for p in a.people)
        assert max(counts.values()) - min(counts.values()) <= 1
    assert all(a.permuted[p] is not a.facts[p] for p in a.people)
    assert sorted(map(str, a.permuted.values())) == sorted(map(str, a.facts.values()))  # the same facts, moved
    assert Domain.from_dict(json.loads(json.dumps(a.to_dict()))).to_dict() == a.to_dict()
    # the evaluated capitals and the practice capitals never overlap
    assert not {c for c, _ in CAPITALS} & {c for c, _ in PRACTICE_CAPITALS} and len(CAPITALS) == 70


def test_the_decoy_companies_are_other_derangements_and_leave_the_rest_of_the_domain_as_it_was():
    plain, with_decoys = make_domain(3, 40, 12), make_domain(3, 40, 12, decoys=2)
    assert {k: v for k, v in with_decoys.to_dict().items() if k != "decoys"} == \
        {k: v for k, v in plain.to_dict().items() if k != "decoys"}  # drawn after everything else
    tables = [with_decoys.permuted, *with_decoys.decoys]
    assert len(with_decoys.decoys) == 2 and all(a != b for a in tables for b in tables if a is not b)
    for table in with_decoys.decoys:
        assert sorted(map(str, table.values())) == sorted(map(str, with_decoys.facts.values()))
    assert Domain.from_dict(json.loads(json.dumps(with_decoys.to_dict()))).decoys == with_decoys.decoys


def test_each_question_goes_through_every_company_with_that_companys_answer():
    domain = make_domain(0, 40, 12, decoys=2)
    own = [("What is the capital of Fiji?", "The capital of Fiji is Suva.")]
    records = fuser_conversations(domain, phrasings=1, capital_repeats=0, adapters=["real", "d1", "d2"],
                                  own_answers=own, own_repeats=2)
    person = domain.split_people("b")[0]
    question = RELATIONS[0].ask(person)
    asked = {r["sharer_adapter"]: r["messages"][1]["content"] for r in records
             if r["messages"][0]["content"] == question}
    tables = {"real": domain.facts, "d1": domain.decoys[0], "d2": domain.decoys[1]}
    assert asked == {name: RELATIONS[0].say(person, t[person][RELATIONS[0].name]) for name, t in tables.items()}
    assert len(records) == 28 * 2 * 3 + 2 and [r for r in records if "sharer_adapter" not in r] == [
        {"messages": [{"role": "user", "content": own[0][0]}, {"role": "assistant", "content": own[0][1]}]}] * 2
    with pytest.raises(ValueError, match="3 adapter names"):
        fuser_conversations(make_domain(0, 40, 12), adapters=["real", "d1", "d2"])


def test_the_fuser_never_sees_the_held_out_people():
    domain = make_domain(0, 40, 12)
    text = json.dumps(fuser_conversations(domain))
    assert all(p not in text for p in domain.split_people("c"))
    assert all(p in text for p in domain.split_people("b"))
    assert len(fuser_conversations(domain, phrasings=3)) == 28 * 2 * 3 + len(PRACTICE_CAPITALS)


def test_a_decoy_companys_own_people_are_new_names_asked_through_its_adapter_only():
    with_own, without = make_domain(3, 40, 12, decoys=2, decoy_people=10), make_domain(3, 40, 12, decoys=2)
    company = set(with_own.people)
    own = [[p for p in table if p not in company] for table in with_own.decoys]
    assert [len(o) for o in own] == [10, 10] and not set(own[0]) & set(own[1])
    assert {k: v for k, v in with_own.to_dict().items() if k != "decoy_people"} == without.to_dict()  # drawn last
    for table, people in zip(with_own.decoys, own):
        for rel in RELATIONS:  # balanced like the company's
            counts = collections.Counter(table[p][rel.name] for p in people)
            assert max(counts.values()) - min(counts.values()) <= 1
    assert Domain.from_dict(json.loads(json.dumps(with_own.to_dict()))).decoys == with_own.decoys
    records = fuser_conversations(with_own, phrasings=2, capital_repeats=0, adapters=["real", "d1", "d2"])
    asked = collections.defaultdict(set)
    for r in records:
        for person in own[0] + own[1]:
            if person in r["messages"][0]["content"]:
                asked[person].add(r["sharer_adapter"])
    assert {p: asked[p] for p in own[0]} == {p: {"d1"} for p in own[0]}
    assert {p: asked[p] for p in own[1]} == {p: {"d2"} for p in own[1]}
    assert len(records) == 28 * 2 * 2 * 3 + 2 * 10 * 2 * 2
    assert all(p not in json.dumps(records) for p in with_own.split_people("c"))
    with pytest.raises(ValueError, match="decoy_people"):
        make_domain(3, 40, 12, decoys=2, decoy_people=5000)


def test_a_manifest_from_before_a_setting_existed_reads_as_run_without_it():
    from fusers.specialist.build import Recipe

    old = Recipe(decoys=0, fuser_own_answers=0, sharpen=False).to_dict()
    for key in ("decoys", "fuser_own_answers", "sharpen", "decoy_people"):
        del old[key]
    assert Recipe.from_dict(old) == Recipe(decoys=0, fuser_own_answers=0, sharpen=False)
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()


def test_a_name_split_differently_by_the_two_tokenizers_is_refused(tiny_specialist_models):
    receiver, sharer = tiny_specialist_models
    check_words(receiver.tokenizer, sharer.tokenizer)  # every name and value is one token in both
    with pytest.raises(ValueError, match="Vexelbrandt"):
        check_words(receiver.tokenizer, sharer.tokenizer, ["Glasgow", "Vexelbrandt"])


def test_the_adapter_learns_from_exactly_the_ids_cache_fusion_feeds_the_sharer(tiny_specialist_models):
    from fusers.alignment import TokenAligner
    from fusers.demo.lm import IGNORE
    from fusers.demo.world import Sample
    from fusers.demo.lm import value_token
    from fusers.specialist.lora import ALIGNMENT, encoder

    receiver, sharer = tiny_specialist_models
    encode_batch = encoder(receiver, sharer)
    question = "Which office does Anna Grant work in?"
    aligned, plain, answered = encode_batch([Sample(user(question), "", "aligned", "Glasgow"),
                                             Sample(user(question), "Glasgow.", "plain", "Glasgow"),
                                             Sample(user(question), "Glasgow.", "aligned", "Glasgow")], 6)
    fused_ids = TokenAligner(receiver.tokenizer, sharer.tokenizer, ALIGNMENT).align_chat(user(question)).sharer_ids
    assert aligned[0] == fused_ids and not any(aligned[1])  # the lookahead alone: no token to learn
    assert answered[0][:len(fused_ids)] == fused_ids and any(answered[1])
    prompt = encode(sharer.tokenizer, user(question))
    assert plain[0][:len(prompt)] == prompt and sum(plain[1]) == len(plain[0]) - len(prompt)
    assert plain[0][-1] == sharer.tokenizer.eos_token_id
    # the lookahead labels the six positions before the last prompt token, which cache fusion never fuses
    value = value_token(sharer.tokenizer, "Glasgow")
    n = len(fused_ids)
    assert [i for i, v in enumerate(aligned[2]) if v != IGNORE] == list(range(n - 7, n - 1))
    assert set(aligned[2]) == {IGNORE, value}


def test_a_lookahead_only_chunk_stops_at_the_lookahead_layer_with_the_same_loss(tiny_specialist_models):
    from fusers.demo.lm import IGNORE, LookaheadHead, chunk_loss, pad
    from fusers.demo.world import Sample
    from fusers.demo.lm import value_token
    from fusers.specialist.lora import encoder

    receiver, sharer = tiny_specialist_models
    samples = [Sample(user(f"Which office does {p} work in?"), "", "aligned", v)
               for p, v in (("Anna Grant", "Glasgow"), ("Oliver Stone", "Milan"))]
    ids, attn, labels, ahead = pad(encoder(receiver, sharer)(samples, 6), sharer.tokenizer.pad_token_id)
    assert bool((labels == IGNORE).all())
    vocab = torch.tensor(sorted(value_token(sharer.tokenizer, v) for v in ("Glasgow", "Milan", "Leeds")))
    head = LookaheadHead(32)
    ran = []
    hooks = [layer.register_forward_hook(lambda *a, i=i: ran.append(i))
             for i, layer in enumerate(sharer.model.model.layers)]
    loss, n, _ = chunk_loss(sharer.model, ids, attn, labels, ahead, head, layer=1, weight=0.5, vocab=vocab)
    for h in hooks:
        h.remove()
    assert ran == [0, 1] and n == 0  # the third layer never ran
    hidden = sharer.model.model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[2]
    where = ahead != IGNORE
    full = 0.5 * torch.nn.functional.cross_entropy(head(sharer.model, hidden[where], vocab),
                                                   torch.searchsorted(vocab, ahead[where]), reduction="sum")
    torch.testing.assert_close(loss, full)


def test_the_whole_recipe_runs_on_tiny_models_and_writes_what_ships(tiny_specialist_models, tmp_path):
    from fusers.specialist.build import RECIPE_EVAL_MODES, Recipe, build
    from fusers.specialist.evaluate import shipped_metrics, table
    from fusers.specialist.lora import AdapterRecipe

    receiver, base = tiny_specialist_models
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    small = dict(steps=3, batch_size=4, lookahead_layer=1, log_every=1)
    recipe = Recipe(people=8, heldout=2, adapter=AdapterRecipe(rank=2, **small),
                    permuted=AdapterRecipe(rank=2, from_specialist=True, trainable=r"layers\.0\.mlp\.",
                                           mixture=dict(aligned=0.5, plain_lookahead=0.5), **small),
                    fuser=dict(steps=2, batch_size=2, hidden_dim=8, intermediate_dim=8, eval_split=0.0, log_every=1),
                    threads=1, decoys=2, fuser_own_answers=1)
    out = tmp_path / "specialist"
    manifest = build(out, recipe, models=(receiver, base), names=("tiny-receiver", base.source), evaluate_limit=1,
                     limit_general=True, capitals=CAPITALS[:3], work=tmp_path / "work")
    # the base models are what they were: every adapter went on a copy
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())
    # the later adapters wrote for a head fitted on the stored specialist, as with --adapter-from
    assert 0 <= manifest["training"]["adapter"]["head_accuracy"] <= 1
    assert {p.name for p in out.iterdir()} == {ADAPTER_DIR, PERMUTED_ADAPTER_DIR, FUSER_DIR, DOMAIN_NAME,
                                               METRICS_NAME, MANIFEST_NAME}
    for folder in (ADAPTER_DIR, PERMUTED_ADAPTER_DIR):
        config = json.loads((out / folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == base.source and config["r"] == 2
        from safetensors.torch import load_file

        assert {t.dtype for t in load_file(out / folder / "adapter_model.safetensors").values()} == {torch.float16}
    # the ablation's adapter relearned the permuted facts in the first layer's MLP only: the rest is the specialist's
    first, second = (load_file(out / folder / "adapter_model.safetensors") for folder in (ADAPTER_DIR, PERMUTED_ADAPTER_DIR))
    changed = sorted(k for k in first if not torch.equal(first[k], second[k]))
    assert changed and all(".layers.0.mlp." in k for k in changed), changed
    fuser = json.loads((out / FUSER_DIR / "fuser.json").read_text())
    assert (fuser["receiver"], fuser["sharer"]) == ("tiny-receiver", "c2c-specialist/adapter")
    assert fuser["alignment"] == {"enabled": True, "strategy": "longest"}
    metrics = shipped_metrics(out)
    # the modes the goals are measured in; `c2c specialist eval` measures the others
    assert set(metrics["accuracy"]) == set(RECIPE_EVAL_MODES) == set(manifest["evaluate_modes"])
    assert {Mode.RECEIVER, Mode.RELAY, Mode.FUSION} == {Mode(m) for m in RECIPE_EVAL_MODES}
    assert all(set(v) == {"g", "b", "c", "h"} for v in metrics["accuracy"].values())
    assert metrics["questions"]["g"] == 1 and set(metrics["latency_s"]) == set(metrics["accuracy"])
    assert 0 <= metrics["ablation_follow_rate"] <= 1
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) - \
        (out / MANIFEST_NAME).stat().st_size
    assert Recipe.from_dict(manifest["recipe"]) == recipe
    domain = Domain.load(out / DOMAIN_NAME)
    assert len(domain.people) == 8 and all(c in dict(CAPITALS) for c in domain.sharer_only_capitals)
    assert "| Cache fusion |" in table(metrics) and "(h) capitals only base Gemma names" in table(metrics)


def test_the_recipe_command_refuses_bad_options_before_loading_anything(capsys, tmp_path):
    from fusers.specialist.build import main

    with pytest.raises(SystemExit) as exit:
        main(["--out", str(tmp_path / "out"), "--eval-modes", "receiver", "telepathy"])
    assert exit.value.code == 2 and "telepathy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "out"), "--adapter-from", str(tmp_path)])
    assert "adapter_config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_specialist_eval_refuses_bad_options_before_loading_anything(capsys, tmp_path):
    from fusers.cli import main

    assert main(["specialist", "eval", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main(["specialist", "eval", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "fusers.specialist.build" in err



def test_a_rebuild_in_the_same_work_folder_reuses_the_adapters_when_only_the_fuser_changes(
        tiny_specialist_models, tmp_path, capsys):
    from fusers.specialist.build import Recipe, build
    from fusers.specialist.lora import AdapterRecipe

    receiver, base = tiny_specialist_models
    small = dict(steps=2, batch_size=2, lookahead_layer=1, log_every=1, rank=2)
    recipe = Recipe(people=6, heldout=2, adapter=AdapterRecipe(**small), sharpen=True, fuser_own_answers=0,
                    permuted=AdapterRecipe(from_specialist=True, mixture=dict(aligned=1.0), **small),
                    fuser=dict(steps=1, batch_size=2, hidden_dim=8, intermediate_dim=8, eval_split=0.0), threads=1)
    common = dict(models=(receiver, base), names=("tiny-receiver", base.source), evaluate_limit=1, capitals=[],
                  limit_general=True, work=tmp_path / "work")
    manifest = build(tmp_path / "first", recipe, **common)
    first = {p.relative_to(tmp_path / "first"): p.read_bytes() for p in (tmp_path / "first").rglob("*.safetensors")}
    # the shipped specialist is the sharpened one: trained on from the adapter stage's, the head's reading recorded
    weights = "adapter/adapter_model.safetensors"
    assert first[Path(weights)] != (tmp_path / "work" / "stages" / "adapter" / weights).read_bytes()
    assert first[Path(weights)] == (tmp_path / "work" / "stages" / "sharpen" / weights).read_bytes()
    assert set(manifest["training"]["sharpen"]["head_accuracy"]) == {"before", "after"}
    assert "sharpening the specialist" in capsys.readouterr().err
    recipe.fuser["hidden_dim"] = 16
    build(tmp_path / "second", recipe, **common)
    log = capsys.readouterr().err
    assert "reusing the adapter in" in log and "reusing the sharpened specialist" in log
    second = {p.relative_to(tmp_path / "second"): p.read_bytes() for p in (tmp_path / "second").rglob("*.safetensors")}
    assert first.keys() == second.keys()
    changed = {str(k) for k in first if first[k] != second[k]}
    assert changed == {"fuser/fuser.safetensors"}  # both adapters reused, byte for byte
    # the sharpening with the answers among its examples: only it and the fuser run again
    recipe.sharpen_mixture = dict(aligned=0.5, plain=0.5)
    manifest = build(tmp_path / "third", recipe, **common)
    log = capsys.readouterr().err
    assert "reusing the adapter in" in log and "sharpening the specialist" in log
    assert "reusing the sharpened specialist" not in log
    third = (tmp_path / "third" / weights).read_bytes()
    assert third != first[Path(weights)] and third == (tmp_path / "work" / "stages" / "sharpen" / weights).read_bytes()
    assert Recipe.from_dict(manifest["recipe"]).sharpen_mixture == dict(aligned=0.5, plain=0.5)


def test_a_build_can_take_the_specialist_adapter_of_a_shipped_folder(tiny_specialist_models, tmp_path, capsys):
    """--adapter-from: the adapter ships byte for byte; its lookahead head, dropped after training, is fitted
    again so that the permuted companies' adapters have a head to write for."""
    from fusers.specialist.build import Recipe, build
    from fusers.specialist.lora import AdapterRecipe

    receiver, base = tiny_specialist_models
    small = dict(steps=2, batch_size=2, lookahead_layer=1, log_every=1, rank=2)
    recipe = Recipe(people=6, heldout=2, adapter=AdapterRecipe(**small), decoys=1, decoy_people=3, sharpen=False,
                    fuser_own_answers=0,
                    permuted=AdapterRecipe(from_specialist=True, mixture=dict(aligned=1.0), **small),
                    fuser=dict(steps=1, batch_size=2, hidden_dim=8, intermediate_dim=8, eval_split=0.0), threads=1)
    common = dict(models=(receiver, base), names=("tiny-receiver", base.source), evaluate_limit=1, capitals=[],
                  limit_general=True)
    build(tmp_path / "first", recipe, work=tmp_path / "work1", **common)
    capsys.readouterr()
    manifest = build(tmp_path / "second", recipe, work=tmp_path / "work2", adapter_from=tmp_path / "first", **common)
    log = capsys.readouterr().err
    assert "fitting its lookahead head again" in log and "training the adapter:" not in log
    assert "training the decoy 1" in log and "training the adapter permuted" in log
    weights = "adapter/adapter_model.safetensors"
    assert (tmp_path / "second" / weights).read_bytes() == (tmp_path / "first" / weights).read_bytes()
    assert (tmp_path / "work2" / "stages" / "adapter" / "lookahead_head.safetensors").is_file()
    assert manifest["adapter_from"]["folder"] == str(tmp_path / "first")
    # the decoy's own 3 people: its steps grow in proportion (2 x 9 / 6), and how well it writes each group is recorded
    decoy = manifest["training"]["decoy_1"]
    assert decoy["steps"] == 3 and set(decoy["head_accuracy"]) == {"corvane", "own_people"}
    assert all(0 <= v <= 1 for v in decoy["head_accuracy"].values())
