"""The "Get fusers" dialog against the local hub server: listing, download with progress, cancel, remove, errors."""

from __future__ import annotations

import sys
import time
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


def open_dialog(qtbot, manager: FuserDownloads) -> GetFusersDialog:
    dialog = GetFusersDialog(manager=manager)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.listing_done, timeout=10_000)
    return dialog


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

    fake_hub.faults.chunk_delay = 0.02  # a slow link: the download takes a few seconds
    seen: list[float] = []
    manager.progressed.connect(lambda name, p: seen.append(p.fraction))
    gaps: list[float] = []
    last = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)

    dialog.select(PAIR)
    dialog.with_models.setChecked(True)
    qtbot.mouseClick(dialog.download_button, qtbot_button())
    assert manager.is_running(PAIR) and dialog.cancel_button.isEnabled() and not dialog.remove_button.isEnabled()
    qtbot.waitUntil(lambda: len(seen) > 3 and 0.2 < seen[-1] < 0.9, timeout=20_000)
    shot = tmp_path / "get-fusers.png"
    assert dialog.grab().save(str(shot)) and shot.stat().st_size > 0
    last[0] = time.monotonic()  # the screenshot blocks the loop on purpose; it is not a stall of the download
    bar = dialog.table.itemWidget(row(dialog, PAIR), PROGRESS)
    assert 0 < bar.value() < bar.maximum() and row(dialog, PAIR).text(STATUS) == "downloading", (
        bar.value(), bar.maximum(), row(dialog, PAIR).text(STATUS), seen[-3:], manager.is_running(PAIR))
    assert "left" in dialog.detail.text() or "/s" in dialog.detail.text()

    dialog.close()  # the download runs on without the dialog
    qtbot.waitUntil(lambda: not manager.is_running(PAIR), timeout=60_000)
    timer.stop()
    assert hub.local_pair_path(PAIR) is not None
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f} s during the download"

    again = open_dialog(qtbot, manager)
    assert row(again, PAIR).text(STATUS) == "downloaded"
    bar = again.table.itemWidget(row(again, PAIR), PROGRESS)
    assert bar.value() == bar.maximum()
    again.select(PAIR)
    assert not again.download_button.isEnabled() and again.remove_button.isEnabled()


def test_cancel_then_remove(qtbot, fake_hub: FakeHub, manager, monkeypatch: pytest.MonkeyPatch) -> None:
    dialog = open_dialog(qtbot, manager)
    fake_hub.faults.chunk_delay = 0.02
    progressed: list[float] = []
    manager.progressed.connect(lambda name, p: progressed.append(p.fraction))
    dialog.select(PAIR)
    qtbot.mouseClick(dialog.download_button, qtbot_button())
    qtbot.waitUntil(lambda: bool(progressed) and progressed[-1] > 0.3, timeout=20_000)

    with qtbot.waitSignal(manager.ended, timeout=20_000) as ended:
        qtbot.mouseClick(dialog.cancel_button, qtbot_button())
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
    with qtbot.waitSignal(manager.pairs_changed, timeout=5_000):
        qtbot.mouseClick(dialog.remove_button, qtbot_button())
    assert row(dialog, PAIR).text(STATUS) == "not downloaded" and "freed" in dialog.detail.text()
    assert dialog.table.itemWidget(row(dialog, PAIR), PROGRESS).value() == 0


def test_a_failed_download_shows_the_readable_error(qtbot, fake_hub: FakeHub, manager) -> None:
    dialog = open_dialog(qtbot, manager)
    dialog.select(GATED_PAIR)
    dialog.with_models.setChecked(True)  # its sharer is gated and no token is set
    with qtbot.waitSignal(manager.ended, timeout=20_000) as ended:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
    assert ended.args == [GATED_PAIR, "failed"]
    assert dialog.banner.isVisible() and "hf auth login" in dialog.banner.text()
    assert row(dialog, GATED_PAIR).text(STATUS) == "failed"
    # The dialog stays usable: the next download works.
    dialog.select(EXTRA_PAIR)
    dialog.with_models.setChecked(False)
    with qtbot.waitSignal(manager.ended, timeout=20_000) as ended:
        qtbot.mouseClick(dialog.download_button, qtbot_button())
    assert ended.args == [EXTRA_PAIR, "done"] and not dialog.banner.isVisible()
    assert row(dialog, EXTRA_PAIR).text(STATUS) == "downloaded"
    assert row(dialog, EXTRA_PAIR).text(NAME) == EXTRA_PAIR


def qtbot_button():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton
