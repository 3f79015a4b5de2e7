"""Failures the app must survive: each shows the readable banner, leaves the app usable, and loses no
conversation (an export written after the failure holds every turn from before it).

Failures are made with real mechanisms: torch's global parameter-registration hook and forward hooks that
raise inside the real load and the real forward pass, a folder really deleted, a file really overwritten, a
real size limit on file writes (RLIMIT_FSIZE) while the real Hugging Face client downloads from the local hub.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from fusers.engine import Mode
from playground_helpers import fill_pair, run, short_generation

PROMPTS = ["Hello there.", "And then?"]


@pytest.fixture
def own_pair(tiny_dirs, tmp_path: Path):
    """A copy of the tiny pair this test may damage."""
    dst = tmp_path / "pair"
    shutil.copytree(tiny_dirs.root, dst)
    return type(tiny_dirs)(dst, dst / "receiver", dst / "sharer", dst / "fuser_published", dst / "fuser_ours")


def converse(window, loop, dirs) -> list[list[tuple[str, str]]]:
    """Load the pair and hold a two-turn conversation in both panes; returns each pane's (prompt, answer) turns."""
    fill_pair(window, dirs)
    short_generation(window, max_new_tokens=4, hint=2)
    assert run(loop, window.load_from_form()), window.banner.message()
    for prompt in PROMPTS:
        run(loop, window.send(prompt))
        assert all(p.current.state == "done" for p in window.panes), window.banner.message()
    return [[(t.prompt, t.answer_text()) for t in p.turns] for p in window.panes]


def assert_survived(window, loop, before, tmp_path: Path, banner: str) -> None:
    """The banner says what happened; an export holds every earlier turn; the app still answers."""
    assert window.banner.isVisible() and banner in window.banner.message(), window.banner.message()
    assert "Traceback" not in window.banner.message() and len(window.banner.message()) < 600
    exported = json.loads(Path(window.export_comparison(str(tmp_path / "after.json"))).read_text())
    for pane, turns in zip(exported["panes"], before):
        assert [(t["prompt"], t["answer"]) for t in pane["turns"][:len(turns)]] == turns
    if window.session.engine is None:  # the failure unloaded the pair: loading again must work
        assert run(loop, window.load_from_form()), window.banner.message()
    run(loop, window.send("One more question."))
    assert all(p.current.state == "done" for p in window.panes), window.banner.message()
    assert not window.banner.isVisible()


def _raise_on_parameter(error: BaseException):
    def hook(module, name, param):
        raise error
    return torch.nn.modules.module.register_module_parameter_registration_hook(hook)


@pytest.mark.parametrize("error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")],
                         ids=["MemoryError", "CUDA-OOM"])
def test_out_of_memory_while_loading(window, loop, own_pair, tmp_path, error) -> None:
    before = converse(window, loop, own_pair)
    handle = _raise_on_parameter(error)  # fires as the models' layers are built inside from_pretrained
    try:
        assert run(loop, window.load_from_form()) is False
    finally:
        handle.remove()
    assert window.session.engine is None and not window.loading
    assert_survived(window, loop, before, tmp_path, "Out of " + ("GPU" if isinstance(error, torch.OutOfMemoryError)
                                                                 else "memory"))


@pytest.mark.parametrize("error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory.")],
                         ids=["MemoryError", "CUDA-OOM"])
def test_out_of_memory_while_generating(window, loop, own_pair, tmp_path, error) -> None:
    before = converse(window, loop, own_pair)
    layer = window.session.engine.pair.receiver.model.model.layers[-1]
    calls = []

    def hook(module, args, output):
        calls.append(1)
        raise error
    handle = layer.register_forward_hook(hook)
    try:
        run(loop, window.send("This one runs out of memory."))
    finally:
        handle.remove()
    assert calls and all(p.current.state == "error" for p in window.panes)
    assert all("Out of" in p.current.error for p in window.panes)
    assert_survived(window, loop, before, tmp_path, "Out of")


def test_a_model_folder_deleted_while_its_pair_is_loaded(window, loop, own_pair, tmp_path) -> None:
    before = converse(window, loop, own_pair)
    shutil.rmtree(own_pair.sharer)
    run(loop, window.send("The sharer's folder is gone; it is still in memory."))
    assert all(p.current.state == "done" for p in window.panes), window.banner.message()
    before = [[(t.prompt, t.answer_text()) for t in p.turns] for p in window.panes]
    assert run(loop, window.load_from_form()) is False  # loading again needs the folder
    assert str(own_pair.sharer) in window.banner.message()
    window.pair_panel.sharer.source.setText(str(own_pair.receiver))  # the user points the sharer elsewhere...
    window.pair_panel.fuser.setText("")  # ...and drops the fuser made for the deleted sharer
    window.panes[1].set_mode(Mode.SHARER)
    assert_survived(window, loop, before, tmp_path, "sharer")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the garbage opens like a pickle
