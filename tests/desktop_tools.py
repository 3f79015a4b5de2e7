"""Desktop tools that .ci/run installs with apt-get: missing, a check skips on a developer's machine and fails in CI."""

from __future__ import annotations

import os
import shutil

import pytest


def missing_desktop_part(message: str) -> None:
    """Skip here, fail under .ci/run (which sets C2C_REQUIRE_DESKTOP_TOOLS): CI installs every part, so there a
    missing one is a broken set-up, never a reason to pass."""
    if os.environ.get("C2C_REQUIRE_DESKTOP_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str, package: str) -> str:
    """The path of the desktop tool ``name`` (Debian package ``package``)."""
    path = shutil.which(name)
    if path is None:
        missing_desktop_part(f"{name} is not installed (Debian package {package}; .ci/run installs it with apt-get)")
    return path
