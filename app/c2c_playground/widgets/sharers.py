"""The set-up panel's sharers: one for a pair, more for a team, each row made from the same declaration (its name,
model, adapter, placement and fuser folder); "Add sharer" adds one, each added row can be removed."""

from __future__ import annotations

import string
from typing import Any, Sequence

from PySide6.QtCore import QRegularExpression, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QMenu,
                               QPushButton, QToolButton, QVBoxLayout, QWidget)

from fusers.vocabulary import DEVICES, DTYPES, QUANTIZE_LABELS, SHARER_NAME, Mode


# What a team's sharers do in each mode, before a pane's choice of them
SHARER_WORDS = {Mode.SHARER: "answered by", Mode.RELAY: "hints from", Mode.FUSION: "fused from",
                Mode.HYBRID: "hints and caches from"}
MAX_SHARERS = 6  # a team of more fits the engine, not a laptop's memory nor the panes' sharer menus
SPACING = (6, 5)  # the set-up grids' horizontal and vertical spacing: the receiver's rows line up with the sharers'


class ModelRow:
    """Source and placement of one model (receiver or sharer)."""

    def __init__(self, role: str, placeholder: str):
        self.role = role
        self.source = QLineEdit()
        self.source.setPlaceholderText(placeholder)
        self.source.setToolTip(f"The {role}: a Hub id (Qwen/Qwen3-0.6B), a local model folder or a .gguf file")
        self.browse = QToolButton()
        self.browse.setText("\u2026")
        self.browse.setToolTip(f"Choose a local {role} folder or GGUF file")
        self.browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.browse)
        self.browse_folder = menu.addAction("Model folder\u2026", self._browse)
        self.browse_gguf = menu.addAction("GGUF file\u2026", self._browse_gguf)
        self.browse.setMenu(menu)
        self.adapter = QLineEdit()
        self.adapter.setPlaceholderText("LoRA adapter folder (optional)")
        self.adapter.setToolTip(f"A PEFT (LoRA) adapter folder to put on the {role}. The {role} box may also hold an "
                                "adapter folder alone: its adapter_config.json names the base model.")
        self.adapter_browse = QToolButton()
        self.adapter_browse.setText("\u2026")
        self.adapter_browse.setToolTip(f"Choose a LoRA adapter folder for the {role}")
        self.adapter_browse.clicked.connect(self._browse_adapter)
        self.device = QComboBox()
        self.device.setEditable(True)  # cuda:1 and friends
        self.device.addItems(DEVICES)
        self.device.setToolTip("Device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
        self.dtype = QComboBox()
        self.dtype.addItems(DTYPES)
        self.dtype.setToolTip("Weights and cache dtype: auto is float32 on the CPU, bfloat16 on a GPU")
        self.quantize = QComboBox()
        for value, label in QUANTIZE_LABELS.items():
            self.quantize.addItem(label, value)
        self.quantize.setToolTip("Quantize the weights with bitsandbytes (4-bit is NF4)")
        for combo in (self.device, self.dtype, self.quantize):  # each item's whole name: they are short
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.source, f"Choose the {self.role} folder", self.source.text())
        if folder:
            self.source.setText(folder)

    def _browse_adapter(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.adapter, f"Choose the {self.role}'s adapter folder",
                                                  self.adapter.text())
        if folder:
            self.adapter.setText(folder)

    def _browse_gguf(self) -> None:
        # LM Studio, Ollama, GPT4All and Jan keep their models as GGUF files
        path, _ = QFileDialog.getOpenFileName(self.source, f"Choose the {self.role} GGUF file", self.source.text(),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.source.setText(path)

    def widgets(self) -> list[QWidget]:
        return [self.source, self.browse, self.adapter, self.adapter_browse, self.device, self.dtype, self.quantize]

    def get(self) -> dict[str, str]:
        return {"source": self.source.text().strip(), "adapter": self.adapter.text().strip(),
                "device": self.device.currentText().strip() or "auto", "dtype": self.dtype.currentText(),
                "quantize": self.quantize.currentData()}

    def put(self, data: dict[str, Any]) -> None:
        self.source.setText(str(data.get("source", "")))
        self.adapter.setText(str(data.get("adapter", "")))
        self.device.setCurrentText(str(data.get("device", "auto")) or "auto")
        if str(data.get("dtype", "auto")) in DTYPES:
            self.dtype.setCurrentText(str(data.get("dtype", "auto")))
        index = self.quantize.findData(str(data.get("quantize", "none")))
        self.quantize.setCurrentIndex(max(index, 0))


def label_column(label: QLabel) -> QLabel:
    """A row's label, as wide as the widest ("Receiver"), so rows in separate grids line up."""
    label.setMinimumWidth(label.fontMetrics().horizontalAdvance("Receiver") + 4)
    return label


def note(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("sectionNote")
    return label


def place(grid: QGridLayout, row: int, model: ModelRow, label: QLabel, lead: Sequence[QWidget] = (),
          tail: Sequence[QWidget] = (), heads: bool = False) -> int:
    """Lay out one model's rows from ``row`` on: its label, ``lead`` (a sharer's name), its source and browse button
    and ``tail`` (a remove button); its adapter; its placement across the whole width, under a header naming its
    columns where ``heads`` (the first model's: it names every model's). Returns the next free row."""
    grid.addWidget(label_column(label), row, 0)
    source = QHBoxLayout()
    source.setSpacing(4)
    for widget in lead:
        source.addWidget(widget)
    source.addWidget(model.source, 1)
    grid.addLayout(source, row, 1)
    ends = QHBoxLayout()
    ends.setSpacing(2)
    ends.addWidget(model.browse)
    for widget in tail:
        ends.addWidget(widget)
    grid.addLayout(ends, row, 2)
    row += 1
    grid.addWidget(note("adapter"), row, 0)
    grid.addWidget(model.adapter, row, 1)
    grid.addWidget(model.adapter_browse, row, 2)
    row += 1
    if heads:
        names = QHBoxLayout()
        names.setSpacing(4)
        for text, stretch in (("device", 3), ("dtype", 3), ("quantization", 4)):
            names.addWidget(note(text), stretch)
        grid.addLayout(names, row, 0, 1, 3)
        row += 1
    placement = QHBoxLayout()
    placement.setSpacing(4)
    placement.addWidget(model.device, 3)
    placement.addWidget(model.dtype, 3)
    placement.addWidget(model.quantize, 4)
    grid.addLayout(placement, row, 0, 1, 3)  # the whole width: three whole combo boxes in a narrow dock
    return row + 1


def grid_layout(parent: QWidget | None = None) -> QGridLayout:
    grid = QGridLayout(parent)
    grid.setHorizontalSpacing(SPACING[0])
    grid.setVerticalSpacing(SPACING[1])
    grid.setColumnStretch(1, 1)
    return grid


class SharerRow(ModelRow):
    """One sharer: a model row with its name (a team's panes pick sharers by it) and its fuser folder."""

    def __init__(self) -> None:
        super().__init__("sharer", "Hub id or folder (default: the fuser's)")
        self.name = QLineEdit()
        self.name.setPlaceholderText("name")
        self.name.setToolTip("The sharer's name in a team: panes pick their sharers by it (letters, digits, _ - .)")
        self.name.setValidator(QRegularExpressionValidator(QRegularExpression(SHARER_NAME.pattern), self.name))
        self.name.setMaximumWidth(self.name.fontMetrics().horizontalAdvance("law_12") + 14)  # the model's box: more
        self.fuser = QLineEdit()
        self.fuser.setPlaceholderText("Fuser folder, team folder or downloaded pair")
        self.fuser.setToolTip("Cache fusion needs a fuser: a published pair folder, one of ours, or a downloaded "
                              "pair name; a team folder fills in every sharer. Without one, the other modes still "
                              "work.")
        self.fuser_browse = QToolButton()
        self.fuser_browse.setText("\u2026")
        self.fuser_browse.setToolTip("Choose a fuser folder (or a team folder)")
        self.fuser_browse.clicked.connect(self._browse_fuser)
        self.remove = QToolButton()
        self.remove.setText("\u2715")
        self.remove.setAutoRaise(True)
        self.remove.setToolTip("Remove this sharer from the team")
        self.label = QLabel("Sharer")
        self.box = QWidget()
        grid = grid_layout(self.box)
        grid.setContentsMargins(0, 0, 0, 0)
        row = place(grid, 0, self, self.label, lead=[self.name], tail=[self.remove])
        grid.addWidget(note("fuser"), row, 0)
        grid.addWidget(self.fuser, row, 1)
        grid.addWidget(self.fuser_browse, row, 2)

    def _browse_fuser(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.box, "Choose the fuser folder", self.fuser.text())
        if folder:
            self.fuser.setText(folder)
            self.fuser.editingFinished.emit()  # a team folder fills in the rows

    def widgets(self) -> list[QWidget]:
        return [self.name, *super().widgets(), self.fuser, self.fuser_browse]

    def get(self) -> dict[str, str]:
        return {"name": self.name.text().strip(), **super().get(), "fuser": self.fuser.text().strip()}

    def put(self, data: dict[str, Any]) -> None:
        super().put(data)
        self.name.setText(str(data.get("name", "")))
        self.fuser.setText(str(data.get("fuser", "")))


class SharersBox(QWidget):
    """Every sharer row, the first always there; more make a team."""

    changed = Signal()  # a row was added or removed
    fuser_edited = Signal(str)  # a fuser box was left (or filled by browsing): its text

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows: list[SharerRow] = []
        self.column = QVBoxLayout()
        self.column.setContentsMargins(0, 0, 0, 0)
        self.column.setSpacing(8)
        self.add_button = QPushButton("+ Add sharer")
        self.add_button.setToolTip("Fuse the receiver from several sharers at once (a team), each with its own "
                                   "fuser; each pane then picks which sharers its cache fusion uses")
        self.add_button.clicked.connect(lambda: self.add())
        adding = QHBoxLayout()
        adding.addWidget(self.add_button)
        adding.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(5)
        layout.addLayout(self.column)
        layout.addLayout(adding)
        self.add()

    @property
    def first(self) -> SharerRow:
        return self.rows[0]

    def add(self, data: dict[str, Any] | None = None) -> SharerRow | None:
        """A new sharer row (None: the team is as large as it gets); placed as the first sharer is, so a team on
        one device stays there, and named with the first free letter unless ``data`` names it."""
        if len(self.rows) >= MAX_SHARERS:
            return None
        row = SharerRow()
        if self.rows:
            first = self.first.get()
            row.put({key: first[key] for key in ("device", "dtype", "quantize")})
            if not self.first.name.text().strip():
                self.first.name.setText(self._free_name())
            row.name.setText(self._free_name())
        if data is not None:
            row.put(data)
        row.remove.clicked.connect(lambda: self.remove(row))
        row.fuser.editingFinished.connect(lambda: self.fuser_edited.emit(row.fuser.text().strip()))
        self.rows.append(row)
        self.column.addWidget(row.box)
        row.box.show()  # at once, not when the layout gets to it: a test (or a user's next click) sees it now
        self._sync()
        return row

    def remove(self, row: SharerRow) -> None:
        if row not in self.rows[1:]:  # the first sharer stays: a pair needs one
            return
        self.rows.remove(row)
        self.column.removeWidget(row.box)
        row.box.hide()
        row.box.setParent(None)
        row.box.deleteLater()
        self._sync()

    def set_rows(self, parts: Sequence[dict[str, Any]]) -> None:
        """One row for each of ``parts``, as each says (a field left out is empty); none: the first row alone, as
        it is."""
        while len(self.rows) > 1:
            self.remove(self.rows[-1])
        if parts:
            self.first.put(parts[0])
        for part in parts[1:]:
            self.add({"name": "", **part})
        self._sync()

    def extra(self) -> list[dict[str, str]]:
        """The rows after the first: a team's other sharers ([] for a pair)."""
        return [row.get() for row in self.rows[1:]]

    def _free_name(self) -> str:
        used = {row.name.text().strip() for row in self.rows}
        return next(c for c in string.ascii_uppercase if c not in used)

    def _sync(self) -> None:
        team = len(self.rows) > 1
        for i, row in enumerate(self.rows):
            row.name.setVisible(team)  # a pair's one sharer needs no name
            row.remove.setVisible(i > 0)
            row.label.setText("Sharer" if not team else f"Sharer {i + 1}")
        self.add_button.setEnabled(len(self.rows) < MAX_SHARERS)
        self.changed.emit()

    def set_enabled(self, enabled: bool) -> None:
        self.add_button.setEnabled(enabled and len(self.rows) < MAX_SHARERS)
        for row in self.rows[1:]:
            row.remove.setEnabled(enabled)


class SharerPicker(QToolButton):
    """A pane's choice of a team's sharers: checkable names in a menu (every one: the whole team). Sharer alone
    takes exactly one. The pane hides it for a plain pair. A choice naming sharers the loaded pair lacks (a saved
    layout, a preset's panes before its team loads) is kept, and counts once a team that has them loads."""

    picked = Signal()  # the user changed the choice

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sharerPicker")
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")  # the text ends in an arrow
        self.setMenu(QMenu(self))
        self.team: tuple[str, ...] = ()
        self.known = False  # no pair loaded yet: the choice as it was asked
        self.single = False
        self.wanted: tuple[str, ...] | None = None  # as asked (None: every sharer)

    def set_team(self, names: Sequence[str]) -> None:
        """The loaded team's sharers (() for a pair)."""
        self.team, self.known = tuple(names), True
        self.menu().clear()
        for name in self.team:
            action = self.menu().addAction(name)
            action.setCheckable(True)
            action.triggered.connect(lambda _=False, name=name: self._toggled(name))
        self._show()

    def set_single(self, single: bool) -> None:
        self.single = single
        self._show()

    def chosen(self) -> tuple[str, ...] | None:
        """The sharers picked, in the team's order; None: every one (a pair's: its one sharer)."""
        if not self.known:
            return self.wanted
        if not self.team:
            return None
        names = tuple(n for n in self.team if self.wanted is None or n in self.wanted)
        if self.single:
            return names[:1] or self.team[:1]
        return None if not names or len(names) == len(self.team) else names

    def set_chosen(self, names: Sequence[str] | None) -> None:
        self.wanted = None if names is None else tuple(names)
        self._show()

    def _show(self) -> None:
        shown = self.chosen() or self.team
        for action in self.menu().actions():
            action.setChecked(action.text() in shown)
        text = "+".join(shown)
        self.setText((text if len(text) <= 14 else text[:13] + "\u2026") + " \u25be")
        self.setToolTip(("The sharer that answers alone" if self.single else
                         "The sharers this pane's mode uses (every one checked: the whole team)")
                        + (f": {', '.join(shown)}" if shown else ""))

    def _toggled(self, name: str) -> None:
        if self.single:
            names: tuple[str, ...] = (name,)
        else:
            names = tuple(a.text() for a in self.menu().actions() if a.isChecked())
            if not names:  # at least one: the last one cannot be unchecked
                names = (name,)
        self.set_chosen(names)
        self.picked.emit()


class SharerLine(QWidget):
    """A pane's line under its mode: what a team's sharers do in it ("fused from") and the pane's choice of them.
    Shown only with a team loaded, for a mode that uses a sharer."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.picker = SharerPicker()
        self.words = QLabel("sharers")
        self.words.setObjectName("paneState")
        line = QHBoxLayout(self)
        line.setContentsMargins(0, 0, 0, 0)
        line.setSpacing(4)
        line.addWidget(self.words)
        line.addWidget(self.picker)
        line.addStretch(1)
        self.hide()

    def sync(self, mode: Mode) -> None:
        self.picker.set_single(mode is Mode.SHARER)
        self.words.setText(SHARER_WORDS.get(mode, "sharers"))
        self.setVisible(bool(self.picker.team) and mode is not Mode.RECEIVER)
