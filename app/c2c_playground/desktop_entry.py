"""``c2c-playground-install-desktop``: put C2C Playground in the current user's desktop menu.

Writes the desktop entry (a copy of packaging/io.github.c2c_playground.C2CPlayground.desktop
shipped in c2c_resources/desktop/, with ``Exec`` and ``TryExec`` set to the absolute path of the
installed ``c2c-playground``, so the menu finds the venv's app without it being on PATH) and the
icon in every size into ``$XDG_DATA_HOME`` (default ``~/.local/share``). ``--uninstall`` removes
them. Standard library only: no Qt, no torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.resources import files
from pathlib import Path
from typing import Sequence

APP_ID = "io.github.c2c_playground.C2CPlayground"  # the desktop file's name, its Icon=, the app's desktopFileName
DESKTOP_NAME = f"{APP_ID}.desktop"
SCRIPT = "c2c-playground"
ICON_SOURCE = "c2c-playground"  # c2c_resources/icons/c2c-playground.svg and c2c-playground-<size>.png
EXEC_KEYS = ("Exec", "TryExec")  # the only keys that differ from packaging/*.desktop


def data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".local" / "share"  # the spec ignores relative values


def _is_program(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_app_script() -> Path:
    """The absolute path of the installed ``c2c-playground`` that belongs to this Python (or this bundle)."""
    if getattr(sys, "frozen", False):  # a PyInstaller bundle: the app executable sits next to this one
        candidates = [Path(sys.executable).parent / SCRIPT]
    else:
        candidates = []
        if sys.argv and sys.argv[0]:
            candidates.append(Path(sys.argv[0]).absolute().parent / SCRIPT)  # pip puts both scripts together
        candidates.append(Path(sysconfig.get_path("scripts")) / SCRIPT)
        user_scheme = f"{os.name}_user"
        if user_scheme in sysconfig.get_scheme_names():
            candidates.append(Path(sysconfig.get_path("scripts", user_scheme)) / SCRIPT)
        candidates.append(Path(sys.executable).parent / SCRIPT)
    for path in candidates:
        if _is_program(path):
            return path.absolute()
    on_path = shutil.which(SCRIPT)
    if on_path:
        return Path(on_path).absolute()
    raise FileNotFoundError(
        f"Cannot find the {SCRIPT} program of this install (looked at {', '.join(str(c) for c in candidates)} and "
        f"PATH). Install the app with `pip install c2c-playground` (or `pip install .`), or pass --exec PATH.")


def _string_value(text: str) -> str:
    """A desktop entry string value: backslashes and control characters escaped."""
    return (text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r"))


def exec_value(path: Path) -> str:
    """``path`` as the desktop entry spec wants it in Exec: quoted when needed, ``%`` doubled, then escaped as
    a string value. (TryExec is a plain path: only the string escaping.)"""
    text = str(path)
    if any(c in text for c in ' \t\n"\'\\><~|&;$*?#()`'):
        text = '"' + "".join("\\" + c if c in '"`$\\' else c for c in text) + '"'
    return _string_value(text.replace("%", "%%"))


def desktop_entry(script: Path) -> str:
    """The shipped desktop entry with Exec and TryExec pointing at ``script``."""
    template = files("c2c_resources").joinpath("desktop", DESKTOP_NAME).read_text(encoding="utf-8")
    out, in_main = [], False
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            if in_main:  # TryExec goes last in the main group, before any action group
                out.append(f"TryExec={_string_value(str(script))}")
            in_main = stripped == "[Desktop Entry]"
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if in_main and key == "Exec":
            line = f"Exec={exec_value(script)}"
        elif in_main and key == "TryExec":
            continue
        out.append(line)
    if in_main:
        out.append(f"TryExec={_string_value(str(script))}")
    return "\n".join(out) + "\n"


def icon_files() -> dict[str, Path]:
    """hicolor size folder ('scalable', '48x48', ...) -> the shipped icon file for it."""
    icons = files("c2c_resources").joinpath("icons")
    found = {"scalable": Path(str(icons.joinpath(f"{ICON_SOURCE}.svg")))}
    prefix = f"{ICON_SOURCE}-"
    for entry in icons.iterdir():
        size = entry.name[len(prefix):-len(".png")] if entry.name.startswith(prefix) and entry.name.endswith(".png") else ""
        if size.isdigit():
            found[f"{size}x{size}"] = Path(str(entry))
    return found


def icon_targets(root: Path) -> list[tuple[Path, Path]]:
    """(shipped icon, where it goes under the data home ``root``) for every size."""
    return [(source, root / "icons" / "hicolor" / folder / "apps" / f"{APP_ID}{source.suffix}")
            for folder, source in sorted(icon_files().items())]


def installed_paths(root: Path) -> list[Path]:
    """Every file the install writes under ``root`` (a data home)."""
    return [root / "applications" / DESKTOP_NAME, *(target for _, target in icon_targets(root))]


def _refresh_caches(root: Path) -> None:
    """Keep caches that already exist current (a stale one hides new files); where there is none, desktops
    read the folders themselves, so none is created."""
    for tool, target, cache in (("update-desktop-database", root / "applications", "mimeinfo.cache"),
                                ("gtk-update-icon-cache", root / "icons" / "hicolor", "icon-theme.cache")):
        program = shutil.which(tool)
        if program and (target / cache).is_file():
            subprocess.run([program, "-q", str(target)], capture_output=True, check=False, timeout=60)


def install(root: Path, script: Path) -> list[Path]:
    desktop = root / "applications" / DESKTOP_NAME
    desktop.parent.mkdir(parents=True, exist_ok=True)
    desktop.write_text(desktop_entry(script), encoding="utf-8")
    written = [desktop]
    for source, target in icon_targets(root):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    _refresh_caches(root)
    return written


def uninstall(root: Path) -> list[Path]:
    removed = []
    for path in installed_paths(root):
        if path.exists():
            path.unlink()
            removed.append(path)
    _refresh_caches(root)
    return removed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="c2c-playground-install-desktop",
                                description="Add C2C Playground (its desktop entry and icon) to your desktop's menu, "
                                            "for the current user only.")
    p.add_argument("--uninstall", action="store_true", help="remove the desktop entry and icons again")
    p.add_argument("--data-home", type=Path, help="where to install (default: $XDG_DATA_HOME or ~/.local/share)")
    p.add_argument("--exec", dest="exec_path", type=Path,
                   help=f"the {SCRIPT} program the menu starts (default: the one installed with this package)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (sys.platform.startswith("linux") or "bsd" in sys.platform):
        print("error: desktop entries are for Linux and BSD desktops; on this system start c2c-playground directly.",
              file=sys.stderr)
        return 2
    root = (args.data_home or data_home()).expanduser().absolute()
    if args.uninstall:
        removed = uninstall(root)
        print(f"removed {len(removed)} files" + "".join(f"\n  {p}" for p in removed))
        return 0
    try:
        script = args.exec_path.expanduser().absolute() if args.exec_path else find_app_script()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _is_program(script):
        print(f"error: {script} is not an executable program; pass the installed {SCRIPT} with --exec.",
              file=sys.stderr)
        return 2
    written = install(root, script)
    print(f"C2C Playground is in your menu (it starts {script}).\n  {written[0]}\n  "
          f"{len(written) - 1} icons under {root / 'icons' / 'hicolor'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
