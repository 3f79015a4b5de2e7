"""A pair named by its fuser alone: the fuser's config says which receiver and sharer to load."""

from __future__ import annotations

from playground_helpers import run
from test_headless import playground


def test_empty_model_boxes_take_the_fusers_receiver_and_sharer(window, loop, tiny_dirs):
    panel = window.pair_panel
    panel.preset.setCurrentIndex(0)
    panel.receiver.source.clear()
    panel.sharer.source.clear()
    panel.fuser.setText(str(tiny_dirs.ours))
    for row in (panel.receiver, panel.sharer):
        row.device.setCurrentText("cpu")
    assert run(loop, window.load_from_form()), window.banner.message()
    loaded = window.session.loaded
    assert loaded.has_fuser
    assert loaded.receiver.endswith("/receiver") and loaded.sharer.endswith("/sharer")
    assert not window.banner.message()


def test_pair_folder_and_fuser_folder_load_alone_headless(tiny_dirs, tmp_path):
    for option, folder in (("--pair", tiny_dirs.published), ("--fuser", tiny_dirs.ours)):
        shot = tmp_path / f"{option[2:]}.png"
        proc = playground(option, str(folder), "--device", "cpu", "--prompt", "Why is the sky blue?",
                          "--max-new-tokens", "3", "--hint-max-new-tokens", "3", "--screenshot", str(shot),
                          "--exit", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and shot.exists()


def test_the_model_pickers_take_folders_and_gguf_files(window):
    for row in (window.pair_panel.receiver, window.pair_panel.sharer):
        assert [a.text() for a in row.browse.menu().actions()] == ["Model folder\u2026", "GGUF file\u2026"]
        assert ".gguf" in row.source.toolTip()
