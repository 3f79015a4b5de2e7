"""The launcher's checks before Qt starts: an X display that nothing answers at is said plainly (Qt itself aborts
with a core dump, blaming libxcb-cursor0), with the fix, and a non-zero exit status instead of the abort."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

from c2c_playground.platform_check import X_TCP_PORT, unreachable_display


def _free_display_number() -> int:
    for number in range(90, 1000):
        path = f"/tmp/.X11-unix/X{number}"
        if os.path.exists(path):
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect("\0" + path)
            except OSError:
                return number
    raise AssertionError("no free X display number")


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_a_display_is_reachable_exactly_when_something_listens_at_it(tmp_path):
    number = _free_display_number()
    assert "no X server listens at /tmp/.X11-unix/X" in unreachable_display(f":{number}")
    assert unreachable_display(f"unix:{number}.0") is not None
    # over TCP (ssh -X forwards display 10 and up as localhost:N): a listening port is a reachable display
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert port > X_TCP_PORT
    assert unreachable_display(f"127.0.0.1:{port - X_TCP_PORT}.0") is None
    server.close()
    assert "no X server answers at 127.0.0.1, port" in unreachable_display(f"127.0.0.1:{port - X_TCP_PORT}")
    assert unreachable_display("/private/tmp/com.apple.launchd.x/org.xquartz:0") is None  # not a name we judge


def test_the_app_on_an_unreachable_display_says_so_and_exits_without_an_abort(tmp_path):
    display = f":{_free_display_number()}"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=display, XDG_CONFIG_HOME=str(tmp_path / "config"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2] / "app"),
                                           str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]))
    # without the launcher's check, Qt really aborts on that display
    bare = subprocess.run([sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
                          env=env, capture_output=True, text=True, timeout=120, preexec_fn=_no_core_dumps)
    assert bare.returncode < 0 and "could not connect to display" in bare.stderr, (bare.returncode, bare.stderr)
    app = subprocess.run([sys.executable, "-m", "c2c_playground.main", "--exit"], env=env, capture_output=True,
                         text=True, timeout=120, preexec_fn=_no_core_dumps)
    assert app.returncode == 1, (app.returncode, app.stderr)  # an exit status, not a signal
    said = app.stderr
    assert f"the X11 display {display} (DISPLAY) cannot be reached: no X server listens at /tmp/.X11-unix/X" in said
    assert f"Xvfb {display} &" in said and "QT_QPA_PLATFORM=offscreen" in said
    assert "xcb-cursor" not in said and "Traceback" not in said  # Qt never ran, so never blamed a library
