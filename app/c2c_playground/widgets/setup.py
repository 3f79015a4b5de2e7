"""The left-hand panels: which pair to load and where, and how answers decode."""

from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout,
                               QLabel, QLineEdit, QMenu, QProgressBar, QPushButton, QSpinBox, QToolButton, QVBoxLayout,
                               QWidget)

from fusers.generation import GenerationSettings
from fusers.presets import Preset
from fusers.vocabulary import DEVICES, DTYPES, QUANTIZE_LABELS

CUSTOM = "Custom (fill in below)"


def compact(combo: QComboBox, chars: int) -> None:
    """Let a combo box shrink to ``chars`` characters (its list still shows whole items), so the set-up
    panel fits a narrow dock instead of clipping."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)


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
        self.quantize.setToolTip("Quantize the weights with bitsandbytes")
        for combo in (self.device, self.dtype, self.quantize):
            compact(combo, 3)

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


class PairPanel(QGroupBox):
    load_requested = Signal()
    unload_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Pair", parent)
        self.presets: list[Preset] = []
        self.loaded = False
        self.preset = QComboBox()
        self.preset.addItem(CUSTOM, "")
        self.preset.setToolTip("A published pair (download it with Pair \u25b8 Get fusers\u2026), the demo pair, "
                               "or your own models below")
        self.preset.activated.connect(self._preset_picked)
        compact(self.preset, 10)
        self.receiver = ModelRow("receiver", "Hub id or folder (default: the fuser's)")
        self.sharer = ModelRow("sharer", "Hub id or folder (default: the fuser's)")
        self.fuser = QLineEdit()
        self.fuser.setPlaceholderText("Fuser folder or downloaded pair (optional)")
        self.fuser.setToolTip("Cache fusion needs a fuser: a published pair folder, one of ours, or a downloaded "
                              "pair name. Without one, the other modes still work.")
        fuser_browse = QToolButton()
        fuser_browse.setText("\u2026")
        fuser_browse.setToolTip("Choose a fuser folder")
        fuser_browse.clicked.connect(self._browse_fuser)

        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(5)
        grid.setColumnStretch(1, 1)
        row = 0
        grid.addWidget(QLabel("Preset"), row, 0)
        grid.addWidget(self.preset, row, 1, 1, 2)
        for model in (self.receiver, self.sharer):
            row += 1
            grid.addWidget(QLabel(model.role.capitalize()), row, 0)
            grid.addWidget(model.source, row, 1)
            grid.addWidget(model.browse, row, 2)
            row += 1
            adapter_label = QLabel("adapter")
            adapter_label.setObjectName("sectionNote")
            grid.addWidget(adapter_label, row, 0, Qt.AlignmentFlag.AlignRight)
            grid.addWidget(model.adapter, row, 1)
            grid.addWidget(model.adapter_browse, row, 2)
            if model is self.receiver:  # one header names the placement columns of both models
                row += 1
                heads = QHBoxLayout()
                heads.setSpacing(4)
                for text, stretch in (("device", 3), ("dtype", 3), ("quantization", 4)):
                    head = QLabel(text)
                    head.setObjectName("sectionNote")
                    heads.addWidget(head, stretch)
                grid.addLayout(heads, row, 1, 1, 2)
            row += 1
            placement = QHBoxLayout()
            placement.setSpacing(4)
            placement.addWidget(model.device, 3)
            placement.addWidget(model.dtype, 3)
            placement.addWidget(model.quantize, 4)
            grid.addLayout(placement, row, 1, 1, 2)
        row += 1
        grid.addWidget(QLabel("Fuser"), row, 0)
        grid.addWidget(self.fuser, row, 1)
        grid.addWidget(fuser_browse, row, 2)
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

    def _browse_fuser(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the fuser folder", self.fuser.text())
        if folder:
            self.fuser.setText(folder)

    # presets
    def set_presets(self, presets: Sequence[Preset]) -> None:
        current = self.preset.currentData()
        self.presets = list(presets)
        self.preset.clear()
        self.preset.addItem(CUSTOM, "")
        for p in self.presets:
            self.preset.addItem(p.label, p.name)
            self.preset.setItemData(self.preset.count() - 1,
                                    f"receiver {p.receiver}\nsharer {p.sharer}\nfuser "
                                    + (p.fuser or "none (train one with c2c train)"),
                                    Qt.ItemDataRole.ToolTipRole)
        index = self.preset.findData(current)
        self.preset.setCurrentIndex(max(index, 0))
        self.preset.view().setMinimumWidth(self.preset.view().sizeHintForColumn(0) + 24)  # whole names in the list

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

    def _fill(self, preset: Preset) -> None:
        self.receiver.source.setText(preset.receiver)
        self.sharer.source.setText(preset.sharer)
        for row in (self.receiver, self.sharer):
            row.adapter.clear()  # a preset's models are whole: an adapter is its source folder
        self.fuser.setText(preset.fuser)

    # the form
    def form(self) -> dict[str, Any]:
        return {"preset": self.preset.currentData() or "", "receiver": self.receiver.get(),
                "sharer": self.sharer.get(), "fuser": self.fuser.text().strip(),
                "cuda_graphs": self.cuda_graphs.isChecked(), "compile": self.compile.isChecked()}

    def set_form(self, form: dict[str, Any]) -> None:
        self.receiver.put(form.get("receiver") or {})
        self.sharer.put(form.get("sharer") or {})
        self.fuser.setText(str(form.get("fuser", "")))
        self.cuda_graphs.setChecked(form.get("cuda_graphs") is not False)
        self.compile.setChecked(form.get("compile") is not False)
        index = self.preset.findData(form.get("preset") or "")
        self.preset.setCurrentIndex(max(index, 0))

    # state
    def set_loading(self, loading: bool) -> None:
        self.progress_box.setVisible(loading)
        self.load_button.setEnabled(not loading)
        self.cancel_button.setEnabled(loading)
        self.cancel_button.setText("Cancel")
        if loading:
            self.progress.setRange(0, 0)
            self.progress_text.setText("Starting\u2026")

    def set_progress(self, step: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(step, total))
        self.progress_text.setText(f"Step {step} of {total}: {message}" if step < total else message)

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
        self.thinking = QCheckBox("Thinking block (Qwen3 templates)")
        self.ignore_eos = QCheckBox("Always write max new tokens")
        self.ignore_eos.setToolTip("Decode past the end of the answer, so every pane times the same number of "
                                   "tokens (for timing comparisons)")
        self.run_mode = QComboBox()
        self.run_mode.addItem("One after another", False)
        self.run_mode.addItem("Concurrently", True)
        self.run_mode.setToolTip("One after another keeps each pane's timing honest; concurrent runs share the "
                                 "machine, so their timings overlap")

        grid = QGridLayout(self)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(5)
        rows = [("Max new tokens", self.max_new_tokens), ("Hint tokens", self.hint_tokens),
                ("Decoding", self.decoding), ("Temperature", self.temperature), ("Top-p", self.top_p),
                ("Top-k", self.top_k), ("Seed", self.seed), ("Run panes", self.run_mode)]
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

    def concurrent(self) -> bool:
        return bool(self.run_mode.currentData())

    def set_concurrent(self, value: bool) -> None:
        self.run_mode.setCurrentIndex(1 if value else 0)
