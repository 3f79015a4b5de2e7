"""The app's example questions for the demo world: one a split, with what it shows. Kept out of the package's
``__init__`` so that naming the shipped folders (fusers.sources) imports nothing of the engine."""

from __future__ import annotations

from pathlib import Path

from . import RECEIVER_DIR, WORLD_NAME


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
