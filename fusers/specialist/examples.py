"""The app's example questions for the specialist domain: one a split, with what it shows. Kept out of the package's
``__init__`` so that naming the shipped folders (fusers.sources) imports nothing of the engine."""

from __future__ import annotations

from pathlib import Path

from . import ADAPTER_DIR, DOMAIN_NAME


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
