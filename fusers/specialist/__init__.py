"""The specialist pair: SmolLM2-135M-Instruct (receiver) reads, through cache fusion, what a LoRA adapter taught
Gemma-3-270M (sharer) about a fictional company.

The base models come from PyPI (``fusers.real_models``); only the adapters, the fuser and the measurements ship,
in ``resources/specialist/`` (the ``c2c_resources`` package). ``python -m fusers.specialist.build`` regenerates
them; ``c2c specialist eval`` measures them. Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError

SPECIALIST_DIR = "specialist"  # under c2c_resources
ADAPTER_DIR = "adapter"  # the specialist: a LoRA adapter whose base is the bundled Gemma-3-270M
PERMUTED_ADAPTER_DIR = "adapter_permuted"  # the ablation's: the same recipe on the permuted domain
FUSER_DIR = "fuser"
DOMAIN_NAME = "domain.json"
METRICS_NAME = "metrics.json"
MANIFEST_NAME = "manifest.json"
# What the shipped fuser records as its sharer; fusers.sources.bundled_model maps it back to the adapter folder
# (its receiver is recorded by the bundled SmolLM2 file's name, which fusers.real_models resolves).
SHARER_NAME = "c2c-specialist/adapter"


def specialist_root() -> Path:
    """The folder that holds the shipped specialist pair's files."""
    from importlib.resources import files

    return Path(str(files("c2c_resources"))) / SPECIALIST_DIR


def shipped_files(root: Path | None = None) -> tuple[Path, Path]:
    """(sharer adapter folder, fuser folder); ModelLoadError naming what is missing."""
    root = specialist_root() if root is None else Path(root)
    for path in (root / ADAPTER_DIR, root / FUSER_DIR):
        if not path.is_dir():
            raise ModelLoadError(f"The specialist pair is incomplete: {path} is missing. Rebuild it with "
                                 "`python -m fusers.specialist.build`.")
    return root / ADAPTER_DIR, root / FUSER_DIR


def pair_paths(root: Path | None = None) -> tuple[Path, Path, Path]:
    """(receiver GGUF file, sharer adapter folder, fuser folder); ModelLoadError naming what is missing, the
    real models' install command included."""
    from .. import real_models

    adapter, fuser = shipped_files(root)
    real_models.bundled(real_models.GEMMA3_FILE)  # the base of the adapter: installed?
    return real_models.smollm2_path(), adapter, fuser


def permuted_adapter_path(root: Path | None = None) -> Path:
    root = specialist_root() if root is None else Path(root)
    path = root / PERMUTED_ADAPTER_DIR
    if not path.is_dir():
        raise ModelLoadError(f"The specialist's permuted adapter {path} is missing; rebuild with "
                             "`python -m fusers.specialist.build`.")
    return path


# What each split shows, in the words the app uses next to an example question.
EXAMPLE_NOTES = {
    "g": "the receiver knows this",
    "b": "only the specialist knows this",
    "c": "only the specialist knows this, and the fuser never saw it",
    "h": "only base Gemma knows this",
}


def example_questions(sharer_adapter: str | Path) -> list[tuple[str, str]]:
    """One question per split, with what it shows, when ``sharer_adapter`` is a specialist adapter (the shipped
    one or one the recipe built); otherwise an empty list."""
    if not sharer_adapter:
        return []
    folder = Path(sharer_adapter)
    domain_file = folder.parent / DOMAIN_NAME
    if folder.name != ADAPTER_DIR or not domain_file.is_file():
        return []
    from .domain import SPLITS, Domain

    try:
        domain = Domain.load(domain_file)
    except (OSError, ValueError, KeyError):
        return []
    return [(facts[0].question, EXAMPLE_NOTES[split]) for split in SPLITS if (facts := domain.eval_facts(split))]
