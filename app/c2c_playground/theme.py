"""Colours, names and the stylesheet: one place, shared by the widgets and the QPainter charts."""

from __future__ import annotations

from importlib.resources import files

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

# Phase names are fusers.timing.PHASES; these are the user's words for them.
PHASE_LABELS = {
    "tokenize": "tokenize",
    "sharer_prefill": "sharer prefill",
    "receiver_prefill": "receiver prefill",
    "fuse": "fuse",
    "hint": "hint writing",
    "decode": "decode",
    "between": "between phases",  # time no phase covers (handing caches over, setting up a decode)
}
# a team's sharer phases, shorter: the sharer's name follows ("prefill A")
SHARER_PHASE_LABELS = {"sharer_prefill": "prefill", "fuse": "fuse", "hint": "hint"}
PHASE_COLORS = {
    "tokenize": "#a3acb9",
    "sharer_prefill": "#e8833a",
    "receiver_prefill": "#3d7bd9",
    "fuse": "#8a5cd1",
    "hint": "#e0b12f",
    "decode": "#2f9e6e",
    "between": "#c9ced6",
}
MODE_COLORS = {"relay": "#c98a12", "fusion": "#1f8a8a", "receiver": "#3d7bd9", "sharer": "#d06a2c",
               "hybrid": "#7a5cc4"}

TEXT = "#1d2633"
MUTED = "#5c6878"
GRID = "#e3e7ed"
AXIS = "#8a94a3"
ACCENT = "#2f6fde"
EQUAL_BG = "#ffffff"
CHANGED_BG = "#fde9b8"
DELETED_BG = "#f9d0cc"
INSERTED_BG = "#cdebd7"
CLOSED = "#c4cad3"
WARNING = "#a15c00"  # something to heed, not an error: a stopped pane, a run on a busy machine


def color(name: str) -> QColor:
    return QColor(name)


def resource(*parts: str) -> str:
    return str(files("c2c_resources").joinpath(*parts))


def app_icon() -> QIcon:
    return QIcon(resource("icons", "c2c-playground.svg"))


def apply(app: QApplication) -> None:
    """Fusion style, a fixed light palette (screenshots look the same everywhere) and our stylesheet."""
    app.setStyle("Fusion")
    palette = QPalette()
    for role, value in (
        (QPalette.ColorRole.Window, "#f3f5f8"), (QPalette.ColorRole.WindowText, TEXT),
        (QPalette.ColorRole.Base, "#ffffff"), (QPalette.ColorRole.AlternateBase, "#f7f9fb"),
        (QPalette.ColorRole.Text, TEXT), (QPalette.ColorRole.Button, "#ffffff"),
        (QPalette.ColorRole.ButtonText, TEXT), (QPalette.ColorRole.Highlight, ACCENT),
        (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.ToolTipBase, "#ffffff"),
        (QPalette.ColorRole.ToolTipText, TEXT), (QPalette.ColorRole.PlaceholderText, "#8a94a3"),
        (QPalette.ColorRole.Link, ACCENT),
    ):
        palette.setColor(role, QColor(value))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#9aa3af"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#9aa3af"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, QColor("#9aa3af"))
    app.setPalette(palette)
    with open(resource("styles", "playground.qss"), encoding="utf-8") as fh:
        icons = resource("icons").replace("\\", "/")
        app.setStyleSheet(fh.read().replace("@ICONS@", icons))
    app.setWindowIcon(app_icon())


def visible_token(text: str, limit: int = 24) -> str:
    """A token's text made visible: spaces as middle dots, line breaks as arrows, control bytes as codes."""
    out = []
    for ch in text:
        if ch == " ":
            out.append("\u00b7")
        elif ch == "\n":
            out.append("\u21b5")
        elif ch == "\t":
            out.append("\u2192")
        elif ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    shown = "".join(out) or "\u2205"
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026"


def printable(text: str) -> str:
    """Text for a text view: control bytes (which tiny test models love) shown as codes, layout kept."""
    return "".join(ch if ch in "\n\t" or not (ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0) else f"\\x{ord(ch):02x}"
                   for ch in text)