def test_a_fuser_file_replaced_with_garbage_between_two_loads(window, loop, own_pair, tmp_path) -> None:
    before = converse(window, loop, own_pair)
    pt = own_pair.published / "final" / "projector_1.pt"
    pt.write_bytes(b"\x80\x04garbage" * 100)
    assert run(loop, window.load_from_form()) is False
    assert str(pt) in window.banner.message() and "corrupt" in window.banner.message()
    window.pair_panel.fuser.setText(str(own_pair.ours))  # the same fuser in the other format is intact
    assert_survived(window, loop, before, tmp_path, "corrupt")


def test_a_crash_in_the_models_thread(window, loop, own_pair, tmp_path) -> None:
    """A library calling sys.exit (or a stray KeyboardInterrupt) on the models' thread must not stop the app."""
    before = converse(window, loop, own_pair)
    layer = window.session.engine.pair.sharer.model.model.layers[0]
    handle = layer.register_forward_pre_hook(lambda module, args: sys.exit("a library gave up"))
    try:
        run(loop, window.send("The models' thread dies on this one."))
    finally:
        handle.remove()
    assert any(p.current.state == "error" for p in window.panes)
    assert_survived(window, loop, before, tmp_path, "SystemExit (a library gave up)")


def test_the_hf_cache_on_a_full_disk_during_a_download(qtbot, window, loop, own_pair, tmp_path, monkeypatch) -> None:
    """A size limit on every file the process writes: the real client's download fails part-way with EFBIG."""
    before = converse(window, loop, own_pair)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hub.fake_hub import PAIR, running_hub

    from fusers import hub
    from c2c_playground.get_fusers import STATUS, FuserDownloads, GetFusersDialog
    from huggingface_hub import constants

    server = running_hub()
    server.reset()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    largest = max(len(b) for p, b in server.repos[hub.REPO_ID].files.items() if p.startswith(PAIR + "/"))

    manager = FuserDownloads()
    dialog = GetFusersDialog(window, manager=manager)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.listing_done, timeout=10_000)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (largest // 2, old_limit[1]))
    try:
        dialog.select(PAIR)
        dialog.with_models.setChecked(False)
        dialog.download_selected()
        qtbot.waitUntil(lambda: not manager.is_running(PAIR), timeout=60_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_signal)
    assert dialog.banner.isVisible() and "disk filled up" in dialog.banner.text(), dialog.banner.text()
    assert dialog._items[PAIR].text(STATUS) != "downloaded"
    # with room again, the same dialog downloads the pair (the finished files are kept)
    dialog.select(PAIR)
    dialog.download_selected()
    qtbot.waitUntil(lambda: not manager.is_running(PAIR), timeout=60_000)
    assert dialog._items[PAIR].text(STATUS) == "downloaded" and hub.local_pair_path(PAIR) is not None
    manager.cancel_all()
    dialog.close()
    exported = json.loads(Path(window.export_comparison(str(tmp_path / "after.json"))).read_text())
    for pane, turns in zip(exported["panes"], before):
        assert [(t["prompt"], t["answer"]) for t in pane["turns"]] == turns
    run(loop, window.send("One more question."))
    assert all(p.current.state == "done" for p in window.panes), window.banner.message()


def test_a_text_file_named_gguf_is_named_in_the_banner_with_no_traceback(window, loop, own_pair, tmp_path,
                                                                         caplog) -> None:
    before = converse(window, loop, own_pair)
    text = tmp_path / "model.gguf"
    text.write_text("This is not a model\n")
    window.pair_panel.sharer.source.setText(str(text))
    window.pair_panel.fuser.setText("")
    caplog.clear()
    assert run(loop, window.load_from_form()) is False
    said = window.banner.message()
    assert f"The sharer file {text} is not a GGUF file" in said and "Point the sharer to a real .gguf file" in said
    assert "converting" not in window.pair_panel.progress_text.text()  # refused before the conversion is announced
    assert [r for r in caplog.records if r.exc_info] == []  # an engine error is the banner's alone
    window.pair_panel.sharer.source.setText(str(own_pair.sharer))
    window.pair_panel.fuser.setText(str(own_pair.published))
    assert_survived(window, loop, before, tmp_path, "not a GGUF file")


def test_an_unexpected_load_error_is_one_line_on_stderr_and_its_traceback_only_with_debug(window, loop, own_pair,
                                                                                          caplog) -> None:
    import logging

    fill_pair(window, own_pair)
    for debug in (False, True):
        logging.getLogger("c2c_playground").setLevel(logging.DEBUG if debug else logging.NOTSET)  # what --debug sets
        caplog.clear()
        handle = _raise_on_parameter(RuntimeError("a library's own failure"))
        try:
            assert run(loop, window.load_from_form()) is False
        finally:
            handle.remove()
            logging.getLogger("c2c_playground").setLevel(logging.NOTSET)
        [record] = [r for r in caplog.records if r.name.startswith("c2c_playground")]
        assert "loading the pair failed: RuntimeError: a library's own failure" in record.getMessage()
        assert (record.exc_info is not None) is debug
        assert "RuntimeError: a library's own failure" in window.banner.message()
