"""A team: one receiver fused from several sharers with different tokenizers and depths (fusers.team)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from fusers import tiny
from fusers.chat import user
from fusers.checkpoint import save_fuser
from fusers.engine import Engine, Mode, PhaseEvent, TokenEvent
from fusers.errors import ModeUnavailableError, TeamFormatError
from fusers.fuser import cache_kv
from fusers.generation import GenerationSettings, prefill
from fusers.pair import ModelSpec, load_pair, load_team
from fusers.team import (TEAM_MANIFEST, SharerEntry, SharerSource, TeamManifest, combine, mode_names,
                         parse_mode, read_team, write_team)
from fusers.team_run import member_aligner

SHORT = GenerationSettings(max_new_tokens=6, hint_max_new_tokens=5, ignore_eos=True)
QUESTION = user("What is the capital of France?")


@pytest.fixture(scope="module")
def team_dirs(tmp_path_factory):
    """A Qwen3 receiver; sharer A: Llama, 3 layers, its own tokenizer (aligned, longest); sharer B: Qwen2, 2
    layers, the receiver's tokenizer; sharer C: B's model with a fuser whose gates are closed."""
    root = tmp_path_factory.mktemp("team")
    r_tok, a_tok = tiny.bpe_tokenizer(400), tiny.bpe_tokenizer(270)
    receiver = tiny.save_model(root / "receiver", "qwen3", r_tok, seed=1, layers=2)
    sharer_a = tiny.save_model(root / "sharer_a", "llama", a_tok, seed=2, layers=3, hidden_size=32, heads=2,
                               kv_heads=2)
    sharer_b = tiny.save_model(root / "sharer_b", "qwen2", r_tok, seed=3, layers=2, hidden_size=48, heads=4,
                               kv_heads=1)
    rcfg = AutoConfig.from_pretrained(receiver)
    fusers = {}
    for name, sharer, seed, alignment, gates in (("A", sharer_a, 4, "longest", True), ("B", sharer_b, 5, None, True),
                                                 ("C", sharer_b, 6, None, False)):
        fuser = tiny.random_fuser(rcfg, AutoConfig.from_pretrained(sharer), receiver=str(receiver),
                                  sharer=str(sharer), seed=seed, alignment=alignment, gates_open=gates)
        fusers[name] = save_fuser(fuser, root / f"fuser_{name}")
    team = write_team(root / "team", TeamManifest("../receiver", [
        SharerEntry("A", "../sharer_a", "../fuser_A"), SharerEntry("B", "../sharer_b", "../fuser_B")]))
    return {"root": root, "receiver": receiver, "A": sharer_a, "B": sharer_b, "fusers": fusers, "team": team}


def cpu(path) -> ModelSpec:
    return ModelSpec(str(path), "cpu")


@pytest.fixture(scope="module")
def team(team_dirs):
    return load_pair(None, None, team_dirs["team"])


def pair_of(team_dirs, name, sharer=None):
    return load_pair(cpu(team_dirs["receiver"]), cpu(team_dirs[sharer or name]), team_dirs["fusers"][name])


def test_a_team_folder_loads_alone_with_relative_paths(team, team_dirs):
    assert [m.name for m in team.members] == ["A", "B"]
    assert team.sharer is team.members[0].sharer and team.fuser is team.members[0].fuser
    stored = json.loads((team_dirs["team"] / TEAM_MANIFEST).read_text())
    assert stored["receiver"] == "../receiver" and stored["sharers"][0]["fuser"] == "../fuser_A"
    assert mode_names(team) == ["receiver", "sharer", "sharer:A", "sharer:B", "relay", "fusion", "fusion:A",
                                "fusion:B", "hybrid"]
    assert any(line.startswith("[B] fuser") for line in team.describe())


def test_one_sharer_team_answers_as_the_pair_token_for_token(team_dirs):
    pair = pair_of(team_dirs, "A")
    one = load_team(cpu(team_dirs["receiver"]), [SharerSource("A", cpu(team_dirs["A"]), team_dirs["fusers"]["A"])])
    for mode in (Mode.FUSION, Mode.HYBRID, Mode.RELAY, Mode.SHARER):
        alone, in_team = (Engine(p).answer(mode, QUESTION, SHORT) for p in (pair, one))
        assert in_team.token_ids == alone.token_ids, mode
        assert in_team.hint_token_ids == alone.hint_token_ids, mode
    fused = Engine(one).answer(Mode.FUSION, QUESTION, SHORT)
    assert [f.sharer for f in fused.fusion] == ["A", "A"] and fused.sharers == ["A"]


def test_a_subset_fuses_only_the_named_sharers(team, team_dirs):
    for name in ("A", "B"):
        alone = Engine(pair_of(team_dirs, name)).answer(Mode.FUSION, QUESTION, SHORT)
        subset = Engine(team).answer(f"fusion:{name}", QUESTION, SHORT)
        assert subset.token_ids == alone.token_ids, name
        assert subset.to_dict()["mode"] == f"fusion:{name}" and subset.sharers == [name]
        assert {f.sharer for f in subset.fusion} == {name}
    sharer_b = Engine(pair_of(team_dirs, "B")).answer(Mode.SHARER, QUESTION, SHORT)
    assert Engine(team).answer("sharer:B", QUESTION, SHORT).token_ids == sharer_b.token_ids


def test_the_receiver_cache_takes_the_sum_of_every_fusers_residual(team, team_dirs):
    """fused = receiver + (fused by A - receiver) + (fused by B - receiver), each fuser reading the receiver's own
    cache: checked against each sharer's pair fusing a fresh copy alone."""
    engine = Engine(team)
    aligned = member_aligner(engine, team.members[0]).align_chat(QUESTION)
    r_ids = aligned.receiver_ids[:-1]
    receiver = team.receiver.model

    def receiver_cache():
        return prefill(receiver, torch.tensor([r_ids]))

    base = cache_kv(receiver_cache())
    singles = []
    for member, ids in ((team.members[0], aligned.sharer_ids[:-1]), (team.members[1], r_ids)):
        cache = receiver_cache()
        member.fuser.fuse_cache(cache, prefill(member.sharer.model, torch.tensor([ids])))
        singles.append(cache_kv(cache))
    together = combine(base, singles)
    for layer in range(len(base)):
        for j in range(2):
            expected = base[layer][j] + (singles[0][layer][j] - base[layer][j]) + (singles[1][layer][j] - base[layer][j])
            torch.testing.assert_close(together[layer][j], expected)
            assert not torch.equal(together[layer][j], singles[0][layer][j])  # B's residual is there too


