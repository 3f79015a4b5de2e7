"""The left-hand panels: which pair to load and where, and how answers decode."""

from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSpinBox, QStyle, QStyleOptionComboBox, QStylePainter,
                               QVBoxLayout, QWidget)

from fusers.generation import GenerationSettings
from fusers.presets import Preset

from .sharers import ModelRow, SharersBox, grid_layout, place

CUSTOM = "Custom (fill in below)"


def compact(combo: QComboBox, chars: int) -> None:
    """Let a combo box shrink to ``chars`` characters (its list still shows whole items), so the set-up
    panel fits a narrow dock instead of clipping."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)


class ElidedComboBox(QComboBox):
    """A combo box whose closed face elides a name too long for it ("qwen3_0.6b+qwen2…"), whole in its list and
    its tooltip, instead of cutting it off: preset names run to 50 characters, more than a set-up dock is wide."""

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self.shown_text()
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)

    def shown_text(self) -> str:
        """The text its face shows at its width (elided or whole)."""
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        # from the left: the ends tell presets apart ("...(real models, offline)", "...specialist (offline)") and
        # say their status ("...(not downloaded)"); the receiver and sharer they start with are often alike
        return self.fontMetrics().elidedText(self.currentText(), Qt.TextElideMode.ElideLeft, field.width())


class PairPanel(QGroupBox):
    load_requested = Signal()
    preset_picked = Signal(object)  # the user picked this Preset
    unload_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Pair", parent)
        self.presets: list[Preset] = []
        self.loaded = False
        self.preset = ElidedComboBox()
        self.preset.addItem(CUSTOM, "")
        self.preset.setToolTip("A published pair (download it with Pair \u25b8 Get fusers\u2026), the demo pair, "
                               "or your own models below")
        self.preset.activated.connect(self._preset_picked)
        self.preset.currentIndexChanged.connect(self._show_needs)
        compact(self.preset, 10)
        self.preset_note = QLabel()  # what the chosen preset needs (an install, a download) or lacks (a fuser)
        self.preset_note.setObjectName("sectionNote")
        self.preset_note.setWordWrap(True)
        self.preset_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preset_note.hide()
        self._wanted = ""  # the preset the saved form names, chosen once the presets are listed
        self.receiver = ModelRow("receiver", "Hub id or folder (default: the fuser's)")
        self.sharers = SharersBox()  # the first sharer's row, and a team's others
        self.sharers.fuser_edited.connect(self._fuser_edited)
        self.sharer = self.sharers.first
        self.fuser = self.sharer.fuser  # the first sharer's fuser: a pair's fuser, or a team folder
        self.team_folder = ""  # the team folder the rows were filled from, if they were
        self.sharers.changed.connect(self._sharers_changed)

        grid = grid_layout()
        row = 0
        grid.addWidget(QLabel("Preset"), row, 0)
        row += 1
        grid.addWidget(self.preset, row, 0, 1, 3)  # the whole width: presets' names are long (the face elides)
        row += 1
        grid.addWidget(self.preset_note, row, 0, 1, 3)
        row += 1
        row = place(grid, row, self.receiver, QLabel("Receiver"), heads=True)
        grid.addWidget(self.sharers, row, 0, 1, 3)
        row += 1
        self.cuda_graphs = QCheckBox("CUDA graphs")
        self.cuda_graphs.setChecked(True)
        self.cuda_graphs.setToolTip("On a CUDA GPU, decode on static caches captured in CUDA graphs (captured while "
                                    "the pair loads); off: transformers' generate. Other devices always use generate.")
        grid.addWidget(self.cuda_graphs, row, 1)
        self.compile = QCheckBox("Compile")
        self.compile.setChecked(True)
        self.compile.setToolTip("With CUDA graphs: compile each decode step with torch.compile before capturing it "
                                "(about twice the decode speed; tens of seconds more to load, once)")
        self.cuda_graphs.toggled.connect(self.compile.setEnabled)
        grid.addWidget(self.compile, row, 2)

        self.load_button = QPushButton("Load pair")
        self.load_button.setObjectName("primary")
        self.load_button.setToolTip("Load the receiver, sharer and fuser in the background")
        self.load_button.clicked.connect(self.load_requested)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Free the models' memory")
        self.unload_button.clicked.connect(self.unload_requested)
        self.unload_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button, 1)
        buttons.addWidget(self.unload_button)

        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress_text = QLabel("")
        self.progress_text.setObjectName("sectionNote")
        self.progress_text.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop loading; what was loaded is freed")
        self.cancel_button.clicked.connect(self.cancel_requested)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        self.progress_box = QWidget()
        pl = QVBoxLayout(self.progress_box)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(2)
        pl.addLayout(progress_row)
        pl.addWidget(self.progress_text)
        self.progress_box.hide()

        self.status = QLabel("Nothing loaded. Pick a preset or fill in a receiver, a sharer and a fuser, then load.")
        self.status.setObjectName("sectionNote")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        layout.addLayout(grid)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_box)
        layout.addWidget(self.status)

    # a team folder given as a fuser: its team.json fills in the receiver and every sharer
    def set_fuser(self, text: str) -> None:
        """The first sharer's fuser box holds ``text``; a team folder fills in every sharer."""
        self.team_folder = ""
        self.fuser.setText(text)
        self._fuser_edited(text)

    def _fuser_edited(self, text: str) -> None:
        from fusers.team_folder import is_team

        if is_team(text):
            self.expand_team(text)

    def expand_team(self, folder: str) -> bool:
        """Fill the receiver and one row per sharer from the team folder's ``team.json`` (False, said in the status
        line, when it does not read)."""
        from fusers.errors import C2CError
        from fusers.team_folder import read_team

        try:
            manifest = read_team(folder)
        except C2CError as exc:
            self.status.setText(str(exc))
            return False
        self.receiver.put({**self.receiver.get(), "source": manifest.receiver, "adapter": manifest.receiver_adapter})
        place = {k: v for k, v in self.sharer.get().items() if k in ("device", "dtype", "quantize")}
        self.sharers.set_rows([{**place, "name": s.name, "source": s.sharer, "adapter": s.adapter, "fuser": s.fuser}
                               for s in manifest.sharers])
        self.team_folder = str(folder)
        return True

    def _sharers_changed(self) -> None:
        team = len(self.sharers.rows) > 1
        self.load_button.setText("Load team" if team else "Load pair")
        self.load_button.setToolTip("Load the receiver, every sharer and their fusers in the background" if team else
                                    "Load the receiver, sharer and fuser in the background")

    # presets
    def set_presets(self, presets: Sequence[Preset]) -> None:
        current = self.preset.currentData() or self._wanted
        self.presets = list(presets)
        self.preset.blockSignals(True)
        self.preset.clear()
        self.preset.addItem(CUSTOM, "")
        for p in self.presets:
            self.preset.addItem(p.label, p.name)
            self.preset.setItemData(self.preset.count() - 1, p.describe(), Qt.ItemDataRole.ToolTipRole)
        index = self.preset.findData(current)
        wanted = self.presets[index - 1] if index > 0 else None
        given = self.team_folder or self.fuser.text().strip()  # a team's rows came from its folder
        if wanted is not None and current == self._wanted and given != wanted.fuser:
            index = 0  # the saved form was edited after the preset was chosen: it is the user's own pair now
        self._wanted = ""
        self.preset.setCurrentIndex(max(index, 0))
        self.preset.blockSignals(False)
        self._show_needs()
        self.preset.view().setMinimumWidth(self.preset.view().sizeHintForColumn(0) + 24)  # whole names in the list

    def chosen_preset(self) -> Preset | None:
        name = self.preset.currentData()
        return next((p for p in self.presets if p.name == name), None) if name else None

    def _show_needs(self) -> None:
        preset = self.chosen_preset()
        needs = preset.needs if preset is not None else ""
        self.preset_note.setText(needs)
        self.preset_note.setVisible(bool(needs))
        self.preset.setToolTip(self.preset.itemData(self.preset.currentIndex(), Qt.ItemDataRole.ToolTipRole)
                               or "A published pair (download it with Pair \u25b8 Get fusers\u2026), the demo pair, "
                                  "or your own models below")

    def choose_preset(self, name: str) -> Preset | None:
        for p in self.presets:
            if p.name == name:
                self.preset.setCurrentIndex(self.preset.findData(p.name))
                self._fill(p)
                return p
        return None

    def _preset_picked(self, index: int) -> None:
        name = self.preset.itemData(index)
        for p in self.presets:
            if p.name == name:
                self._fill(p)
                self.preset_picked.emit(p)

    def _fill(self, preset: Preset) -> None:
        self.sharers.set_rows([])  # a preset is a pair, or a team folder that names its sharers
        self.receiver.source.setText(preset.receiver)
        self.sharer.source.setText(preset.sharer)
        for row in (self.receiver, self.sharer):
            row.adapter.clear()  # a preset's models are whole: an adapter is its source folder
        self.set_fuser(preset.fuser)

    # the form
    def form(self) -> dict[str, Any]:
        """The models to load: ``sharer`` and ``fuser`` the first sharer's, ``sharers`` a team's other rows."""
        return {"preset": self.preset.currentData() or "", "receiver": self.receiver.get(),
                "sharer": {k: v for k, v in self.sharer.get().items() if k != "fuser"},
                "fuser": self.fuser.text().strip(), "sharers": self.sharers.extra(), "team": self.team_folder,
                "cuda_graphs": self.cuda_graphs.isChecked(), "compile": self.compile.isChecked()}

    def set_form(self, form: dict[str, Any]) -> None:
        self.receiver.put(form.get("receiver") or {})
        extra = [part for part in form.get("sharers") or [] if isinstance(part, dict)]
        self.sharers.set_rows([{**(form.get("sharer") or {}), "fuser": str(form.get("fuser", ""))}, *extra])
        self.team_folder = str(form.get("team") or "")
        self.cuda_graphs.setChecked(form.get("cuda_graphs") is not False)
        self.compile.setChecked(form.get("compile") is not False)
        index = self.preset.findData(form.get("preset") or "")
        self.preset.setCurrentIndex(max(index, 0))
        if index < 0:  # the presets are not listed yet (the first start): chosen when they are
            self._wanted = str(form.get("preset") or "")

    # state
    def set_loading(self, loading: bool) -> None:
        self.progress_box.setVisible(loading)
        self.load_button.setEnabled(not loading)
        self.cancel_button.setEnabled(loading)
        self.cancel_button.setText("Cancel")
        if loading:
            self.progress.setRange(0, 0)
            self.progress_text.setText("Starting\u2026")

    PROGRESS_UNITS = 1000  # per step: a step that counts its work (a GGUF file's tensors) moves the bar within it

    def set_progress(self, step: int, total: int, message: str, done: int = 0, of: int = 0) -> None:
        """Step ``step`` (1-based) of ``total`` has begun; ``done`` of ``of`` is how far it is, where it counts."""
        total = max(total, 1)
        within = min(done / of, 1.0) if of > 0 else 0.0
        self.progress.setRange(0, total * self.PROGRESS_UNITS)
        self.progress.setValue(round((min(step, total) - 1 + within) * self.PROGRESS_UNITS))
        self.progress_text.setText(f"Step {step} of {total}: {message}")

    def set_cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling\u2026")
        self.progress_text.setText("Cancelling after the model being read\u2026")

    def set_loaded(self, lines: list[str] | None) -> None:
        self.loaded = bool(lines)
        self.unload_button.setEnabled(self.loaded)
        if lines:
            self.status.setText("\n".join(lines))
        else:
            self.status.setText("Nothing loaded. Pick a preset or fill in a receiver, a sharer and a fuser, "
                                "then load.")

    def set_busy(self, busy: bool) -> None:
        """A run is going: keep the models where they are."""
        self.load_button.setEnabled(not busy)
        self.unload_button.setEnabled(not busy and self.loaded)
        self.sharers.set_enabled(not busy)


