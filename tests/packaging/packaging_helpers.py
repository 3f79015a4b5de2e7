"""Packaging test helpers: build the project's wheel, and a fresh venv with only that wheel installed.

The fresh venv reuses the packages of the environment running the tests (torch, transformers,
PySide6...) through a ``.pth`` file instead of installing them, so nothing is ever downloaded;
the project itself comes only from the wheel (the editable install's finder lives in a ``.pth``
import line, which a path listed in another ``.pth`` file does not run).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMPORT_NAMES = ("fusers", "c2c_playground", "c2c_resources")  # what the wheel may hold besides its .dist-info
SCRIPTS = ("c2c", "c2c-playground", "c2c-playground-install-desktop")


def load_packaging_script(name: str):
    """A script of packaging/ as a module (packaging/ is no package: its name is taken by PyPI's ``packaging``)."""
    spec = importlib.util.spec_from_file_location(f"c2c_packaging_{name}", ROOT / "packaging" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_entries() -> list[str]:
    """The top-level paths of the source tree that the build reads: pyproject, readme, license, package folders."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    folders = {folder.split("/")[0] for name, folder in setuptools["package-dir"].items() if name}
    mapped = {name for name in setuptools["package-dir"] if name}
    folders |= {pkg.split(".")[0] for pkg in setuptools["packages"] if pkg.split(".")[0] not in mapped}
    files = {"pyproject.toml", PYPROJECT["project"]["readme"]} | {p.name for p in ROOT.glob("LICENSE*")}
    return sorted(folders | files)


BUILD_LOG = "build.log"  # beside dist/ in build_wheel's folder


def build_wheel(out: Path) -> Path:
    """Build the wheel the way `pip install .` would, from a copy of the source tree.

    A copy, because setuptools reuses build/ and *.egg-info from earlier builds (stale files could
    slip in) and other tests may be reading the checkout meanwhile. Byte-code caches are copied on
    purpose: a real checkout has them, and they must not reach the wheel.
    """
    src = out / "src"
    for name in source_entries():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("*.egg-info", "build", "dist"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    dist = out / "dist"
    # --no-isolation: setuptools from this environment, so building needs no network
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / BUILD_LOG).write_text(proc.stdout + proc.stderr)  # what the build said: tests/packaging/test_wheel.py
    (wheel,) = dist.glob("*.whl")
    return wheel


def dependency_paths() -> list[str]:
    """The site-packages folders of this environment (torch, Qt...; never the checkout's source folders)."""
    paths = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    out = list(dict.fromkeys(p for p in paths if Path(p).is_dir()))
    assert not {Path(p).resolve() for p in out} & {ROOT.resolve(), *(ROOT / e for e in source_entries())}
    return out


@dataclass
class FreshVenv:
    root: Path
    python: Path
    bin: Path
    site_packages: Path
    home: Path  # HOME and XDG folders for the commands it runs

    def script(self, name: str) -> Path:
        return self.bin / name

    def env(self) -> dict[str, str]:
        """A clean environment: no PYTHONPATH into the checkout, private home and caches, offline, offscreen."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        env.update(
            PATH=os.pathsep.join([str(self.bin), env.get("PATH", "")]), VIRTUAL_ENV=str(self.root),
            HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), XDG_DATA_HOME=str(self.home / ".local/share"),
            XDG_CACHE_HOME=str(self.home / ".cache"), HF_HOME=str(self.home / ".cache/huggingface"),
            HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen", TOKENIZERS_PARALLELISM="false",
        )
        return env

    def run(self, *command: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a command of the venv from a folder outside the checkout."""
        return subprocess.run([str(c) for c in command], cwd=self.home, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)


def make_fresh_venv(root: Path, wheel: Path) -> FreshVenv:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    site_packages = Path(purelib)
    # after the venv's own site-packages on sys.path: the wheel's files always win
    (site_packages / "_c2c_test_dependencies.pth").write_text("\n".join(dependency_paths()) + "\n")
    # this environment's pip installs into the new venv: --no-deps --no-index, so nothing is downloaded
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                           "--no-index", "--disable-pip-version-check", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    home = root.parent / "home"
    home.mkdir()
    return FreshVenv(root, python, root / "bin", site_packages, home)
