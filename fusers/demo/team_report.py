"""The team showcase's words and its report (fusers.demo.team): the sharers' relations, the evaluation's splits and
modes, and the goals the measured result is held to."""

from __future__ import annotations

from typing import Any

SPECIALISTS = {"A": ("language", "river"), "B": ("founder", "animal")}
SPLITS = ("A", "B", "both", "unseen")
SPLIT_HELP = {
    "A": "facts only sharer A knows (its relations, countries the fuser saw)",
    "B": "facts only sharer B knows (likewise)",
    "both": "one question asking for one fact of each sharer",
    "unseen": "A's and B's facts about countries no fuser saw",
}
# the modes of the evaluation, as the issue names them -> as the engine takes them
MODES = {"receiver": "receiver", "sharer:A": "sharer:A", "sharer:B": "sharer:B", "fusion:A": "fusion:A",
         "fusion:B": "fusion:B", "fusion:team": "fusion", "relay:team": "relay"}
MODE_LABELS = {"receiver": "Receiver alone", "sharer:A": "Sharer A alone", "sharer:B": "Sharer B alone",
               "fusion:A": "Cache fusion from A", "fusion:B": "Cache fusion from B",
               "fusion:team": "Cache fusion from the team", "relay:team": "Text relay, both hints"}


def goals(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The issue's goals for the showcase: (goal, measured, met)."""
    acc = result["accuracy"]
    out = []
    both, best_single = acc["fusion:team"]["both"], max(acc["fusion:A"]["both"], acc["fusion:B"]["both"])
    out.append(("team fusion on 'both' >= 60% and >= every single fusion + 30 points",
                f"{_pct(both)} (single best {_pct(best_single)})", both >= 0.6 and both >= best_single + 0.3))
    for name in SPECIALISTS:
        team, single = acc["fusion:team"][name], acc[f"fusion:{name}"][name]
        out.append((f"team fusion on {name} >= fusion:{name} on {name} - 5 points", f"{_pct(team)} vs {_pct(single)}",
                    team >= single - 0.05))
    for name, other in (("A", "B"), ("B", "A")):
        value = acc[f"fusion:{name}"][other]
        out.append((f"fusion:{name} on {other}'s facts <= 10%", _pct(value), value <= 0.10))
    ratio = result["fusion_to_relay_latency"]
    out.append(("team fusion latency / team text relay latency < 0.5", f"{ratio:.2f}", ratio < 0.5))
    unseen = acc["fusion:team"]["unseen"]
    out.append(("team fusion on facts no fuser saw >= 50%", _pct(unseen), unseen >= 0.5))
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_table(result: dict[str, Any]) -> str:
    n = result["questions"]
    lines = ["| mode | " + " | ".join(f"{s} ({n[s]})" for s in SPLITS) + " | median latency |",
             "|---|" + "---:|" * (len(SPLITS) + 1)]
    for mode in MODES:
        latency = result["latency_s"].get(mode)
        lines.append(f"| {MODE_LABELS[mode]} (`{mode}`) | " + " | ".join(_pct(result["accuracy"][mode][s])
                                                                        for s in SPLITS)
                     + " | " + ("-" if latency is None else f"{1000 * latency:.0f} ms") + " |")
    lines += ["", "| goal | measured | |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {'met' if met else '**not met**'} |" for goal, measured, met in goals(result)]
    return "\n".join(lines)
