"""A team of sharers in the app (issue 23): the set-up panel adds and removes sharer rows, a team folder fills them,
the team loads through the engine, each pane picks the sharers its mode uses and answers as the engine does for
that mode, the team preset opens its panes, and the layout, the saved settings and the export keep the team's
modes."""

from __future__ import annotations

import json

import pytest

from c2c_playground import export, pair_flow
from c2c_playground.app_settings import AppSettings
from c2c_playground.session import LoadRequest
from c2c_playground.widgets.sharers import MAX_SHARERS
from fusers.demo.team import team_root
from fusers.engine import Engine, Mode
from fusers.errors import ModelLoadError
from fusers.generation import GenerationSettings
from fusers.pair import load_pair
from fusers.presets import TEAM_NAME, TEAM_PANES
from fusers.team import mode_names
from playground_helpers import load_agreeing, run, short_generation

BOTH = "What language do people speak in Mavar, and who founded Mavar?"


def _cpu(panel) -> None:
    for row in (panel.receiver, *panel.sharers.rows):
        row.device.setCurrentText("cpu")
        row.dtype.setCurrentText("float32")


def _load_team(window, loop) -> None:
    panel = window.pair_panel
    panel.preset.setCurrentIndex(0)
    panel.set_fuser(str(team_root()))
    _cpu(panel)
    assert load_agreeing(window, loop), window.banner.message()


@pytest.fixture(scope="module")
def team_engine():
    """The showcase team, loaded by the engine alone: what each mode should answer."""
    pair = load_pair(None, None, team_root(), defaults=None)
    yield Engine(pair)
    pair.close()


def test_sharer_rows_add_remove_and_name_themselves(window):
    panel = window.pair_panel
    sharers = panel.sharers
    assert len(sharers.rows) == 1 and not sharers.first.name.isVisibleTo(window)  # a pair's sharer needs no name
    assert not sharers.first.remove.isVisibleTo(window)  # the first sharer stays
    sharers.first.device.setCurrentText("cpu")
    second = sharers.add()
    third = sharers.add()
    assert [r.name.text() for r in sharers.rows] == ["A", "B", "C"]
    assert all(r.name.isVisibleTo(window) for r in sharers.rows)
    assert second.device.currentText() == "cpu"  # placed where the first sharer is
    assert panel.load_button.text() == "Load team"
    # each added row has every control the first sharer has, made from the same declaration
    assert [type(w) for w in second.widgets()] == [type(w) for w in sharers.first.widgets()]
    second.remove.click()
    assert sharers.rows == [sharers.first, third] and [r.name.text() for r in sharers.rows] == ["A", "C"]
    form = panel.form()
    assert [row["name"] for row in form["sharers"]] == ["C"] and form["sharer"]["name"] == "A"
    third.remove.click()
    assert len(sharers.rows) == 1 and panel.load_button.text() == "Load pair"
    while sharers.add() is not None:
        pass
    assert len(sharers.rows) == MAX_SHARERS and not sharers.add_button.isEnabled()


def test_a_team_folder_fills_the_rows_and_the_form_round_trips(window, app_settings):
    panel = window.pair_panel
    assert panel.set_fuser(str(team_root())) is None
    assert [r.name.text() for r in panel.sharers.rows] == ["A", "B"]
    assert panel.receiver.source.text().endswith("receiver")
    assert panel.sharers.rows[1].fuser.text().endswith("fuser_B")
    request = LoadRequest.from_form(panel.form())
    assert [s.name for s in request.team] == ["A", "B"] and request.fuser is None
    # saved and read back (a new window's panel gets the same rows)
    app_settings.set_pair_form(panel.form())
    again = AppSettings(app_settings.store).pair_form()
    panel.set_form({})
    assert len(panel.sharers.rows) == 1
    panel.set_form(again)
    assert [r.name.text() for r in panel.sharers.rows] == ["A", "B"]
    assert LoadRequest.from_form(panel.form()) == request


def test_bad_teams_are_said_before_loading(window, loop):
    panel = window.pair_panel
    panel.set_fuser(str(team_root()))
    panel.sharers.rows[1].name.setText("A")
    assert window.load_from_form() is None
    assert "Two sharers are named 'A'" in window.banner.message()
    with pytest.raises(ModelLoadError, match="neither a model nor a fuser"):
        LoadRequest.from_form({**panel.form(), "sharers": [{"name": "B"}]})
    panel.sharers.rows[1].name.setText("B")
    assert window.load_from_form() is not None  # the app stays usable: the fixed form loads
    run(loop, window.controller.load_task)
    assert window.session.loaded is not None and window.session.loaded.sharers == ("A", "B")


