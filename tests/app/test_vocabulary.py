"""The app's menus, options and saved-settings checks are generated from the engine's declaration
(fusers.vocabulary, GenerationSettings)."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("PySide6")

from fusers import vocabulary  # noqa: E402
from fusers.generation import GenerationSettings  # noqa: E402


def items(combo) -> list[tuple[str, object]]:
    return [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())]


def test_the_command_line_offers_the_declared_choices():
    from c2c_playground.main import build_parser

    actions = {a.dest: a for a in build_parser()._actions if isinstance(a, argparse.Action)}
    assert tuple(actions["dtype"].choices) == vocabulary.DTYPES
    assert tuple(actions["quantize"].choices) == vocabulary.QUANTIZE
    # left out, the set-up panel's values hold
    assert all(actions[name].default is None for name in ("device", "dtype", "quantize", "cuda_graphs",
                                                          "max_new_tokens", "hint_max_new_tokens"))
    modes = actions["modes"].help.replace("\n", " ")
    assert ", ".join(vocabulary.MODES) in modes and ",".join(vocabulary.DEFAULT_PANE_MODES) in modes


def test_the_set_up_menus_are_the_declared_ones(qtbot):
    from c2c_playground.widgets.setup import GenerationPanel, PairPanel

    panel = PairPanel()
    qtbot.addWidget(panel)
    for row in (panel.receiver, panel.sharer):
        assert [text for text, _ in items(row.dtype)] == list(vocabulary.DTYPES)
        assert items(row.quantize) == [(label, value) for value, label in vocabulary.QUANTIZE_LABELS.items()]
        assert [text for text, _ in items(row.device)] == list(vocabulary.DEVICES)
    generation = GenerationPanel()
    qtbot.addWidget(generation)
    assert generation.settings() == GenerationSettings()  # one default, the engine's


def test_saved_pane_layouts_are_checked_against_the_declaration(app_settings):
    assert app_settings.pane_modes() == list(vocabulary.DEFAULT_PANE_MODES)
    for n in range(vocabulary.MIN_PANES, vocabulary.MAX_PANES + 1):
        modes = list(vocabulary.MODES[:n])
        app_settings.set_pane_modes(modes)
        assert app_settings.pane_modes() == modes
    for bad in (list(vocabulary.MODES[:vocabulary.MIN_PANES - 1]), list(vocabulary.MODES) * 2, ["relay", "x"]):
        app_settings.set_pane_modes(bad)
        assert app_settings.pane_modes() == list(vocabulary.DEFAULT_PANE_MODES)
    assert app_settings.generation() == GenerationSettings()
    # a team's panes name their sharers
    app_settings.set_pane_modes(["fusion:A", "fusion:A+B", "sharer:law-2", "relay"])
    assert app_settings.pane_modes() == ["fusion:A", "fusion:A+B", "sharer:law-2", "relay"]
    for bad in (["receiver:A", "relay"], ["fusion:", "relay"], ["fusion:A B", "relay"], ["nothing:A", "relay"]):
        app_settings.set_pane_modes(bad)
        assert app_settings.pane_modes() == list(vocabulary.DEFAULT_PANE_MODES), bad


def test_a_pane_offers_every_declared_mode(window):
    pane = window.panes[0]  # in the pane's own order (text relay and cache fusion first)
    offered = {pane.mode_box.itemData(i): pane.mode_box.itemText(i) for i in range(pane.mode_box.count())}
    assert pane.mode_box.count() == len(offered)
    assert offered == {m.value: label for m, label in vocabulary.MODE_LABELS.items()}
