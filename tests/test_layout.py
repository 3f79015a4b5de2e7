"""Project layout guards: the engine stays free of Qt, and every package is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_never_imports_the_gui():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extra"
    proc = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "KEPT" in proc.stdout


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {name: ROOT / folder for name, folder in config["package-dir"].items() if name}
    roots["fusers"] = ROOT / "fusers"
    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            found.add(".".join([name, *rel.parts]))
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_cli_help_does_not_import_torch():
    code = "import sys; from fusers.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip()
    assert out == "False"


def test_no_import_circle_between_the_engines_modules():
    """Counting every import (in functions and under TYPE_CHECKING too): no module of fusers reaches itself."""
    import grimp

    graph = grimp.build_graph("fusers", exclude_type_checking_imports=False, cache_dir=None)
    circles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module) if imported in graph.modules else None
            if back:
                circles.add(" -> ".join((module, *back)))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


def test_no_engine_module_over_500_lines():
    """Long modules hide several concerns. A data table (a module of literals) may be longer: none is, so far."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "fusers").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these by concern: {long}"