def test_a_sharer_without_a_fuser_offers_no_fusion(window, loop):
    panel = window.pair_panel
    panel.set_fuser(str(team_root()))
    panel.sharers.rows[1].fuser.clear()
    _cpu(panel)
    assert load_agreeing(window, loop), window.banner.message()
    loaded = window.session.loaded
    assert loaded.sharers == ("A", "B") and not loaded.has_fuser
    assert all(not p.mode.needs_fuser for p in window.panes)  # moved off cache fusion, and told why
    assert window.notice.message().startswith("Sharer B of the loaded team has no fuser, so no pane can use cache")
    pane = window.panes[0]
    fusion = pane.mode_box.model().item(pane.mode_box.findData(Mode.FUSION.value))
    assert not fusion.isEnabled() and "Sharer B" in fusion.toolTip()
    # asked anyway (a script, a saved layout): the engine's message, the app goes on
    pane.set_mode("fusion:B")
    short_generation(window, max_new_tokens=4, hint=4)
    run(loop, window.send("Who founded Mavar?"))
    assert pane.current.state == "error" and "B has none" in pane.current.error
    assert window.send_button.isEnabled()


def test_panes_answer_as_the_engine_does_for_their_sharers(window, loop, team_engine):
    _load_team(window, loop)
    assert window.session.loaded.sharers == ("A", "B")
    modes = ["fusion:A", "fusion", "relay", "sharer:B"]
    pair_flow.set_pane_modes(window, modes)
    assert [p.key for p in window.panes] == modes
    assert [p.label() for p in window.panes] == ["1 \u00b7 Cache fusion \u00b7 A", "2 \u00b7 Cache fusion \u00b7 A+B",
                                                 "3 \u00b7 Text relay \u00b7 A+B", "4 \u00b7 Sharer alone \u00b7 B"]
    short_generation(window, max_new_tokens=24, hint=24)
    run(loop, window.send(BOTH))
    settings = GenerationSettings(max_new_tokens=24, hint_max_new_tokens=24)
    for pane, mode in zip(window.panes, modes):
        turn = pane.current
        assert turn.state == "done", turn.error
        expected = team_engine.answer(mode, [{"role": "user", "content": BOTH}], settings)
        assert turn.result.token_ids == expected.token_ids, (mode, turn.answer_text(), expected.text)
        assert turn.result.sharers == expected.sharers
    fusion_a, team, relay, sharer_b = window.panes
    assert fusion_a.current.took_part() == ("A",) and team.current.took_part() == ("A", "B")
    assert "Cache fusion \u00b7 A+B" in team.transcript.toPlainText()
    # relay shows each sharer's hint on its own line, after its name
    hints = relay.current.result.hints
    assert list(hints) == ["A", "B"]
    assert relay.hint_text.toPlainText() == "\n".join(f"{n}: {h}" for n, h in hints.items())
    assert relay.hint_toggle.text().startswith("Sharers' hints")
    # phases name their sharer, one prefill and one fuse for each
    phases = [(ph.name, ph.sharer) for ph in team.current.result.timing.phases if ph.sharer]
    assert ("sharer_prefill", "A") in phases and ("fuse", "B") in phases
    # the per-layer view (the last fusion pane's, the team's): every receiver layer once per sharer
    points = window.fuser_plot.points
    assert sorted(pt.receiver_layer for pt in points if pt.sharer == "A") == \
        sorted(pt.receiver_layer for pt in points if pt.sharer == "B") and {pt.sharer for pt in points} == {"A", "B"}


def test_the_sharer_picker_builds_the_mode(window, loop):
    _load_team(window, loop)
    pane = window.panes[0]
    pane.set_mode(Mode.FUSION)
    picker = pane.picker
    assert pane.sharer_row.isVisibleTo(window) and pane.key == "fusion"
    changed = []
    pane.mode_changed.connect(lambda *a: changed.append(pane.key))
    actions = {a.text(): a for a in picker.menu().actions()}
    actions["B"].trigger()  # uncheck B: A alone
    assert pane.key == "fusion:A" and changed == ["fusion:A"]
    actions["A"].trigger()  # the last one stays checked
    assert pane.key == "fusion:A"
    actions["B"].trigger()  # both: the whole team
    assert pane.key == "fusion"
    pane.mode_box.setCurrentIndex(pane.mode_box.findData(Mode.SHARER.value))
    assert pane.key == "sharer:A"  # sharer alone takes one
    actions["B"].trigger()
    assert pane.key == "sharer:B"
    pane.mode_box.setCurrentIndex(pane.mode_box.findData(Mode.RECEIVER.value))
    assert pane.key == "receiver" and not pane.sharer_row.isVisibleTo(window)
    assert set(p.key for p in window.panes) <= set(mode_names(window.session.engine.pair))


def test_the_team_preset_opens_its_panes_and_examples(window, loop):
    presets = run(loop, window.refresh_presets())
    team = next(p for p in presets if p.name == TEAM_NAME)
    panel = window.pair_panel
    panel.preset.setCurrentIndex(panel.preset.findData(TEAM_NAME))
    panel.preset.activated.emit(panel.preset.currentIndex())  # as a user's pick
    assert [p.key for p in window.panes] == list(TEAM_PANES)
    assert [r.name.text() for r in panel.sharers.rows] == ["A", "B"] and panel.team_folder == team.fuser
    tip = panel.preset.toolTip()  # what the preset loads: every sharer with its fuser
    assert "sharer A: " in tip and "sharer B: " in tip and "fuser_B" in tip, tip
    _cpu(panel)
    assert run(loop, window.load_from_form()), window.banner.message()
    assert [p.key for p in window.panes] == list(TEAM_PANES)
    questions = [b.text() for b in window.example_buttons]
    assert len(questions) == 3 and any(BOTH in q and "both" in q for q in questions), questions