class GenerationPanel(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Generation", parent)
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 32768)
        self.max_new_tokens.setToolTip("Most tokens in each answer")
        self.hint_tokens = QSpinBox()
        self.hint_tokens.setRange(1, 4096)
        self.hint_tokens.setToolTip("Most tokens in the sharer's hint (text relay)")
        self.decoding = QComboBox()
        self.decoding.addItems(["Greedy", "Sampling"])
        self.decoding.setToolTip("Greedy decoding is deterministic; sampling uses the settings below")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 5.0)
        self.temperature.setSingleStep(0.05)
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 100000)
        self.top_k.setSpecialValueText("all")
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("Seed for sampling; 'random' draws a new one each run")
        self.thinking = QCheckBox("Thinking block (Qwen3)")
        self.thinking.setToolTip("Let chat templates that have one (Qwen3's) open a thinking block before the answer")
        self.ignore_eos = QCheckBox("Always write max new tokens")
        self.ignore_eos.setToolTip("Decode past the end of the answer, so every pane times the same number of "
                                   "tokens (for timing comparisons)")
        self.run_mode = QComboBox()
        self.run_mode.addItem("One after another", False)
        self.run_mode.addItem("Concurrently", True)
        self.run_mode.setToolTip("One after another keeps each pane's timing honest; concurrent runs share the "
                                 "machine, so their timings overlap")
        self.repeat = QSpinBox()
        self.repeat.setRange(1, 20)
        self.repeat.setSuffix(" \u00d7")
        self.repeat.setToolTip("Answer each prompt this many times, the panes taking turns, and chart each pane's "
                               "median time with its fastest and slowest run: a busy moment moves one run, not the "
                               "comparison")

        grid = QGridLayout(self)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(5)
        rows = [("Max new tokens", self.max_new_tokens), ("Hint tokens", self.hint_tokens),
                ("Decoding", self.decoding), ("Temperature", self.temperature), ("Top-p", self.top_p),
                ("Top-k", self.top_k), ("Seed", self.seed), ("Run panes", self.run_mode), ("Repeat runs", self.repeat)]
        for i, (label, widget) in enumerate(rows):
            grid.addWidget(QLabel(label), i, 0)
            grid.addWidget(widget, i, 1)
        grid.addWidget(self.thinking, len(rows), 0, 1, 2)
        grid.addWidget(self.ignore_eos, len(rows) + 1, 0, 1, 2)
        grid.setColumnStretch(1, 1)
        for w in (self.max_new_tokens, self.hint_tokens, self.top_k, self.seed):
            w.valueChanged.connect(self.changed)
        for w in (self.temperature, self.top_p):
            w.valueChanged.connect(self.changed)
        self.decoding.currentIndexChanged.connect(self._sampling_toggled)
        self.run_mode.currentIndexChanged.connect(self.changed)
        self.thinking.toggled.connect(self.changed)
        self.ignore_eos.toggled.connect(self.changed)
        self.set_settings(GenerationSettings())

    def _sampling_toggled(self) -> None:
        sampling = self.decoding.currentIndex() == 1
        for w in (self.temperature, self.top_p, self.top_k, self.seed):
            w.setEnabled(sampling)
        self.changed.emit()

    def settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens.value(), hint_max_new_tokens=self.hint_tokens.value(),
            do_sample=self.decoding.currentIndex() == 1, temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4), top_k=self.top_k.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(), thinking=self.thinking.isChecked(),
            ignore_eos=self.ignore_eos.isChecked(),
        )

    def set_settings(self, s: GenerationSettings) -> None:
        # values beyond a box's range (a script's, an old file's) are clamped: a 64-bit int overflows Qt's spin box
        def put(box: Any, value: float) -> None:
            box.setValue(min(max(value, box.minimum()), box.maximum()))

        put(self.max_new_tokens, s.max_new_tokens)
        put(self.hint_tokens, s.hint_max_new_tokens)
        self.decoding.setCurrentIndex(1 if s.do_sample else 0)
        put(self.temperature, s.temperature)
        put(self.top_p, s.top_p)
        put(self.top_k, s.top_k)
        put(self.seed, -1 if s.seed is None else s.seed)
        self.thinking.setChecked(s.thinking)
        self.ignore_eos.setChecked(s.ignore_eos)
        self._sampling_toggled()

    def repeats(self) -> int:
        """How many times a send answers its prompt (timing comparisons); 1: once."""
        return self.repeat.value()

    def concurrent(self) -> bool:
        return bool(self.run_mode.currentData())

    def set_concurrent(self, value: bool) -> None:
        self.run_mode.setCurrentIndex(1 if value else 0)
