"""Desktop integration: the desktop entry and metainfo validate, the menu install command, icons and screenshots."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

from desktop_tools import tool
from packaging_helpers import PYPROJECT, ROOT, load_packaging_script

from c2c_playground import desktop_entry

PACKAGING = ROOT / "packaging"
DESKTOP = PACKAGING / desktop_entry.DESKTOP_NAME
METAINFO = PACKAGING / f"{desktop_entry.APP_ID}.metainfo.xml"
SCREENSHOTS = ROOT / "docs" / "screenshots"
make_icons = load_packaging_script("make_icons")




def read_entry(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_the_desktop_entry_validates():
    proc = subprocess.run([tool("desktop-file-validate", "desktop-file-utils"), str(DESKTOP)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr  # warnings count too


def test_the_metainfo_validates():
    proc = subprocess.run([tool("appstreamcli", "appstream"), "validate", "--no-net", str(METAINFO)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_metainfo_names_this_release_the_desktop_entry_and_existing_screenshots():
    root = ET.parse(METAINFO).getroot()
    assert root.findtext("id") == desktop_entry.APP_ID
    assert root.find("launchable").text == DESKTOP.name
    assert root.find("releases/release").get("version") == PYPROJECT["project"]["version"]
    images = [img.text.strip() for img in root.iter("image")]
    assert images, "the metainfo shows screenshots"
    readme = (ROOT / "README.md").read_text()
    for url in images:
        path = ROOT / url.split("/main/", 1)[1]  # the repository's raw URL -> the file in the checkout
        assert path.parent == SCREENSHOTS and path.is_file(), url
        assert f"docs/screenshots/{path.name}" in readme, f"README shows {path.name} too"
    for name in re.findall(r"docs/screenshots/([\w.-]+\.png)", readme):
        assert (SCREENSHOTS / name).is_file(), f"README shows a missing screenshot {name}"


def test_the_shipped_desktop_entry_is_the_one_in_packaging():
    shipped = ROOT / "resources" / "desktop" / DESKTOP.name
    assert shipped.read_bytes() == DESKTOP.read_bytes(), f"run: cp {DESKTOP.relative_to(ROOT)} {shipped.relative_to(ROOT)}"


def test_installing_for_the_current_user_points_the_menu_at_the_installed_app(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert desktop_entry.main([]) == 0
    installed = tmp_path / "share" / "applications" / DESKTOP.name
    app = Path(sysconfig.get_path("scripts")) / "c2c-playground"  # this environment's installed gui-script
    assert f"starts {app}" in capsys.readouterr().out

    # in sync with packaging/: the same groups and keys, only Exec and TryExec made absolute
    ours, theirs = read_entry(installed), read_entry(DESKTOP)
    assert ours.sections() == theirs.sections()
    for group in theirs.sections():
        expected = {k: v for k, v in theirs[group].items() if k not in desktop_entry.EXEC_KEYS}
        got = {k: v for k, v in ours[group].items() if k not in desktop_entry.EXEC_KEYS}
        assert got == expected, group
    assert ours["Desktop Entry"]["Exec"] == ours["Desktop Entry"]["TryExec"] == str(app)
    assert os.access(app, os.X_OK)
    if shutil.which("desktop-file-validate"):
        proc = subprocess.run(["desktop-file-validate", str(installed)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout

    # the icon the entry names, in every size, where the icon theme looks for it
    icon = ours["Desktop Entry"]["Icon"]
    hicolor = tmp_path / "share" / "icons" / "hicolor"
    assert (hicolor / "scalable" / "apps" / f"{icon}.svg").is_file()
    for size in make_icons.SIZES:
        assert (hicolor / f"{size}x{size}" / "apps" / f"{icon}.png").is_file(), size

    assert desktop_entry.main(["--uninstall"]) == 0
    assert not installed.exists() and not list(hicolor.rglob(f"{icon}.*"))


def test_an_app_path_with_spaces_and_quotes_launches(tmp_path):
    """The Exec quoting holds for a real launcher (GLib's, which GNOME and others use)."""
    gio = tool("gio", "libglib2.0-bin")
    folder = tmp_path / 'My Apps/a $x "q"'
    folder.mkdir(parents=True)
    marker = tmp_path / "launched"
    fake = folder / "c2c-playground"
    fake.write_text(f'#!/bin/sh\nprintf "%s" "$0" > "{marker}"\n')
    fake.chmod(0o755)
    assert desktop_entry.main(["--data-home", str(tmp_path / "share"), "--exec", str(fake)]) == 0
    installed = tmp_path / "share" / "applications" / DESKTOP.name
    proc = subprocess.run([gio, "launch", str(installed)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for _ in range(100):  # gio returns once the program is spawned
        if marker.exists() and marker.read_text():
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert marker.read_text() == str(fake)


def test_a_missing_app_is_a_clear_error(tmp_path, capsys):
    assert desktop_entry.main(["--data-home", str(tmp_path), "--exec", str(tmp_path / "nowhere")]) == 2
    assert "not an executable program" in capsys.readouterr().err
    assert not (tmp_path / "applications").exists()


def test_the_png_icons_are_fresh_renders_of_the_svg(qapp):
    from PySide6.QtGui import QImage

    icons = ROOT / "resources" / "icons"
    for size in make_icons.SIZES:
        committed = QImage(str(icons / make_icons.png_name(size))).convertToFormat(QImage.Format.Format_ARGB32)
        assert (committed.width(), committed.height()) == (size, size)
        fresh = make_icons.render(icons / "c2c-playground.svg", size)
        # Qt versions anti-alias a little differently; a changed SVG changes far more than this
        diff = sum(abs(a - b) for a, b in zip(committed.constBits().tobytes(), fresh.constBits().tobytes()))
        assert diff / (size * size * 4) < 2.0, f"{make_icons.png_name(size)} is stale: run python packaging/make_icons.py"
