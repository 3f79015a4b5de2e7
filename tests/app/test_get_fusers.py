"""The "Get fusers" dialog against the local hub server: listing, download with progress, cancel, remove, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fake hub shared with the hub tests
from hub.fake_hub import (  # noqa: E402
    EXTRA_PAIR,
    GATED_PAIR,
    PAIR,
    FakeHub,
    fake_hub,  # noqa: F401 - fixture
    hf_home,  # noqa: F401 - fixture
)

from fusers import hub  # noqa: E402

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from c2c_playground.get_fusers import (  # noqa: E402
    NAME,
    PROGRESS,
    SIZE,
    STATUS,
    FuserDownloads,
    GetFusersDialog,
)


@pytest.fixture
def manager(qapp, loop) -> FuserDownloads:
    made = FuserDownloads()
    yield made
    made.cancel_all()


HOLD_AT = 4 * 8192  # bytes of a file the fake hub sends before it holds (the client reads 8 KiB chunks)


def open_dialog(qtbot, manager: FuserDownloads) -> GetFusersDialog:
    dialog = GetFusersDialog(manager=manager)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.listing_done, timeout=60_000)
    return dialog


def held_with_the_rest_fetched(fake_hub: FakeHub, held: str) -> bool:
    """The fake hub holds ``held`` and every other file of PAIR is in the cache, whole."""
    snapshots = hub.cache_dir() / "models--nics-efc--C2C_Fuser" / "snapshots"
    others = {p for p in fake_hub.repos[hub.REPO_ID].files if p.startswith(PAIR + "/")} - {held}
    return fake_hub.faults.gate.held.is_set() and snapshots.is_dir() and any(
        all((snapshot / p).is_file() for p in others) for snapshot in snapshots.iterdir())


def row(dialog: GetFusersDialog, name: str):
    return dialog._items[name]


def test_lists_pairs_downloads_with_progress_and_survives_closing(qtbot, fake_hub: FakeHub, manager,
                                                                   tmp_path: Path) -> None:
    dialog = open_dialog(qtbot, manager)
    assert dialog.table.topLevelItemCount() == 3  # the Hub's listing replaced the cache's known pairs
    assert fake_hub.url in dialog.source.text()
    for name in (PAIR, GATED_PAIR, EXTRA_PAIR):
        item = row(dialog, name)
        assert item.text(STATUS) == "not downloaded"
        size = sum(len(b) for p, b in fake_hub.repos[hub.REPO_ID].files.items() if p.startswith(name + "/"))
        assert item.text(SIZE) == hub.format_bytes(size)

    target = f"{PAIR}/final/projector_1.pt"  # an LFS file of a few hundred kB
    key = (hub.REPO_ID, target)
    assert len(fake_hub.repos[hub.REPO_ID].files[target]) > HOLD_AT
    fake_hub.faults.hold[key] = HOLD_AT  # the server stops in the middle of this file until the test releases it
    gate = fake_hub.faults.gate
    events: list[hub.DownloadProgress] = []
    manager.progressed.connect(lambda name, p: events.append(p))
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))

    dialog.select(PAIR)
    dialog.with_models.setChecked(True)
    try:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
        assert manager.is_running(PAIR) and dialog.cancel_button.isEnabled() and not dialog.remove_button.isEnabled()
        # held mid-file, every other file of the fuser fetched: the dialog shows the bytes so far (the held
        # file's first chunk is always reported)
        qtbot.waitUntil(lambda: held_with_the_rest_fetched(fake_hub, target)
                        and any(f.path == target and f.done > 0 for f in manager.progress(PAIR).active),
                        timeout=60_000)
        timer.start(1)
        qtbot.waitUntil(lambda: len(ticks) >= 20, timeout=60_000)  # the event loop runs while the download waits
        timer.stop()
        shot = tmp_path / "get-fusers.png"
        assert dialog.grab().save(str(shot)) and shot.stat().st_size > 0
        bar = dialog.table.itemWidget(row(dialog, PAIR), PROGRESS)
        latest = manager.progress(PAIR)
        assert 0 < latest.fraction < 1 and events[-1] is latest
        assert 0 < bar.value() < bar.maximum() and row(dialog, PAIR).text(STATUS) == "downloading", (
            bar.value(), bar.maximum(), row(dialog, PAIR).text(STATUS), latest)
        assert latest.describe() in dialog.detail.text()
        assert hub.format_bytes(latest.done) in dialog.detail.text()
        assert gate.held.is_set() and manager.is_running(PAIR)
    finally:
        gate.release()

    dialog.close()  # the download runs on without the dialog
    qtbot.waitUntil(lambda: not manager.is_running(PAIR), timeout=60_000)
    assert hub.local_pair_path(PAIR) is not None
    seen = [p.fraction for p in events]
    assert seen == sorted(seen) and seen[-1] == 1.0

    again = open_dialog(qtbot, manager)
    assert row(again, PAIR).text(STATUS) == "downloaded"
    bar = again.table.itemWidget(row(again, PAIR), PROGRESS)
    assert bar.value() == bar.maximum()
    again.select(PAIR)
    assert not again.download_button.isEnabled() and again.remove_button.isEnabled()


def test_cancel_then_remove(qtbot, fake_hub: FakeHub, manager, monkeypatch: pytest.MonkeyPatch) -> None:
    dialog = open_dialog(qtbot, manager)
    target = f"{PAIR}/final/projector_1.pt"
    fake_hub.faults.hold[(hub.REPO_ID, target)] = HOLD_AT
    gate = fake_hub.faults.gate
    dialog.select(PAIR)
    try:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
        qtbot.waitUntil(lambda: held_with_the_rest_fetched(fake_hub, target), timeout=60_000)
        qtbot.mouseClick(dialog.cancel_button, qtbot_button())
        assert "cancelling" in dialog.detail.text() and not dialog.cancel_button.isEnabled()
    finally:
        gate.release()  # the next bytes reach the client, which sees the cancel there
    with qtbot.waitSignal(manager.ended, timeout=60_000) as ended:
        pass
    assert ended.args == [PAIR, "cancelled"]
    assert "cancelled" in dialog.detail.text()
    assert row(dialog, PAIR).text(STATUS) == "partly downloaded"
    assert hub.local_pair_path(PAIR) is None
    assert not list((hub.cache_dir()).rglob("*.incomplete"))
    bar = dialog.table.itemWidget(row(dialog, PAIR), PROGRESS)
    assert 0 < bar.value() < bar.maximum()

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    dialog.select(PAIR)
    assert dialog.remove_button.isEnabled()
    with qtbot.waitSignal(manager.pairs_changed, timeout=60_000):
        qtbot.mouseClick(dialog.remove_button, qtbot_button())
    assert row(dialog, PAIR).text(STATUS) == "not downloaded" and "freed" in dialog.detail.text()
    assert dialog.table.itemWidget(row(dialog, PAIR), PROGRESS).value() == 0


def test_a_failed_download_shows_the_readable_error(qtbot, fake_hub: FakeHub, manager) -> None:
    dialog = open_dialog(qtbot, manager)
    dialog.select(GATED_PAIR)
    dialog.with_models.setChecked(True)  # its sharer is gated and no token is set
    with qtbot.waitSignal(manager.ended, timeout=60_000) as ended:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
    assert ended.args == [GATED_PAIR, "failed"]
    assert dialog.banner.isVisible() and "hf auth login" in dialog.banner.text()
    assert row(dialog, GATED_PAIR).text(STATUS) == "failed"
    # The dialog stays usable: the next download works.
    dialog.select(EXTRA_PAIR)
    dialog.with_models.setChecked(False)
    with qtbot.waitSignal(manager.ended, timeout=60_000) as ended:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
    assert ended.args == [EXTRA_PAIR, "done"] and not dialog.banner.isVisible()
    assert row(dialog, EXTRA_PAIR).text(STATUS) == "downloaded"
    assert row(dialog, EXTRA_PAIR).text(NAME) == EXTRA_PAIR


def qtbot_button():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_an_unreachable_hub_is_said_as_such_in_the_dialog(qtbot, fake_hub: FakeHub, manager,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (here: HF_ENDPOINT on a port nothing listens on), the banner says the Hub cannot be reached and
    what to do, not that a connection was lost."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    dialog = open_dialog(qtbot, manager)  # listed from the cache and the known pairs
    dialog.select(PAIR)
    with qtbot.waitSignal(manager.ended, timeout=60_000) as ended:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
    assert ended.args == [PAIR, "failed"]
    text = dialog.banner.text()
    assert dialog.banner.isVisible() and f"Cannot reach the Hub at {closed}" in text, text
    assert "Lost the connection" not in text and "HF_ENDPOINT" in text and "local fuser folder" in text
