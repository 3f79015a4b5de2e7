"""Presets: the published pairs from the spec, and a downloaded pair that loads and answers in the app."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fake hub shared with the hub tests
from hub.fake_hub import PAIR, fake_hub, go_offline, hf_home  # noqa: E402,F401 - fixtures

from fusers import hub  # noqa: E402
from fusers.presets import LOCAL_KINDS, find_preset, list_presets  # noqa: E402
from playground_helpers import run, short_generation  # noqa: E402


def test_every_published_pair_is_a_preset_with_its_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    presets = {p.name: p for p in list_presets() if p.kind not in LOCAL_KINDS}
    assert set(presets) == set(hub.KNOWN_PAIRS)
    for name, (receiver, sharer) in hub.KNOWN_PAIRS.items():
        p = presets[name]
        assert (p.receiver, p.sharer, p.fuser, p.status) == (receiver, sharer, name, "absent")
        assert p.label.endswith("(not downloaded)")
    assert find_preset("QWEN3_0.6B+QWEN2.5_0.5B_FUSER").name == "qwen3_0.6b+qwen2.5_0.5b_Fuser"
    assert find_preset("no such pair") is None


def test_a_preset_not_yet_downloaded_says_where_to_get_it(window, loop, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    run(loop, window.refresh_presets())
    assert window.pair_panel.choose_preset(PAIR) is not None
    assert window.load_from_form() is None  # nothing to load: say so at once
    assert "not downloaded yet" in window.banner.message() and "Get fusers" in window.banner.message()


def test_a_downloaded_pair_is_a_ready_preset_that_loads_and_answers(window, loop, fake_hub, monkeypatch):
    from huggingface_hub import constants

    hub.download_pair(PAIR, with_models=True)
    go_offline(monkeypatch)
    # transformers reads the cache folder from huggingface_hub's constants, fixed when it was imported
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache_dir()))
    presets = run(loop, window.refresh_presets())
    downloaded = [p for p in presets if p.kind == "downloaded"]
    assert [p.name for p in downloaded] == [PAIR] and downloaded[0].ready
    # ready pairs first (after the local ones: the demo pair, the real pair and the specialist pair)
    assert presets.index(downloaded[0]) == sum(p.kind in LOCAL_KINDS for p in presets)
    panel = window.pair_panel
    labels = [panel.preset.itemText(i) for i in range(panel.preset.count())]
    assert PAIR in labels and f"{PAIR} (not downloaded)" not in labels

    preset = panel.choose_preset(PAIR)
    assert preset is not None and panel.fuser.text() == PAIR and panel.receiver.source.text() == preset.receiver
    for row in (panel.receiver, panel.sharer):
        row.device.setCurrentText("cpu")
    assert run(loop, window.load_from_form()), window.banner.message()
    short_generation(window, max_new_tokens=3, hint=3)
    run(loop, window.send("Hello"))
    assert all(p.current.state == "done" for p in window.panes)
