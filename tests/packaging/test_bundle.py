"""The one-folder PyInstaller bundle (packaging/c2c-playground.spec): builds, and the bundled app runs offscreen.

Slow (about 8 minutes and 1 GB of disk on 2 cores), so kept out of CI's suite: run with
``QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -m slow tests/packaging/test_bundle.py -s``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging_helpers import ROOT

pytestmark = pytest.mark.slow
DEMO_PROMPT = "What is the national animal of Mavar?"  # a fact only the demo sharer knows (split b)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pyinstaller = shutil.which("pyinstaller", path=str(Path(sys.executable).parent))
    assert pyinstaller, "PyInstaller comes with the bundle extra: pip install -e '.[bundle]'"
    work = tmp_path_factory.mktemp("bundle")
    started = time.perf_counter()
    proc = subprocess.run([pyinstaller, "--noconfirm", "--clean", str(ROOT / "packaging" / "c2c-playground.spec"),
                           "--distpath", str(work / "dist"), "--workpath", str(work / "build")],
                          cwd=work, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    folder = work / "dist" / "c2c-playground"
    print(f"\nbundle built in {time.perf_counter() - started:.0f} s: {folder_bytes(folder) / 2**20:.0f} MiB at {folder}")
    return folder


def run(bundle: Path, program: str, *args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               HF_HOME=str(home / ".cache/huggingface"), HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen",
               PATH="/usr/bin:/bin")  # no venv on PATH: the bundle must bring everything
    return subprocess.run([str(bundle / program), *map(str, args)], cwd=home, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_bundled_app_answers_on_the_demo_pair_and_saves_a_screenshot(bundle, tmp_path):
    from PySide6.QtGui import QImage

    shot = tmp_path / "bundle.png"
    proc = run(bundle, "c2c-playground", "--prompt", DEMO_PROMPT, "--max-new-tokens", "12", "--hint-max-new-tokens",
               "12", "--screenshot", shot, "--exit", home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 800
    assert len({image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 37)}) > 20


def test_the_bundled_command_line_compares_on_the_demo_pair(bundle, tmp_path):
    proc = run(bundle, "c2c", "compare", "--prompt", DEMO_PROMPT, "--max-new-tokens", "8", "--hint-max-new-tokens",
               "8", "--modes", "relay,fusion", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [a["mode"] for a in answers] == ["relay", "fusion"] and answers[1]["fusion"]


def test_the_bundled_menu_install_starts_the_bundle(bundle, tmp_path):
    proc = run(bundle, "c2c-playground-install-desktop", "--data-home", tmp_path / "share", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entry = (tmp_path / "share/applications/io.github.c2c_playground.C2CPlayground.desktop").read_text()
    assert f"\nExec={bundle / 'c2c-playground'}\n" in entry
