"""The wheel `pip install .` builds: what it holds, and that it works installed in a fresh venv, away from the checkout."""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

from packaging_helpers import BUILD_LOG, IMPORT_NAMES, PYPROJECT, ROOT, SCRIPTS, FreshVenv

DEMO_PROMPT = "What is the national animal of Mavar?"  # a fact only the demo sharer knows (split b)


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_holds_only_the_projects_own_import_names(wheel):
    names = wheel_names(wheel)
    dist_info = f"c2c_playground-{PYPROJECT['project']['version']}.dist-info"
    assert {n.split("/")[0] for n in names} == {*IMPORT_NAMES, dist_info}  # no app/, tests/, resources/...
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(f"{dist_info}/top_level.txt").decode().split() == sorted(IMPORT_NAMES)
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    for script in SCRIPTS:
        assert f"\n{script} = " in entry_points
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    # every listed package is there, and every resource file of the source tree
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    shipped = {n.removeprefix("c2c_resources/") for n in names if n.startswith("c2c_resources/")}
    in_tree = {p.relative_to(ROOT / "resources").as_posix() for p in (ROOT / "resources").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert in_tree - shipped == set()


def test_the_build_says_nothing_about_the_resource_folders(wheel):
    """setuptools took each data folder under resources/ for a package missing from the list, and warned a
    screenful for each (about 500 lines in `make run`): package data is what package-data lists, nothing more."""
    said = (wheel.parent.parent / BUILD_LOG).read_text()
    assert "copying" in said  # the build's own log is there to read
    assert "BuildBackendWarning" not in said and "absent from the `packages` configuration" not in said


def test_the_demo_pair_is_in_the_wheel(wheel):
    names = set(wheel_names(wheel))
    for part in ("receiver", "sharer", "fuser"):
        assert any(n.startswith(f"c2c_resources/demo/{part}/") for n in names), f"demo {part} missing from the wheel"
    assert "fusers/demo/__init__.py" in names


def test_no_module_finds_files_relative_to_its_source_folder(wheel):
    """Installed, a module's folder is site-packages, not the checkout: files come through importlib.resources."""
    offenders = []
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not name.endswith(".py"):
                continue
            source = zf.read(name).decode()
            tree = ast.parse(source, name)
            offenders += [f"{name}:{node.lineno}" for node in ast.walk(tree)
                          if isinstance(node, ast.Name) and node.id == "__file__"]
            assert str(ROOT) not in source, f"{name} names the checkout {ROOT}"
    assert not offenders, f"use importlib.resources.files(...) instead of __file__: {offenders}"


def test_installed_packages_and_resources_come_from_the_fresh_venv(fresh_venv: FreshVenv):
    code = ("import json, fusers, c2c_playground, c2c_resources, fusers.demo; "
            "from importlib.resources import files; "
            "print(json.dumps([fusers.__file__, c2c_playground.__file__, str(files('c2c_resources')), "
            "*map(str, fusers.demo.pair_paths())]))")
    proc = fresh_venv.run(fresh_venv.python, "-c", code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    paths = [Path(p) for p in json.loads(proc.stdout)]
    for path in paths:
        assert path.is_relative_to(fresh_venv.site_packages), path
        assert not path.resolve().is_relative_to(ROOT.resolve()), path
    assert all(p.is_dir() for p in paths[3:])  # the demo pair's receiver, sharer and fuser


def test_installed_c2c_compares_every_mode_on_the_demo_pair(fresh_venv: FreshVenv):
    proc = fresh_venv.run(fresh_venv.script("c2c"), "compare", "--prompt", DEMO_PROMPT, "--max-new-tokens", "12",
                          "--hint-max-new-tokens", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [a["mode"] for a in answers] == ["receiver", "sharer", "relay", "fusion", "hybrid"]
    for answer in answers:
        assert answer["finish_reason"] in ("eos", "length") and answer["token_ids"], answer
    fusion = answers[3]
    assert fusion["fusion"] and fusion["timing"]["fuse"] > 0  # the fuser ran on the demo pair's caches
    # the installed demo pair works: the receiver alone does not know the founder, cache fusion does
    assert "owl" in fusion["text"] and "owl" not in answers[0]["text"], (answers[0]["text"], fusion["text"])


def test_installed_playground_answers_and_saves_a_screenshot_offscreen(fresh_venv: FreshVenv):
    from PySide6.QtGui import QImage

    shot = fresh_venv.home / "playground.png"
    proc = fresh_venv.run(fresh_venv.script("c2c-playground"), "--prompt", DEMO_PROMPT, "--max-new-tokens", "12",
                          "--hint-max-new-tokens", "12", "--screenshot", shot, "--exit")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500
    assert len({image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 37)}) > 20


def test_installed_desktop_command_points_the_menu_at_the_installed_app(fresh_venv: FreshVenv):
    data = fresh_venv.home / "menu"
    proc = fresh_venv.run(fresh_venv.script("c2c-playground-install-desktop"), "--data-home", data, timeout=60)
    assert proc.returncode == 0, proc.stderr
    entry = (data / "applications" / "io.github.c2c_playground.C2CPlayground.desktop").read_text()
    assert f"\nExec={fresh_venv.script('c2c-playground')}\n" in entry
    assert (data / "icons/hicolor/scalable/apps/io.github.c2c_playground.C2CPlayground.svg").is_file()
