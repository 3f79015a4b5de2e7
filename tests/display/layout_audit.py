"""Run on a real display: the main window, with the demo pair loaded, at a screen's size less a title bar.

    python tests/display/layout_audit.py WIDTH HEIGHT PANES [SCREENSHOT.png]   (prints a JSON report on stdout)

Reports the window's minimum size, the size it got, and every visible widget that is clipped: cut
by the window's edge, or smaller than the least size its content needs. Widgets inside a scroll area
scroll rather than clip, and eliding labels elide, so neither counts.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    width, height, panes = (int(a) for a in sys.argv[1:4])
    from PySide6.QtCore import QRect, QSize
    from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QSizePolicy, QWidget

    from c2c_playground import bridge, theme
    from c2c_playground.window import MainWindow
    from fusers.presets import DEMO_NAME

    app = QApplication([])
    theme.apply(app)
    bridge.install(app)
    window = MainWindow(persist=False)
    window.show()
    bridge.run_until_complete(window.refresh_presets())
    window.pair_panel.choose_preset(DEMO_NAME)
    if not bridge.run_until_complete(window.load_from_form()):
        print(json.dumps({"error": window.banner.message()}))
        return 1
    while len(window.panes) < panes:
        window.add_pane()
    window.resize(width, height)
    for _ in range(5):
        app.processEvents()

    def scrolls(widget: QWidget) -> bool:
        parent = widget.parentWidget()
        while parent is not None and parent is not window:
            if isinstance(parent, QAbstractScrollArea):
                return True
            parent = parent.parentWidget()
        return False

    inside = window.rect()
    clipped = []
    for widget in window.findChildren(QWidget):
        if not widget.isVisible() or widget.isWindow() or scrolls(widget) or widget.width() == 0:
            continue
        name = f"{type(widget).__name__}#{widget.objectName()}"
        text = getattr(widget, "text", lambda: "")()
        box = QRect(widget.mapTo(window, widget.rect().topLeft()), widget.size())
        if not inside.contains(box):
            clipped.append(f"{name} {text!r} at {box.getRect()} is cut by the window's edge {inside.getRect()}")
        # Qt's own rule: an explicit minimum size wins over the hint (a text box below its hint scrolls)
        hint, explicit = widget.minimumSizeHint(), widget.minimumSize()
        need = QSize(explicit.width() or hint.width(), explicit.height() or hint.height())
        policy = widget.sizePolicy().horizontalPolicy()
        if policy != QSizePolicy.Policy.Ignored and need.width() > widget.width() + 1:
            clipped.append(f"{name} {text!r} is {widget.width()} wide but needs {need.width()}")
        if not widget.sizePolicy().hasHeightForWidth() and need.height() > widget.height() + 1:
            clipped.append(f"{name} {text!r} is {widget.height()} high but needs {need.height()}")
    if len(sys.argv) > 4:
        window.grab().save(sys.argv[4])
    hint = window.minimumSizeHint()
    print(json.dumps({"minimum": [hint.width(), hint.height()], "size": [window.width(), window.height()],
                      "clipped": clipped}))
    window.close()
    bridge.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