def test_a_sharer_whose_gates_are_closed_adds_nothing(team_dirs):
    """Team (A, C) with C's gates all closed answers as A alone: the combination adds residuals, it does not
    average or replace."""
    with_closed = load_team(cpu(team_dirs["receiver"]), [
        SharerSource("A", cpu(team_dirs["A"]), team_dirs["fusers"]["A"]),
        SharerSource("C", cpu(team_dirs["B"]), team_dirs["fusers"]["C"])])
    alone = Engine(pair_of(team_dirs, "A")).answer(Mode.FUSION, QUESTION, SHORT)
    both = Engine(with_closed).answer(Mode.FUSION, QUESTION, SHORT)
    assert both.token_ids == alone.token_ids
    assert not any(f.key_gate_open or f.value_gate_open for f in both.fusion if f.sharer == "C")


def test_fusion_times_each_sharers_prefill_and_fuse_and_relay_collects_every_hint(team):
    events = []
    answer = Engine(team).answer(Mode.FUSION, QUESTION, SHORT, on_event=events.append)
    ended = [(p.name, p.sharer) for p in answer.timing.phases]
    for name in ("A", "B"):
        assert ("sharer_prefill", name) in ended and ("fuse", name) in ended
    assert ("receiver_prefill", "") in ended
    assert {(e.phase, e.sharer) for e in events if isinstance(e, PhaseEvent) and e.end is not None} >= set(ended) - {
        ("decode", "")}
    assert answer.timing.fuse == pytest.approx(sum(p.end - p.start for p in answer.timing.phases if p.name == "fuse"))
    gates = answer.to_dict()["fusion"]
    assert [g["sharer"] for g in gates] == ["A", "A", "B", "B"]  # each sharer's gates, per receiver layer

    events = []
    relay = Engine(team).answer(Mode.RELAY, QUESTION, SHORT, on_event=events.append)
    assert set(relay.hints) == {"A", "B"} and all(relay.hints.values())
    assert relay.hint == " ".join(relay.hints.values())
    hint_tokens = [e for e in events if isinstance(e, TokenEvent) and e.part == "hint"]
    assert [e.sharer for e in hint_tokens] == ["A"] * 5 + ["B"] * 5
    assert [p.sharer for p in relay.timing.phases if p.name == "hint"] == ["A", "B"]


