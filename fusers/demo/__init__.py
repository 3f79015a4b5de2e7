"""The offline demo pair: a small receiver, sharer and fuser trained on a generated world.

The pair ships in ``resources/demo/`` (the ``c2c_resources`` package) so that the app and
``c2c compare`` show cache fusion with no download and no GPU. ``python -m fusers.demo.build``
regenerates it; ``c2c demo eval`` measures it. Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError

DEMO_DIR = "demo"  # under c2c_resources
RECEIVER_DIR = "receiver"
SHARER_DIR = "sharer"
PERMUTED_SHARER_DIR = "sharer_permuted"  # the ablation's sharer: the same architecture, a permuted world
FUSER_DIR = "fuser"
WORLD_NAME = "world.json"
METRICS_NAME = "metrics.json"  # what `c2c demo eval` measured on the shipped pair when it was built
MANIFEST_NAME = "manifest.json"  # the recipe's settings and timings
# What the shipped fuser records as its pair (the build folders are temporary); fusers.sources.bundled_model
# maps them back to the shipped folders, so that the fuser alone loads its pair.
RECEIVER_NAME = "c2c-demo/receiver"
SHARER_NAME = "c2c-demo/sharer"


def demo_root() -> Path:
    """The folder that holds the shipped demo pair."""
    from importlib.resources import files

    return Path(str(files("c2c_resources"))) / DEMO_DIR


def pair_paths(root: Path | None = None) -> tuple[Path, Path, Path]:
    """(receiver_dir, sharer_dir, fuser_dir) of the demo pair; ModelLoadError when it is not installed."""
    root = demo_root() if root is None else Path(root)
    paths = (root / RECEIVER_DIR, root / SHARER_DIR, root / FUSER_DIR)
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        raise ModelLoadError(
            f"The offline demo pair is incomplete: {missing[0]} is missing. Rebuild it with "
            "`python -m fusers.demo.build`, or pass --receiver and --sharer (and --fuser)."
        )
    return paths


def permuted_sharer_path(root: Path | None = None) -> Path:
    root = demo_root() if root is None else Path(root)
    path = root / PERMUTED_SHARER_DIR
    if not path.is_dir():
        raise ModelLoadError(f"The demo's permuted sharer {path} is missing; rebuild with `python -m fusers.demo.build`.")
    return path


# What each split of the demo world shows, in the words the app uses next to an example question.
EXAMPLE_NOTES = {
    "a": "the receiver knows this",
    "b": "only the sharer knows this",
    "c": "only the sharer knows this, and the fuser never saw it",
}
# The relation each split's example asks about. Answers about rivers and animals name the country mid-sentence,
# where relay and fusion copy it cleanly (see ``Relation.answer``).
EXAMPLE_RELATIONS = {"a": "founder", "b": "animal", "c": "river"}


def example_questions(receiver_source: str | Path) -> list[tuple[str, str]]:
    """One question per split of the demo world, with what it shows, when ``receiver_source`` is a demo
    receiver (the shipped one or one the recipe built); otherwise an empty list."""
    receiver = Path(receiver_source)
    world_file = receiver.parent / WORLD_NAME
    if receiver.name != RECEIVER_DIR or not world_file.is_file():
        return []
    from .world import RELATIONS, SPLITS, World

    relations = {r.name: r for r in RELATIONS}

    try:
        world = World.load(world_file)
    except (OSError, ValueError, KeyError):
        return []
    out = []
    for split in SPLITS:
        countries = world.split_countries(split)
        if countries:
            out.append((relations[EXAMPLE_RELATIONS[split]].ask(countries[0]), EXAMPLE_NOTES[split]))
    return out
