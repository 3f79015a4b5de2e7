"""The app's example questions for the team showcase (``resources/team``): one only sharer A's facts answer, one
only B's, and one that needs both, with what each shows. Kept out of :mod:`fusers.demo.team` (the recipe) so the
app lists them without the recipe's imports."""

from __future__ import annotations

from pathlib import Path

from . import WORLD_NAME
from .team_report import SPECIALISTS

# The relation each example asks about: the first of each sharer's (A: language, B: founder).
EXAMPLE_NOTES = {
    "A": "only sharer A knows this",
    "B": "only sharer B knows this",
    "both": "needs both sharers: only the team answers it",
}


def example_questions(team_folder: str | Path | None) -> list[tuple[str, str]]:
    """Three questions on a country of the split both fusers saw (``b``), when ``team_folder`` is the showcase (the
    shipped one or one the recipe built: a team folder beside its ``world.json``); otherwise an empty list."""
    if not team_folder:
        return []
    from ..team_folder import is_team

    folder = Path(team_folder)
    world_file = folder / WORLD_NAME
    if not (is_team(folder) and world_file.is_file()):
        return []
    from .team import both_question
    from .world import RELATION_BY_NAME, World

    try:
        world = World.load(world_file)
    except (OSError, ValueError, KeyError):
        return []
    countries = world.split_countries("b")
    if not countries:
        return []
    country = "Mavar" if "Mavar" in countries else countries[0]  # the demo pair's examples ask about Mavar too
    a, b = (RELATION_BY_NAME[SPECIALISTS[name][0]] for name in ("A", "B"))
    return [(a.ask(country), EXAMPLE_NOTES["A"]), (b.ask(country), EXAMPLE_NOTES["B"]),
            (both_question(country, a, b), EXAMPLE_NOTES["both"])]