def test_team_modes_survive_saved_settings_and_export(window, loop, app_settings, tmp_path):
    from c2c_playground import window_state
    from c2c_playground.window import MainWindow

    _load_team(window, loop)
    pair_flow.set_pane_modes(window, ["fusion:B", "relay"])
    short_generation(window, max_new_tokens=8, hint=8)
    run(loop, window.send("Who founded Mavar?"))
    data = export.comparison(window.panes, {}, False, window.session.loaded.lines, window.pair_panel.form())
    first, second = data["panes"]
    assert first["mode"] == "fusion:B" and first["turns"][0]["mode"] == "fusion:B"
    assert first["turns"][0]["sharers"] == ["B"] and first["label"] == "Cache fusion \u00b7 B"
    assert set(second["turns"][0]["hints"]) == {"A", "B"}
    path = export.write(tmp_path / "team.json", data)
    assert json.loads(path.read_text())["panes"][0]["mode"] == "fusion:B"
    markdown = export.to_markdown(data)
    assert "Cache fusion \u00b7 B" in markdown and "Sharers' hints:" in markdown
    assert all(f"{n}: {h}" in markdown for n, h in second["turns"][0]["hints"].items())

    window_state.save(window)
    assert app_settings.pane_modes() == ["fusion:B", "relay"]
    again = MainWindow(AppSettings(app_settings.store), persist=False)
    try:
        assert [p.key for p in again.panes] == ["fusion:B", "relay"]  # kept until a team with B loads
        assert [r.name.text() for r in again.pair_panel.sharers.rows] == ["A", "B"]
    finally:
        again.close()
        again.deleteLater()


def test_charts_name_each_sharer():
    from c2c_playground.widgets.charts import phase_color, phase_label, sharer_order
    from c2c_playground.widgets.fuser_plot import FuserPlot
    from fusers.fuser import LayerFusion
    from fusers.timing import Phase

    spans = [Phase("sharer_prefill", 0.0, 0.1, "A"), Phase("sharer_prefill", 0.1, 0.2, "B"),
             Phase("receiver_prefill", 0.2, 0.3), Phase("fuse", 0.3, 0.4, "A"), Phase("fuse", 0.4, 0.5, "B")]
    order = sharer_order(spans)
    assert order == {"A": 0, "B": 1}
    assert [phase_label(s) for s in spans] == ["prefill A", "prefill B", "receiver prefill", "fuse A", "fuse B"]
    assert phase_color(spans[0], order) != phase_color(spans[1], order)  # each sharer's phases stand apart
    assert phase_color(spans[0], order) == phase_color(Phase("sharer_prefill", 0, 1), {})  # a pair's as before
    plot = FuserPlot()
    pair = [LayerFusion(i, i, True, i % 2 == 0, 0.1, 0.2) for i in range(4)]
    plot.set_points(pair, "pair")
    assert plot.gate_labels() == ["K gate", "V gate"]
    assert plot.summary().endswith("4 of 4 layers take the sharer's cache")
    team = [LayerFusion(i, i, name == "A", False, 0.1, 0.2, name) for name in ("A", "B") for i in range(4)]
    plot.set_points(team, "team")
    assert plot.gate_labels() == ["A K gate", "A V gate", "B K gate", "B V gate"]
    assert plot.summary().endswith("A 4 of 4, B 0 of 4") and plot.minimumHeight() > 200
    plot.grab()  # paints with every sharer's rows


@pytest.mark.parametrize("pair,modes", [(TEAM_NAME, None), (str(team_root()), "fusion:B,relay")])
def test_pair_team_loads_headless_with_its_panes(pair, modes, tmp_path, monkeypatch):
    """``--pair team`` (the preset: its four panes) and ``--pair TEAM_FOLDER`` (its rows from team.json, the panes
    --modes names) load the team and answer in every pane."""
    from test_headless import playground

    monkeypatch.setenv("C2C_PLAYGROUND_REPORT", "1")
    shot = tmp_path / "team.png"
    proc = playground("--pair", pair, "--device", "cpu", *(["--modes", modes] if modes else []), "--prompt", BOTH,
                      "--max-new-tokens", "6", "--hint-max-new-tokens", "6", "--screenshot", str(shot), "--exit",
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    finished = next(line for line in proc.stderr.splitlines() if "report: run finished" in line)
    keys = modes.split(",") if modes else list(TEAM_PANES)
    for number, key in enumerate(keys, start=1):
        assert f"pane {number} {key} done" in finished, finished
    assert "Traceback" not in proc.stderr and shot.exists()
