"""Render the app icon's PNG sizes from its SVG: ``python packaging/make_icons.py [--out DIR]``.

The SVG (resources/icons/c2c-playground.svg) is the source; the PNGs next to it are generated
and committed, because some desktops, the bundle and window managers want bitmaps. Rerun this
after changing the SVG: tests/packaging checks that the PNGs still match a fresh render.
Uses Qt's own SVG renderer (PySide6's QtSvg), so no extra tool is needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ICON_NAME = "c2c-playground"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)  # the hicolor theme's usual app sizes
ICONS_DIR = Path(__file__).resolve().parents[1] / "resources" / "icons"  # a build-time script, never installed


def png_name(size: int) -> str:
    return f"{ICON_NAME}-{size}.png"


def render(svg: Path, size: int):
    """The SVG drawn on a transparent ``size`` x ``size`` QImage."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    return image.convertToFormat(QImage.Format.Format_ARGB32)


def make_icons(svg: Path, out: Path, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    """Write one PNG per size into ``out``; returns their paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no screen needed
    from PySide6.QtGui import QGuiApplication

    _app = QGuiApplication.instance() or QGuiApplication([])  # QPainter on images needs one (fonts)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for size in sizes:
        path = out / png_name(size)
        if not render(svg, size).save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--svg", type=Path, default=ICONS_DIR / f"{ICON_NAME}.svg")
    p.add_argument("--out", type=Path, default=ICONS_DIR)
    args = p.parse_args(argv)
    for path in make_icons(args.svg, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
