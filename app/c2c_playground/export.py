"""Export a comparison (prompt, each pane's answer and hint, timing, settings, versions) to JSON or Markdown."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .conversation import Turn
    from .widgets.pane import ChatPane

FORMAT = "c2c-playground-comparison"
FORMAT_VERSION = 1
SUFFIXES = (".json", ".md")
DASH = "\u2013"


def versions() -> dict[str, str]:
    """Versions of what produced the answers, read from package metadata (nothing is imported)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("c2c-playground", "torch", "transformers", "bitsandbytes", "PySide6-Essentials", "qasync"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _turn(turn: "Turn") -> dict[str, Any]:
    result = turn.result
    return {
        "prompt": turn.prompt,
        "mode": turn.asked,  # fusion:A where it named a team's sharers
        "state": turn.state.value,
        "hint": (result.hint if result is not None else turn.hint or None) if turn.mode.writes_hint else None,
        "answer": turn.answer_text(),
        "finish_reason": result.finish_reason if result is not None else None,
        "error": turn.error,
        "concurrent": turn.concurrent,
        "timing": result.timing.to_dict() if result is not None else None,
        # the run's own settings, the seed a sampled run drew included: enough to repeat it
        "settings": dict(result.settings) if result is not None else None,
        # a team's: the sharers that took part, and each one's hint (relay)
        "sharers": list(sharers) if (sharers := turn.took_part()) is not None else None,
        "hints": dict(result.hints) if result is not None and result.hints else None,
        # Repeat runs: every run's timing, this one's last, and their median and spread as the chart shows them
        "repeats": _repeats(turn.timings()),
    }


def _repeats(timings: Sequence[Any]) -> dict[str, Any] | None:
    if len(timings) < 2:
        return None
    from .widgets.charts import totals_row  # the chart's own summary: the export says what the chart drew

    row = totals_row("", "", timings)
    return {"runs": row.runs, "median_total": row.total, "median_ttft": row.ttft, "fastest_total": row.low,
            "slowest_total": row.high, "timings": [t.to_dict() for t in timings]}


def comparison(panes: Sequence["ChatPane"], settings: dict[str, Any], concurrent: bool, pair: list[str],
               pair_form: dict[str, Any]) -> dict[str, Any]:
    prompt = next((p.conversation.last_prompt() for p in panes if p.conversation.last_prompt() is not None), None)
    out_panes = []
    for pane in panes:
        turns = [_turn(t) for t in pane.turns]
        last = turns[-1] if turns else None
        out_panes.append({
            "pane": pane.number,
            "mode": pane.key,
            "label": pane.mode_text(),
            "text": last["answer"] if last else "",
            "hint": last["hint"] if last else None,
            "finish_reason": last["finish_reason"] if last else None,
            "timing": last["timing"] if last else None,
            "repeats": last["repeats"] if last else None,
            "turns": turns,
        })
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "prompt": prompt,
        "runs": "concurrent" if concurrent else "sequential",
        "settings": settings,
        "pair": {"loaded": pair, "form": pair_form},
        "panes": out_panes,
        "versions": versions(),
    }


def _ms(value: float | None) -> str:
    return DASH if not value else f"{value * 1000:.0f} ms"


def to_markdown(data: dict[str, Any]) -> str:
    lines = ["# C2C Playground comparison", ""]
    lines += [f"Exported {data['exported_at']}; panes ran {data['runs']}ly"
              + (" (timings overlap)." if data["runs"] == "concurrent" else " (each timing is the pane's own)."), ""]
    if data["prompt"] is not None:
        lines += ["## Prompt", "", *[f"> {line}" for line in data["prompt"].splitlines() or [""]], ""]
    if data["pair"]["loaded"]:
        lines += ["## Pair", "", *[f"- {line}" for line in data["pair"]["loaded"]], ""]
    lines += ["## Timing", "", "| Pane | Mode | Tokens | TTFT | Tokens/s | Total | Sharer prefill | Receiver prefill | "
              "Fuse | Hint |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for pane in data["panes"]:
        t = pane["timing"] or {}
        lines.append(
            f"| {pane['pane']} | {pane['label']} | {t.get('tokens_out', DASH)} | {_ms(t.get('ttft'))} | "
            f"{t.get('decode_tokens_per_s', 0):.1f} | {_ms(t.get('total'))} | {_ms(t.get('sharer_prefill'))} | "
            f"{_ms(t.get('receiver_prefill'))} | {_ms(t.get('fuse'))} | {_ms(t.get('hint'))} |")
    lines.append("")
    repeated = [pane for pane in data["panes"] if pane.get("repeats")]
    if repeated:  # the table above is each pane's last run; these are all of them
        lines += ["## Repeat runs", "", "| Pane | Mode | Runs | Median total | Median TTFT | Fastest | Slowest |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {pane['pane']} | {pane['label']} | {r['runs']} | {_ms(r['median_total'])} | "
                  f"{_ms(r['median_ttft'])} | {_ms(r['fastest_total'])} | {_ms(r['slowest_total'])} |"
                  for pane in repeated for r in [pane["repeats"]]]
        lines.append("")
    for pane in data["panes"]:
        lines += [f"## Pane {pane['pane']}: {pane['label']}", ""]
        for i, turn in enumerate(pane["turns"], 1):
            if len(pane["turns"]) > 1:
                lines += [f"### Turn {i}", "", *[f"> {line}" for line in turn["prompt"].splitlines() or [""]], ""]
            if turn.get("hints"):  # a team's: each sharer's hint after its name
                lines += ["Sharers' hints:", "", "```text", *[f"{n}: {h}" for n, h in turn["hints"].items()], "```", ""]
            elif turn["hint"]:
                lines += ["Sharer's hint:", "", "```text", turn["hint"], "```", ""]
            if turn["error"]:
                lines += [f"Error: {turn['error']}", ""]
            else:
                reason = turn["finish_reason"] or turn["state"]
                lines += [f"Answer ({reason}):", "", "```text", turn["answer"], "```", ""]
    lines += ["## Settings", "", "```json", json.dumps(data["settings"], indent=2, sort_keys=True), "```", ""]
    lines += ["## Versions", "", *[f"- {k}: {v}" for k, v in data["versions"].items()], ""]
    return "\n".join(lines)


def write(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON (``.json``) or Markdown (``.md``, the default for other suffixes)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        path = path.with_suffix(".md")
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        path.write_text(to_markdown(data), encoding="utf-8")
    return path
