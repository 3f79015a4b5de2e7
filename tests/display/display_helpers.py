"""Driving the real ``c2c-playground`` on a real X server (Xvfb, the xcb platform), as a user would.

Everything is waited for as a condition with a generous timeout (a line the app reports, a window
appearing); nothing is timed.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from desktop_tools import tool

ROOT = Path(__file__).resolve().parents[2]
SCREEN = (1366, 768)
TITLE = "^C2C Playground$"




def launcher() -> list[str]:
    exe = shutil.which("c2c-playground", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "c2c_playground.main"]


class Xvfb:
    """An X server of its own (Xvfb picks a free display number) at the size of a common laptop screen."""

    def __init__(self, size: tuple[int, int] = SCREEN):
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [tool("Xvfb", "xvfb"), "-displayfd", str(write), "-screen", "0", f"{size[0]}x{size[1]}x24",
             "-nolisten", "tcp", "-noreset"], pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb did not start: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
        self.display = f":{number}"
        self.size = size

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        env = dict(os.environ, DISPLAY=self.display, QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=str(home / "config"),
                   HF_HUB_OFFLINE="1", C2C_PLAYGROUND_REPORT="1", TOKENIZERS_PARALLELISM="false")
        env.pop("WAYLAND_DISPLAY", None)
        env.update(extra)
        return env

    def xdotool(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run([tool("xdotool", "xdotool"), *args], env=dict(os.environ, DISPLAY=self.display),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"xdotool {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def wait_for_window(self, title: str = TITLE, pid: int | None = None, timeout: float = 180) -> str:
        """The id of the first visible window whose title matches, of process ``pid`` if given (Qt sets
        _NET_WM_PID; Tk does not), as soon as it is mapped (xdotool waits for it)."""
        by_pid = ["--pid", str(pid)] if pid is not None else []
        return self.xdotool("search", "--sync", "--onlyvisible", *by_pid, "--name", title, timeout=timeout).split()[0]

    def geometry(self, window: str) -> tuple[int, int, int, int]:
        """x, y, width, height of ``window`` on the screen."""
        out = subprocess.run([tool("xwininfo", "x11-utils"), "-id", window], env=dict(os.environ, DISPLAY=self.display),
                             capture_output=True, text=True, timeout=60).stdout
        value = lambda key: int(re.search(rf"{key}:\s+(-?\d+)", out).group(1))  # noqa: E731
        return value("Absolute upper-left X"), value("Absolute upper-left Y"), value("Width"), value("Height")

    def screenshot(self, path: Path) -> Path:
        """The real screen as the X server shows it (Qt's own grab of the root window, on this display)."""
        code = ("import sys; from PySide6.QtGui import QGuiApplication; app = QGuiApplication(sys.argv[:1]); "
                "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)")
        proc = subprocess.run([sys.executable, "-c", code, str(path)], env=dict(os.environ, DISPLAY=self.display,
                              QT_QPA_PLATFORM="xcb"), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return path

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class App:
    """The real launcher running on a display; its stderr lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path):
        self.proc = subprocess.Popen([*launcher(), *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        """The first stderr line (since the last match) matching ``pattern``."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} came; stderr so far:\n" + "\n".join(self.lines))
            if line is None:
                raise AssertionError(f"the app ended ({self.proc.wait()}) before {pattern!r}; stderr:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            if regex.search(line):
                return line

    def stderr(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
