"""The real-display group: one Xvfb server at 1366x768 for the module, and the xcb libraries checked first."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from desktop_tools import missing_desktop_part
from display_helpers import Xvfb


@pytest.fixture(scope="module")
def xvfb() -> Iterator[Xvfb]:
    server = Xvfb()
    from c2c_playground.platform_check import problem

    saved = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ.update(DISPLAY=server.display, QT_QPA_PLATFORM="xcb")
    try:
        missing = problem()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if missing:
        server.close()
        message = f"the xcb platform cannot start here (.ci/run installs its libraries):\n{missing}"
        missing_desktop_part(message)
    yield server
    server.close()
