"""The real `c2c-playground` command: headless runs, screenshots, exit codes, first paint before torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def playground(*args: str, tmp_path: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("c2c-playground", path=str(Path(sys.executable).parent))
    assert exe, "the c2c-playground gui-script is installed with the project"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", C2C_PLAYGROUND_STARTUP_REPORT="1",
               XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path / "home"))
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_headless_run_answers_saves_a_screenshot_and_exits_0(tiny_dirs, tmp_path):
    from PySide6.QtGui import QImage

    shot = tmp_path / "shot.png"
    proc = playground("--receiver", str(tiny_dirs.receiver), "--sharer", str(tiny_dirs.sharer),
                      "--fuser", str(tiny_dirs.published), "--device", "cpu", "--prompt", "Why is the sky blue?",
                      "--max-new-tokens", "4", "--hint-max-new-tokens", "4", "--screenshot", str(shot), "--exit",
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "torch imported: False" in proc.stderr  # the window painted before torch was imported
    assert "Traceback" not in proc.stderr
    image = QImage(str(shot))
    assert not image.isNull() and (image.width(), image.height()) == (1440, 900)
    # headless runs leave the user's settings alone
    assert not list((tmp_path / "config").rglob("*.ini"))


def test_a_failed_load_exits_non_zero_with_the_reason(tiny_dirs, tmp_path):
    missing = tmp_path / "no_such_fuser"
    proc = playground("--fuser", str(missing), "--prompt", "hi", "--exit", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "no_such_fuser" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, code, says", [
    ((), 0, "screenshot saved"),  # no pair, no demo pair: the set-up shows, nothing loaded, no crash
    (("--modes", "relay,nonsense"), 2, "--modes takes"),
])
def test_launching_without_a_pair(tmp_path, args, code, says):
    shot = tmp_path / "empty.png"
    proc = playground(*args, "--screenshot", str(shot), "--exit", tmp_path=tmp_path, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert shot.exists() == (code == 0)