def test_modes_that_name_sharers_are_checked(team):
    engine = Engine(team)
    assert parse_mode("fusion:A+B") == (Mode.FUSION, ("A", "B"))
    with pytest.raises(ModeUnavailableError, match="No sharer named 'X'.*A, B"):
        engine.answer("fusion:X", QUESTION, SHORT)
    with pytest.raises(ModeUnavailableError, match="one sharer"):
        engine.answer("sharer:A+B", QUESTION, SHORT)
    with pytest.raises(ModeUnavailableError, match="Unknown mode"):
        engine.answer("fuse:A", QUESTION, SHORT)
    with pytest.raises(ModeUnavailableError, match="uses no sharer"):
        engine.answer("receiver:A", QUESTION, SHORT)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format_version=2), "format version 2"),
    (lambda d: d.update(surprise=1), "unknown field 'surprise'"),
    (lambda d: d["sharers"].append(dict(d["sharers"][0])), "used twice"),
    (lambda d: d["sharers"][0].update(name="a:b"), "name"),
    (lambda d: d["sharers"][0].update(fuser=3), "'fuser' must be a non-empty string"),
    (lambda d: d["sharers"][0].pop("sharer"), "'sharer' must be a non-empty string"),
    (lambda d: d.update(sharers=[]), "non-empty list"),
    (lambda d: d["sharers"][0].update(fuser="../nowhere"), "does not exist"),
])
def test_a_bad_team_manifest_is_a_typed_error_naming_the_problem(team_dirs, tmp_path, change, message):
    data = json.loads((team_dirs["team"] / TEAM_MANIFEST).read_text())
    change(data)
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / TEAM_MANIFEST).write_text(json.dumps(data).replace("../", str(team_dirs["root"]) + "/"))
    with pytest.raises(TeamFormatError, match=message):
        read_team(folder)


def test_the_manifest_reads_back_what_it_writes():
    manifest = TeamManifest("Qwen/Qwen3-0.6B", [SharerEntry("medicine", "org/med", "fuser-medicine", "lora")],
                            extra={"recipe": 1})
    assert TeamManifest.from_dict(manifest.to_dict()) == manifest


