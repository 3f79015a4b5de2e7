"""The "Get fusers" dialog: the published pairs with size and status; download (with models), cancel, remove.

Downloads belong to :class:`FuserDownloads`, one per application, not to the dialog: closing the dialog leaves
them running, and opening it again shows their progress. The blocking work runs on background threads through
:class:`~c2c_playground.bridge.BackgroundJob`; its progress and outcome arrive on the Qt thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from fusers import hub
from fusers.errors import C2CError, Cancelled, describe

from .bridge import BackgroundJob

COLUMNS = ("Pair", "Receiver", "Sharer", "Size", "Status", "Progress")
NAME, RECEIVER, SHARER, SIZE, STATUS, PROGRESS = range(len(COLUMNS))
STATUS_WORDS = {"absent": "not downloaded", "partial": "partly downloaded", "complete": "downloaded"}
BAR_STEPS = 1000


class FuserDownloads(QObject):
    """The app's running downloads, one per pair. They outlive any dialog; everything here runs on the Qt thread."""

    progressed = Signal(str, object)  # pair name, hub.DownloadProgress
    ended = Signal(str, str)  # pair name, outcome: "done" | "cancelled" | "failed"
    pairs_changed = Signal()  # a pair was downloaded or removed: presets may refresh

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: dict[str, BackgroundJob] = {}
        self._progress: dict[str, hub.DownloadProgress] = {}
        self.errors: dict[str, str] = {}  # the last failure of each pair, until it is tried again
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.cancel_all)

    def start(self, name: str, with_models: bool = False) -> None:
        if self.is_running(name):
            return
        self.errors.pop(name, None)
        self._progress.pop(name, None)
        job = BackgroundJob(
            lambda progress, cancel: hub.download_pair(name, with_models=with_models, progress=progress,
                                                       cancel=cancel),
            on_progress=lambda p: self._on_progress(name, p),
            on_done=lambda path: self._on_end(name, "done", None),
            on_error=lambda exc: self._on_end(name, "cancelled" if isinstance(exc, Cancelled) else "failed", exc),
            name=f"c2c-download-{name}",
        )
        self._jobs[name] = job
        job.start()

    def cancel(self, name: str) -> None:
        job = self._jobs.get(name)
        if job is not None:
            job.cancel()

    def cancel_all(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel()

    def is_running(self, name: str) -> bool:
        return name in self._jobs

    def running(self) -> list[str]:
        return sorted(self._jobs)

    def progress(self, name: str) -> hub.DownloadProgress | None:
        return self._progress.get(name)

    def job(self, name: str) -> BackgroundJob | None:
        return self._jobs.get(name)

    def remove(self, name: str) -> int:
        """Delete a downloaded pair (not while it downloads); returns the bytes freed."""
        if self.is_running(name):
            raise hub.DownloadError(f"{name} is downloading; cancel the download before removing it.")
        freed = hub.remove_pair(name)
        self.pairs_changed.emit()
        return freed

    def _on_progress(self, name: str, progress: hub.DownloadProgress) -> None:
        self._progress[name] = progress
        self.progressed.emit(name, progress)

    def _on_end(self, name: str, outcome: str, exc: BaseException | None) -> None:
        self._jobs.pop(name, None)
        if outcome == "failed" and exc is not None:
            self.errors[name] = describe(exc)
        self.ended.emit(name, outcome)
        if outcome == "done":
            self.pairs_changed.emit()


def downloads() -> FuserDownloads:
    """The application's :class:`FuserDownloads` (made on first use, owned by the QApplication)."""
    app = QApplication.instance()
    if app is None:
        raise RuntimeError("downloads() needs a QApplication")
    found = app.findChild(FuserDownloads, "c2c-fuser-downloads")
    if found is None:
        found = FuserDownloads(app)
        found.setObjectName("c2c-fuser-downloads")
    return found


class GetFusersDialog(QDialog):
    """Lists the pairs of ``nics-efc/C2C_Fuser`` and downloads, cancels and removes them."""

    def __init__(self, parent: QWidget | None = None, manager: FuserDownloads | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get fusers")
        self.setObjectName("get-fusers")
        self.downloads = manager or downloads()
        self._items: dict[str, QTreeWidgetItem] = {}
        self._bars: dict[str, QProgressBar] = {}
        self._listings: dict[str, hub.PairListing] = {}
        self._listing_job: BackgroundJob | None = None

        self.source = QLabel()
        self.source.setWordWrap(True)
        self.table = QTreeWidget()
        self.table.setHeaderLabels(COLUMNS)
        self.table.setRootIsDecorated(False)
        self.table.setUniformRowHeights(True)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.ResizeToContents)
        for column in (RECEIVER, SHARER):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        for column in (SIZE, STATUS):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(PROGRESS, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)

        self.with_models = QCheckBox("Also download the receiver and sharer models")
        self.with_models.setToolTip("The models the pair's config.json names, into the same Hugging Face cache.")
        self.with_models.toggled.connect(self._update_buttons)
        self.detail = QLabel(" ")
        self.detail.setObjectName("download-detail")
        self.banner = QLabel()
        self.banner.setObjectName("download-error")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.setStyleSheet("QLabel#download-error { background: #fde2df; color: #7a1f14; border: 1px solid "
                                  "#f0b4ab; border-radius: 4px; padding: 6px; }")
        self.banner.hide()

        self.refresh_button = QPushButton("Refresh")
        self.download_button = QPushButton("Download")
        self.cancel_button = QPushButton("Cancel download")
        self.remove_button = QPushButton("Remove")
        self.close_button = QPushButton("Close")
        self.download_button.setDefault(True)
        self.refresh_button.clicked.connect(self.refresh)
        self.download_button.clicked.connect(self.download_selected)
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.close_button.clicked.connect(self.close)

        buttons = QHBoxLayout()
        for button in (self.refresh_button, self.download_button, self.cancel_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.source)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.with_models)
        layout.addWidget(self.detail)
        layout.addWidget(self.banner)
        layout.addLayout(buttons)
        self.resize(980, 420)

        self.downloads.progressed.connect(self._on_progress)
        self.downloads.ended.connect(self._on_ended)
        self._show(hub.list_pairs(offline=True))  # the cache answers at once; the Hub's listing follows
        self.refresh()

    # -- listing --
    def refresh(self) -> None:
        """List the pairs again from the Hub (in the background; the cache's listing stays meanwhile)."""
        if self._listing_job is not None and self._listing_job.running:
            return
        self.refresh_button.setEnabled(False)
        self.source.setText(f"Published pairs in {hub.REPO_ID}: asking {hub.endpoint()}…")
        self._listing_job = BackgroundJob(lambda progress, cancel: hub.list_pairs(),
                                          on_done=self._listed, on_error=self._listing_failed,
                                          name="c2c-list-fusers")
        self._listing_job.start()

    @property
    def listing_done(self) -> bool:
        return self._listing_job is None or not self._listing_job.running

    def _listed(self, pairs: list[hub.PairListing]) -> None:
        self.refresh_button.setEnabled(True)
        if any(p.online for p in pairs):  # the Hub's listing replaces the cache's guesses
            names = {p.name for p in pairs}
            for name in [n for n in self._items if n not in names and not self.downloads.is_running(n)]:
                item = self._items.pop(name)
                self._bars.pop(name, None)
                self._listings.pop(name, None)
                self.table.takeTopLevelItem(self.table.indexOfTopLevelItem(item))
        self._show(pairs)

    def _listing_failed(self, exc: BaseException) -> None:
        self.refresh_button.setEnabled(True)
        self.source.setText(f"Published pairs in {hub.REPO_ID}: listed from the local cache.")
        self._error(describe(exc))

    def _show(self, pairs: list[hub.PairListing]) -> None:
        online = any(p.online for p in pairs)
        where = f"from {hub.endpoint()}" if online else "from the local cache (offline)"
        self.source.setText(f"Published pairs in {hub.REPO_ID}, {where}. Downloads go to {hub.cache_dir()}.")
        selected = self.selected()
        for pair in pairs:
            self._listings[pair.name] = pair
            item = self._items.get(pair.name)
            if item is None:
                item = QTreeWidgetItem(self.table)
                bar = QProgressBar()
                bar.setRange(0, BAR_STEPS)
                bar.setTextVisible(True)
                self.table.setItemWidget(item, PROGRESS, bar)
                self._items[pair.name], self._bars[pair.name] = item, bar
            item.setText(NAME, pair.name)
            item.setText(RECEIVER, pair.receiver)
            item.setText(SHARER, pair.sharer)
            item.setText(SIZE, hub.format_bytes(pair.size_bytes))
            item.setTextAlignment(SIZE, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self._show_state(pair.name)
        for name in self.downloads.running():
            self._show_state(name)
        if selected in self._items:
            self._items[selected].setSelected(True)
        elif self.table.topLevelItemCount() and not self.table.selectedItems():
            self.table.topLevelItem(0).setSelected(True)
        self._update_buttons()

    def _show_state(self, name: str) -> None:
        item, bar = self._items.get(name), self._bars.get(name)
        if item is None or bar is None:
            return
        listing = self._listings.get(name)
        progress = self.downloads.progress(name)
        if self.downloads.is_running(name):
            if progress is None:
                item.setText(STATUS, "starting…")
                bar.setRange(0, 0)  # busy until the first bytes are counted
                return
            bar.setRange(0, BAR_STEPS)
            bar.setValue(int(BAR_STEPS * progress.fraction))
            bar.setFormat(f"{progress.stage} %p%")
            item.setText(STATUS, "downloading")
            return
        bar.setRange(0, BAR_STEPS)
        status = listing.status if listing else "absent"
        if name in self.downloads.errors:
            item.setText(STATUS, "failed")
            item.setToolTip(STATUS, self.downloads.errors[name])
        else:
            item.setText(STATUS, STATUS_WORDS.get(status, status))
            item.setToolTip(STATUS, "")
        size = listing.size_bytes if listing else None
        local = listing.local_bytes if listing else 0
        done = 1.0 if status == "complete" else (local / size if size else 0.0)
        bar.setValue(int(BAR_STEPS * done))
        bar.setFormat("%p%")

    # -- actions --
    def selected(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].text(NAME) if items else None

    def select(self, name: str) -> None:
        self.table.clearSelection()
        self._items[name].setSelected(True)

    def download_selected(self) -> None:
        name = self.selected()
        if name is None or self.downloads.is_running(name):
            return
        self._clear_error()
        self.downloads.start(name, with_models=self.with_models.isChecked())
        self.detail.setText(f"{name}: starting…")
        self._show_state(name)
        self._update_buttons()

    def cancel_selected(self) -> None:
        name = self.selected()
        if name is not None and self.downloads.is_running(name):
            self.cancel_button.setEnabled(False)  # until the download has stopped and cleaned up
            self.detail.setText(f"{name}: cancelling…")
            self.downloads.cancel(name)

    def remove_selected(self) -> None:
        name = self.selected()
        if name is None or self.downloads.is_running(name):
            return
        listing = self._listings.get(name)
        size = hub.format_bytes(listing.local_bytes) if listing and listing.local_bytes else "its files"
        answer = QMessageBox.question(
            self, "Remove pair", f"Delete {name} ({size}) from the Hugging Face cache?\n"
            "Its receiver and sharer models stay.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            freed = self.downloads.remove(name)
        except (C2CError, OSError) as exc:
            self._error(describe(exc))
            return
        self.detail.setText(f"Removed {name}, freed {hub.format_bytes(freed)}.")
        self._reload_local()

    # -- download events (Qt thread) --
    def _on_progress(self, name: str, progress: hub.DownloadProgress) -> None:
        self._show_state(name)
        if name == self.selected() or len(self.downloads.running()) == 1:
            current = Path(progress.file).name if progress.file else progress.repo_id
            self.detail.setText(f"{name}: {progress.describe()} — {current} ({progress.files_done}/"
                                f"{progress.files_total} files)")

    def _on_ended(self, name: str, outcome: str) -> None:
        if outcome == "done":
            self.detail.setText(f"{name}: downloaded. Pick it among the presets, or use `--fuser {name}`.")
        elif outcome == "cancelled":
            self.detail.setText(f"{name}: cancelled; finished files stay and are not fetched again.")
        else:
            self.detail.setText(f"{name}: failed.")
            self._error(self.downloads.errors.get(name, "The download failed."))
        self._reload_local()

    def _reload_local(self) -> None:
        """Statuses from the cache (no network): cheap enough to run after every download and removal."""
        by_name = {p.name: p for p in hub.list_pairs(offline=True)}
        for name, old in list(self._listings.items()):
            new = by_name.get(name)
            if new is not None:  # keep the Hub's sizes and names; take the local state from the cache
                self._listings[name] = hub.PairListing(old.name, old.receiver, old.sharer, old.size_bytes, old.files,
                                                       new.status, old.online, new.local_bytes)
            self._show_state(name)
        self._update_buttons()

    def _update_buttons(self) -> None:
        name = self.selected()
        running = name is not None and self.downloads.is_running(name)
        listing = self._listings.get(name) if name else None
        self.download_button.setEnabled(name is not None and not running
                                        and (listing is None or listing.status != "complete"
                                             or self.with_models.isChecked()))
        self.cancel_button.setEnabled(running)
        self.remove_button.setEnabled(name is not None and not running and listing is not None
                                      and (listing.status != "absent" or listing.local_bytes > 0))

    def _error(self, message: str) -> None:
        self.banner.setText(message)
        self.banner.show()

    def _clear_error(self) -> None:
        self.banner.clear()
        self.banner.hide()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        # Opened again while downloads ran on: catch up with them and with the cache.
        self._reload_local()
        super().showEvent(event)
