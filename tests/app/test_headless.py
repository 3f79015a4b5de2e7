"""The real `c2c-playground` command: headless runs, screenshots, exit codes, first paint before torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def playground(*args: str, tmp_path: Path, timeout: float = 180, python_path: Path | None = None,
               code: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("c2c-playground", path=str(Path(sys.executable).parent))
    assert exe, "the c2c-playground gui-script is installed with the project"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", C2C_PLAYGROUND_STARTUP_REPORT="1",
               XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path / "home"))
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(python_path), env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", code, *args] if code else [exe, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


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
    (("--modes", "relay,hybrid"), 0, "screenshot saved"),  # every mode of the engine is a pane mode
    (("--modes", "fusion:A,sharer:B"), 0, "screenshot saved"),  # a team's modes wait for a team to load
    (("--modes", "receiver:A,relay"), 2, "names no sharers a pane can use"),
])
def test_launching_without_a_pair(tmp_path, args, code, says):
    shot = tmp_path / "empty.png"
    proc = playground(*args, "--screenshot", str(shot), "--exit", tmp_path=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert shot.exists() == (code == 0)


def test_a_missing_package_is_named_with_the_fix(tmp_path):
    # the interpreter sees no accelerate (as after `pip uninstall accelerate`)
    code = ("import sys; sys.modules['accelerate'] = None; from c2c_playground.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = playground("--exit", tmp_path=tmp_path, code=code)
    assert proc.returncode == 1
    assert "missing: accelerate" in proc.stderr and "pip install accelerate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_broken_install_is_explained_not_a_traceback(tiny_dirs, tmp_path):
    # safetensors is "installed" but its import fails, as a build for another Python would
    broken = tmp_path / "site"
    (broken / "safetensors").mkdir(parents=True)
    (broken / "safetensors" / "__init__.py").write_text(
        "raise ImportError('libsafetensors.so: cannot open shared object file')\n")
    proc = playground("--receiver", str(tiny_dirs.receiver), "--sharer", str(tiny_dirs.sharer), "--prompt", "hi",
                      "--exit", tmp_path=tmp_path, python_path=broken)
    assert proc.returncode == 2
    assert "does not load" in proc.stderr and "libsafetensors.so" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pair_given_as_the_shipped_demo_fuser_folder_loads_its_models_offline_with_no_hub_request(
        tmp_path, counting_hub, monkeypatch):
    """The fuser names its pair c2c-demo/receiver and c2c-demo/sharer, which the engine maps to the shipped folders:
    online (HF_HUB_OFFLINE unset), the Hub is asked nothing."""
    from fusers.demo import pair_paths

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", counting_hub.endpoint)
    monkeypatch.setenv("C2C_PLAYGROUND_REPORT", "1")  # what was loaded and how each pane ended, on stderr
    proc = playground("--pair", str(pair_paths()[2]), "--device", "cpu", "--prompt", "What is the national animal of "
                      "Mavar?", "--modes", "receiver,fusion", "--max-new-tokens", "12", "--screenshot",
                      str(tmp_path / "shot.png"), "--exit", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "report: pair loaded: demo/receiver" in proc.stderr and "Traceback" not in proc.stderr
    assert "pane 1 receiver done" in proc.stderr and "pane 2 fusion done" in proc.stderr
    assert counting_hub.requests == []
