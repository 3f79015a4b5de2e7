"""The real `c2c-playground` on a real X server (Xvfb at 1366x768, the xcb platform, no offscreen).

The app is driven through real input events (xdotool: the XTEST extension), and what it did is read
from the screen (xwininfo, xprop, a screenshot) and from the lines it reports on stderr with
C2C_PLAYGROUND_REPORT=1. Nothing here is timed: every step waits for a condition.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from display_helpers import ROOT, SCREEN, App, Xvfb, tool

from PySide6.QtGui import QImage

SCREENSHOT = ROOT / "docs" / "screenshots" / "desktop-1366x768.png"
QUESTION = "What is the national animal of Mavar?"  # a demo question: only the sharer knows


def type_into(xvfb: Xvfb, window: str, text: str, *keys: str) -> None:
    """Give ``window`` the keyboard and type as a user does (XTEST events, not events sent to one window)."""
    xvfb.xdotool("windowfocus", "--sync", window)
    xvfb.xdotool("type", "--delay", "15", text)
    for key in keys:
        xvfb.xdotool("key", key)


def quit_app(xvfb: Xvfb, app: App, window: str) -> int:
    xvfb.xdotool("windowfocus", "--sync", window)
    xvfb.xdotool("key", "ctrl+q")
    try:
        return app.proc.wait(timeout=120)
    finally:
        app.close()


@pytest.fixture(scope="class")
def demo_app(xvfb: Xvfb, tmp_path_factory: pytest.TempPathFactory):
    """`c2c-playground` as a new user starts it: no settings, so it opens the demo pair on its own."""
    home = tmp_path_factory.mktemp("demo-home")
    app = App([], xvfb.env(home), cwd=home)
    try:
        window = xvfb.wait_for_window(pid=app.proc.pid)
        app.wait_for(r"report: pair loaded: ")
        yield app, window
    finally:
        app.close()


class TestANewUsersFirstStart:
    """The demo pair, opened by itself on first start, driven as a user does (one app for the class)."""

    def test_the_window_fits_a_laptop_screen(self, xvfb, demo_app):
        app, window = demo_app
        x, y, width, height = xvfb.geometry(window)
        assert x >= 0 and y >= 0 and x + width <= SCREEN[0] and y + height <= SCREEN[1], (x, y, width, height)
        hints = subprocess.run([tool("xprop", "x11-utils"), "-id", window, "WM_NORMAL_HINTS"], capture_output=True,
                               text=True, timeout=60, env=dict(os.environ, DISPLAY=xvfb.display)).stdout
        minimum = re.search(r"minimum size: (\d+) by (\d+)", hints)
        assert minimum, hints
        assert int(minimum.group(1)) <= 1280 and int(minimum.group(2)) <= 720, hints  # a window manager can fit it

    def test_typing_a_prompt_and_ctrl_enter_make_both_panes_answer(self, xvfb, demo_app):
        app, window = demo_app
        type_into(xvfb, window, QUESTION, "ctrl+Return")
        finished = app.wait_for(r"report: run finished: ")
        assert re.search(r"pane 1 relay done [1-9]\d* tokens", finished), finished
        assert re.search(r"pane 2 fusion done [1-9]\d* tokens", finished), finished

    def test_a_screenshot_of_the_real_window(self, xvfb, demo_app, tmp_path):
        app, window = demo_app
        shot = QImage(str(xvfb.screenshot(tmp_path / "screen.png")))
        assert (shot.width(), shot.height()) == SCREEN
        x, y, width, height = xvfb.geometry(window)
        inside = shot.copy(x, y, width, height)
        colours = {inside.pixel(px, py) for px in range(0, width, 7) for py in range(0, height, 7)}
        assert len(colours) > 20, "the window looks blank on the screen"
        if os.environ.get("C2C_UPDATE_SCREENSHOTS"):  # docs/screenshots/make.sh sets it
            shutil.copyfile(tmp_path / "screen.png", SCREENSHOT)


# Two panes fit 1280x720; four, each mode menu's every name whole, fit the common 1366x768 laptop screen.
@pytest.mark.parametrize("panes,width,height", [(2, 1280, 690), (4, 1366, 738)])
def test_nothing_is_clipped_on_a_laptop_screen(xvfb, tmp_path, panes, width, height):
    """The window at the screen's size less a title bar: every widget gets the room its content needs."""
    env = xvfb.env(tmp_path)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("layout_audit.py")), str(width),
                           str(height), str(panes), str(tmp_path / f"{panes}-panes.png")], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["size"] == [width, height], report
    assert report["minimum"][0] <= width and report["minimum"][1] <= height, report
    assert report["clipped"] == [], "\n".join(report["clipped"])


