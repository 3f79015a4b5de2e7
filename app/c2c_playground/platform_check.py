"""Before Qt starts: can its platform plugin load? If not, say which system packages to install.

Qt's xcb (X11) plugin links a dozen system libraries that a fresh Debian or Ubuntu often lacks
(libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1...). Without them Qt prints "Could not load the Qt
platform plugin" and aborts with a core dump, suggesting a reinstall that does not help. This module
asks the dynamic loader (``ldd``) which of the plugin's libraries do not load, before any QApplication.
Only QtCore is imported here (to find the plugin folder); it does not need the platform libraries.

    python -m c2c_playground.platform_check   # prints the problem and exits 1, or exits 0
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# soname -> (Debian/Ubuntu package, Fedora package). Others: the Debian name follows the soname
# (libfoo-bar.so.1 -> libfoo-bar1), and dnf installs any library by what it provides.
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libGLdispatch.so.0": ("libglvnd0", "libglvnd"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
}
# every xcb extension library (randr, shape, shm, sync, xfixes, xkb, render, glx, xinput...) is one
# Debian package each and part of Fedora's libxcb
_XCB_CORE = re.compile(r"^libxcb-([a-z0-9]+)\.so\.(\d+)$")

OFFSCREEN_HINT = ("To run without a window instead (a comparison saved as a screenshot):\n\n"
                  "    QT_QPA_PLATFORM=offscreen c2c-playground --pair demo --prompt \"Your question\" "
                  "--screenshot shot.png --exit")


def packages_for(soname: str) -> tuple[str, str]:
    """The (Debian/Ubuntu, Fedora) packages that ship ``soname``."""
    if soname in PACKAGES:
        return PACKAGES[soname]
    stem, _, version = soname.partition(".so.")
    version = version.split(".")[0]
    debian = (stem + ("-" if stem[-1:].isdigit() else "") + version).lower() if version else stem.lower()
    fedora = "libxcb" if _XCB_CORE.match(soname) else f"'{soname}()(64bit)'"
    return debian, fedora


def qt_platform() -> str:
    """The platform plugin Qt will try first: QT_QPA_PLATFORM's first entry, else Qt's own default."""
    requested = os.environ.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        return requested.split(";")[0].split(":")[0].strip()
    if sys.platform != "linux":
        return "native"
    if os.environ.get("XDG_SESSION_TYPE") == "wayland" and os.environ.get("WAYLAND_DISPLAY"):
        return "wayland"  # Qt 6 prefers Wayland in a Wayland session
    return "xcb"


def plugin_path(name: str = "xcb") -> Path | None:
    """Where Qt will look for the platform plugin ``name`` (QT_QPA_PLATFORM_PLUGIN_PATH first)."""
    folders = [Path(p) for p in os.environ.get("QT_QPA_PLATFORM_PLUGIN_PATH", "").split(os.pathsep) if p]
    try:
        from PySide6.QtCore import QLibraryInfo

        folders.append(Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms")
    except ImportError:
        return None  # PySide6 itself is the problem: the launcher says so
    for folder in folders:
        candidate = folder / f"libq{name}.so"
        if candidate.is_file():
            return candidate
    return None


def unloadable_libraries(library: Path) -> list[tuple[str, str]]:
    """The (soname, why) of each library ``library`` needs that the dynamic loader cannot load."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return _first_unloadable(library)
    try:
        out = subprocess.run([ldd, str(library)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return _first_unloadable(library)
    found: dict[str, str] = {}
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        missing = re.match(r"\s*(\S+) => not found", line)
        if missing:
            found.setdefault(missing.group(1), "not installed")
            continue
        broken = re.search(r"error while loading shared libraries: (\S+?): (.+)$", line)
        if broken:  # a library that is there but does not load (wrong file, wrong architecture)
            found.setdefault(Path(broken.group(1)).name, f"{broken.group(1)}: {broken.group(2).strip()}")
    return list(found.items())


def _first_unloadable(library: Path) -> list[tuple[str, str]]:
    """Without ldd: load the plugin here; the loader's error names the first library it lacks."""
    import ctypes

    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        named = re.match(r"(\S+?): (.+)$", str(exc))
        if named and Path(named.group(1)).name != library.name:
            return [(Path(named.group(1)).name, named.group(2))]
        return [(library.name, str(exc))]
    return []


def problem() -> str | None:
    """A readable message when Qt's platform plugin cannot start here, else None. The display comes first: with
    none to connect to, Qt's xcb plugin fails whatever the libraries, and its own message blames libxcb-cursor0."""
    if qt_platform() != "xcb":
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return ("C2C Playground cannot open its window: no X11 display is set (DISPLAY is empty). Start it from "
                f"a desktop session, or forward X11 (ssh -X).\n\n{OFFSCREEN_HINT}")
    why = unreachable_display(display)
    if why is not None:
        return (f"C2C Playground cannot open its window: the X11 display {display} (DISPLAY) cannot be reached: "
                f"{why}. Start an X server for it (for example `Xvfb {_local_display(display)} &` for a virtual one), "
                f"or set DISPLAY to a display that is running.\n\n{OFFSCREEN_HINT}")
    plugin = plugin_path("xcb")
    if plugin is not None:
        bad = unloadable_libraries(plugin)
        if bad:
            return missing_libraries_message(bad)
    return None


_DISPLAY = re.compile(r"^(?P<host>[^:]*):(?P<number>\d+)(?:\.\d+)?$")
X_TCP_PORT = 6000  # display N listens on 6000 + N


def unreachable_display(display: str, timeout: float = 3.0) -> str | None:
    """Why nothing answers at the X11 ``display`` (``:0``, ``unix:1``, ``localhost:10.0``), or None when a connection
    opens (or the name is one this check does not know how to reach: Qt then tries it itself). Only the socket is
    opened, as Xlib would, before any Qt code runs: Qt aborts the process when it cannot connect."""
    import socket

    found = _DISPLAY.match(display)
    if found is None or found.group("host").startswith("/"):
        return None  # e.g. a launchd socket path on macOS: not ours to judge
    host, number = found.group("host"), int(found.group("number"))
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        for address in ("\0" + path, path):  # Linux's abstract socket first, as libxcb tries it, then the file
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(address)
                    return None
                except OSError:
                    continue
        return f"no X server listens at {path}"
    try:
        socket.create_connection((host, X_TCP_PORT + number), timeout=timeout).close()
        return None
    except OSError as exc:
        return f"no X server answers at {host}, port {X_TCP_PORT + number} ({exc.strerror or exc})"


def _local_display(display: str) -> str:
    found = _DISPLAY.match(display)
    return f":{found.group('number')}" if found else ":99"


def missing_libraries_message(bad: list[tuple[str, str]]) -> str:
    debian = sorted({packages_for(so)[0] for so, _ in bad})
    fedora = sorted({packages_for(so)[1] for so, _ in bad})
    libraries = "\n".join(f"    {so} ({why})" for so, why in bad)
    return ("C2C Playground cannot open its window: Qt's X11 (xcb) platform plugin needs system libraries "
            f"that do not load:\n\n{libraries}\n\n"
            "Install them with your system's package manager (reinstalling the app does not help):\n\n"
            f"    Debian/Ubuntu:  sudo apt-get install {' '.join(debian)}\n"
            f"    Fedora:         sudo dnf install {' '.join(fedora)}\n\n"
            f"{OFFSCREEN_HINT}")


def main() -> int:
    text = problem()
    if text is None:
        return 0
    print(text, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
