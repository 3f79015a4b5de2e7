"""The words and limits every front end shares, declared once: the answer modes, the dtypes and quantizations a
model loads in, and the side-by-side comparison's pane count and default modes.

The CLI's choices, the app's menus and its saved-settings checks are generated from these (a test asserts they
are equal). Nothing here imports torch or Qt: ``c2c --help`` and the app's first paint read it.
"""

from __future__ import annotations

import re
from enum import Enum


class Mode(str, Enum):
    RECEIVER = "receiver"
    SHARER = "sharer"
    RELAY = "relay"
    FUSION = "fusion"
    HYBRID = "hybrid"  # text relay's hint and cache fusion's fused cache together

    @property
    def label(self) -> str:
        return MODE_LABELS[self]

    @property
    def writes_hint(self) -> bool:
        """The sharer writes a hint that the receiver reads in its prompt (the answer carries it)."""
        return self in (Mode.RELAY, Mode.HYBRID)

    @property
    def needs_fuser(self) -> bool:
        """The receiver's cache is fused from the sharer's: unavailable without a fuser."""
        return self in (Mode.FUSION, Mode.HYBRID)

    @property
    def answered_by(self) -> str:
        """The role of the model whose tokens make the answer: the sharer alone, else the receiver."""
        return "sharer" if self is Mode.SHARER else "receiver"


MODE_LABELS = {
    Mode.RECEIVER: "Receiver alone",
    Mode.SHARER: "Sharer alone",
    Mode.RELAY: "Text relay",
    Mode.FUSION: "Cache fusion",
    Mode.HYBRID: "Relay + fusion",
}
MODES = tuple(m.value for m in Mode)

# how cache fusion runs its two prefills: at the same time where a GPU takes part, or always, or one by one
PREFILLS = ("auto", "overlap", "sequential")

# The devices a menu offers (cuda:N is typed in); DEVICES_HELP in fusers.devices says what each means.
DEVICES = ("auto", "cpu", "cuda", "mps")

# A model's compute dtype; resolve_dtype also takes the short names (bf16, fp16, fp32) from Python.
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPES_HELP = f"auto (float32 on CPU, bfloat16 on CUDA), {', '.join(DTYPES[1:])}"

# bitsandbytes quantization of a model's linear layers, with the words a menu shows
QUANTIZE_LABELS = {"none": "none", "8bit": "8-bit", "4bit": "4-bit"}  # short: three boxes share a dock's row; 4-bit is nf4
QUANTIZE = tuple(QUANTIZE_LABELS)

# The side-by-side comparison: how many panes (two to compare; four still fit beside the set-up on a laptop),
# and the modes a first start (or a bad saved layout) shows.
MIN_PANES, MAX_PANES = 2, 4
DEFAULT_PANE_MODES = (Mode.RELAY.value, Mode.FUSION.value)


# A team's modes may name sharers: fusion:A, fusion:A+B, sharer:B (fusers.team parses the names)
MODE_SEPARATOR = ":"
NAMES_SEPARATOR = "+"
SHARER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")  # a team's sharer's name (fusers.team_folder checks it)


def pane_mode_ok(mode: object) -> bool:
    """Whether ``mode`` is a mode a pane can show: a plain one, or one naming sharers (``fusion:A+B``)."""
    if not isinstance(mode, str):
        return False
    head, sep, tail = mode.partition(MODE_SEPARATOR)
    if head not in MODES:
        return False
    return not sep or (head != Mode.RECEIVER.value
                       and all(SHARER_NAME.match(n) for n in tail.split(NAMES_SEPARATOR)))


def parse_modes(text: str, option: str = "--modes", least: int = 1, most: int | None = None,
                sharers: bool = False) -> list[Mode]:
    """``relay,fusion`` as modes, in order; a ValueError names the option, the bad part and the choices.
    ``sharers``: a part may name a team's sharers (``fusion:A+B``), kept as its text (a str whose mode is the part
    before the colon; fusers.team.parse_mode reads it), while a plain part is a Mode."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    bad = [part for part in parts
           if (part.partition(MODE_SEPARATOR)[0].strip() if sharers else part) not in MODES]
    most = (len(MODES) if not sharers else max(len(MODES), len(parts))) if most is None else most
    count = f"{least} to {most}" if least != most else str(least)
    if bad or not least <= len(parts) <= most:
        problem = f"unknown mode {', '.join(map(repr, bad))}" if bad else f"{len(parts)} modes"
        named = f", optionally naming sharers (fusion{MODE_SEPARATOR}A{NAMES_SEPARATOR}B)" if sharers else ""
        raise ValueError(f"{option} takes a comma-separated list of {count} of {', '.join(MODES)}{named}; got "
                         f"{text!r} ({problem}).")
    return [Mode(part) if part in MODES else part for part in parts]


def valid_pane_modes(modes: object) -> bool:
    """Whether ``modes`` (a saved layout) is a list of pane modes the comparison can show."""
    return (isinstance(modes, list) and MIN_PANES <= len(modes) <= MAX_PANES
            and all(pane_mode_ok(m) for m in modes))