@pytest.fixture
def endless_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A random tiny pair with a long context: with "Always write max new tokens" an answer runs on and on."""
    from transformers import AutoConfig

    from fusers import tiny
    from fusers.checkpoint import save_published

    tok = tiny.bpe_tokenizer(300)
    receiver = tiny.save_model(tmp_path / "receiver", "qwen3", tok, seed=1, layers=2, hidden_size=32, heads=2,
                               kv_heads=1, head_dim=16, max_position_embeddings=65536)
    sharer = tiny.save_model(tmp_path / "sharer", "qwen2", tok, seed=2, layers=2, hidden_size=32, heads=2,
                             kv_heads=1, max_position_embeddings=65536)
    fuser = tiny.random_fuser(AutoConfig.from_pretrained(receiver), AutoConfig.from_pretrained(sharer),
                              receiver=str(receiver), sharer=str(sharer), seed=3)
    return receiver, sharer, save_published(fuser, tmp_path / "fuser")


def test_esc_stops_a_long_run(xvfb, tmp_path, endless_pair):
    receiver, sharer, fuser = endless_pair
    env = xvfb.env(tmp_path)
    # what a user ticked last time: 32768 tokens, always all of them, a receiver pane next to a fusion pane
    remember = ("from c2c_playground.app_settings import AppSettings; from fusers.generation import "
                "GenerationSettings as G; s = AppSettings(); s.set_generation(G(max_new_tokens=32768, "
                "ignore_eos=True)); s.set_pane_modes(['receiver', 'fusion']); s.sync()")
    subprocess.run([sys.executable, "-c", remember], env=env, check=True, timeout=120)
    app = App(["--receiver", str(receiver), "--sharer", str(sharer), "--fuser", str(fuser), "--device", "cpu"],
              env, cwd=tmp_path)
    try:
        window = xvfb.wait_for_window(pid=app.proc.pid)
        app.wait_for(r"report: pair loaded: ")
        type_into(xvfb, window, "Tell me a long story.", "ctrl+Return")
        app.wait_for(r"report: pane 1 \(receiver\) streaming")
        xvfb.xdotool("key", "Escape")
        finished = app.wait_for(r"report: run finished: ")
        assert "pane 1 receiver stopped" in finished, finished
        assert "pane 2 fusion skipped" in finished, finished  # a waiting pane does not start after Esc
        assert quit_app(xvfb, app, window) == 0, app.stderr()
    finally:
        app.close()


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_a_missing_platform_library_is_named_with_its_package(xvfb, tmp_path):
    """libxcb-cursor.so.0 hidden behind an unloadable file of that name, first on LD_LIBRARY_PATH."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "libxcb-cursor.so.0").write_bytes(b"")
    env = xvfb.env(tmp_path, LD_LIBRARY_PATH=str(shim))
    # the shim really breaks Qt: without the launcher's check, Qt aborts
    bare = subprocess.run([sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
                          env=env, capture_output=True, text=True, timeout=120, preexec_fn=no_core_dumps)
    assert bare.returncode < 0 and "xcb" in bare.stderr, (bare.returncode, bare.stderr[-2000:])

    app = App([], env, cwd=tmp_path)
    try:
        dialog = xvfb.wait_for_window()  # the message in a Tk dialog too: a launch from the menu has no terminal
        xvfb.xdotool("windowfocus", "--sync", dialog)
        xvfb.xdotool("key", "Return")
        code = app.proc.wait(timeout=120)
    finally:
        app.close()
    text = app.stderr()
    assert code == 1, (code, text)  # an exit status, not a signal: no core dump
    assert "libxcb-cursor.so.0" in text and "sudo apt-get install libxcb-cursor0" in text, text
    assert "sudo dnf install xcb-util-cursor" in text and "QT_QPA_PLATFORM=offscreen" in text, text
    assert "Reinstalling the application may fix" not in text, text