def c2c(*args):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fusers.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_compare_loads_a_team_folder_or_sharers_given_one_by_one(team, team_dirs):
    prompt = ["--prompt", "What is the capital of France?", "--max-new-tokens", "5", "--device", "cpu"]
    folder = c2c("compare", "--fuser", str(team_dirs["team"]), "--modes", "fusion,fusion:B,relay", "--json", *prompt)
    lines = [json.loads(line) for line in folder.stdout.splitlines()]
    assert [line["mode"] for line in lines] == ["fusion", "fusion:B", "relay"]
    assert lines[0]["sharers"] == ["A", "B"] and lines[1]["sharers"] == ["B"] and set(lines[2]["hints"]) == {"A", "B"}
    settings = GenerationSettings(max_new_tokens=5)
    assert lines[0]["token_ids"] == Engine(team).answer("fusion", QUESTION, settings).token_ids

    one_by_one = c2c("compare", "--receiver", str(team_dirs["receiver"]),
                     "--sharer", str(team_dirs["A"]), "--fuser", str(team_dirs["fusers"]["A"]),
                     "--sharer", str(team_dirs["B"]), "--fuser", str(team_dirs["fusers"]["B"]),
                     "--modes", "fusion,sharer:fuser_B", *prompt)
    assert "== Cache fusion (fusion) ==" in one_by_one.stdout
    assert "== Sharer alone from fuser_B (sharer:fuser_B) ==" in one_by_one.stdout
    assert "[fuser_A] sharer" in one_by_one.stderr  # each sharer named after its fuser's folder


def test_compare_refuses_a_sharer_without_its_fuser(team_dirs):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fusers.cli", "compare", "--prompt", "hi", "--device", "cpu",
                           "--sharer", str(team_dirs["A"]), "--sharer", str(team_dirs["B"]),
                           "--fuser", str(team_dirs["fusers"]["A"])], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "one --fuser per --sharer" in proc.stderr


def test_overlapped_prefills_give_the_same_answer_and_time_every_sharer(team):
    """Prefills forced to overlap (on the CPU: the sharers in a worker thread, the receiver here): the same
    tokens as one after another, and each sharer's prefill still its own phase."""
    sequential = Engine(team, prefills="sequential").answer(Mode.FUSION, QUESTION, SHORT)
    overlapped = Engine(team, prefills="overlap").answer(Mode.FUSION, QUESTION, SHORT)
    assert overlapped.token_ids == sequential.token_ids
    assert overlapped.timing.prefills == "overlapped" and sequential.timing.prefills == "sequential"
    phases = {(p.name, p.sharer): p for p in overlapped.timing.phases}
    assert {("sharer_prefill", "A"), ("sharer_prefill", "B"), ("receiver_prefill", "")} <= set(phases)
    assert all(p.end >= p.start for p in phases.values())


def test_relay_plus_fusion_reads_every_hint_over_the_cache_fused_from_every_sharer(team):
    relay = Engine(team).answer(Mode.RELAY, QUESTION, SHORT)
    hybrid = Engine(team).answer("hybrid", QUESTION, SHORT)
    assert hybrid.hints == relay.hints and hybrid.hint == relay.hint
    assert {f.sharer for f in hybrid.fusion} == {"A", "B"} and hybrid.sharers == ["A", "B"]
    # two sharer prefills each (the hint's prompt, then the answer prompt fusion reads), each its own phase
    assert [p.sharer for p in hybrid.timing.phases if p.name == "sharer_prefill"] == ["A", "B", "A", "B"]


def test_modes_naming_sharers_parse_through_the_vocabulary():
    """--modes goes through fusers.vocabulary.parse_modes: with ``sharers``, a part may name a team's sharers (kept
    as its text for fusers.team.parse_mode); without, such a part is an unknown mode; a bad head names the choices."""
    from fusers.engine import Mode
    from fusers.vocabulary import parse_modes

    assert parse_modes("relay, fusion:A+B,sharer:B", sharers=True) == [Mode.RELAY, "fusion:A+B", "sharer:B"]
    assert [parse_mode(m) for m in parse_modes("fusion:A+B,hybrid", sharers=True)] == [
        (Mode.FUSION, ("A", "B")), (Mode.HYBRID, None)]
    with pytest.raises(ValueError, match="unknown mode 'fusion:A'"):
        parse_modes("fusion:A")
    with pytest.raises(ValueError, match="naming sharers.*telepathy:A"):
        parse_modes("relay,telepathy:A", sharers=True)
