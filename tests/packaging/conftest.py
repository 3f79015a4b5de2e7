"""Packaging fixtures: the project's wheel, built once per session, and a fresh venv holding only it."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging_helpers import FreshVenv, build_wheel, make_fresh_venv


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return make_fresh_venv(tmp_path_factory.mktemp("fresh") / "venv", wheel)
