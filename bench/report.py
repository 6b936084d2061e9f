"""The table (absolute figures, then pgqueue / peer ratios) and the JSON file."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.contenders import get

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Row = tuple[str, str, Callable[[dict[str, Any]], float | None], bool]


def _get(figure: str, key: str = "value") -> Callable[[dict[str, Any]], float | None]:
    def pick(figures: dict[str, Any]) -> float | None:
        entry = figures.get(figure)
        return None if entry is None else entry.get(key)
    return pick


def _sizes(figure: str, which: str, queue_only: bool) -> Callable[[dict[str, Any]], float | None]:
    def pick(figures: dict[str, Any]) -> float | None:
        entry = figures.get(figure)
        if entry is None:
            return None
        sizes = entry[f"sizes_{which}"]
        value = sizes.get(entry["queue_table"]) if queue_only else sum(v for v in sizes.values() if v)
        return None if value is None else value / 2**20
    return pick


def _window(index: int) -> Callable[[dict[str, Any]], float | None]:
    def pick(figures: dict[str, Any]) -> float | None:
        entry = figures.get("sustained")
        if not entry or not entry["windows"]:
            return None
        return float(entry["windows"][index])
    return pick


# label, unit, picker, higher_is_better
ROWS: list[Row] = [
    ("enqueue one by one", "jobs/s", _get("enqueue_one"), True),
    ("enqueue bulk", "jobs/s", _get("enqueue_bulk"), True),
    ("drain, pgqueue's defaults (1 x 4) vs peer's best", "jobs/s", _get("drain_default"), True),
    ("drain, pgqueue 2 x 8 (no options) vs peer's best", "jobs/s", _get("drain_2x8"), True),
    ("drain, 1 process", "jobs/s", _get("drain_1"), True),
    ("drain, 4 processes", "jobs/s", _get("drain_4"), True),
    ("latency p50", "ms", _get("latency", "p50"), False),
    ("latency p95", "ms", _get("latency", "p95"), False),
    ("latency p99", "ms", _get("latency", "p99"), False),
    ("sustained", "jobs/s", _get("sustained"), True),
    ("sustained, first window", "jobs/s", _window(0), True),
    ("sustained, last window", "jobs/s", _window(-1), True),
    ("queue table before", "MB", _sizes("sustained", "before", True), False),
    ("queue table after", "MB", _sizes("sustained", "after", True), False),
    ("all tables after", "MB", _sizes("sustained", "after", False), False),
]


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms" or unit == "MB":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def render(results: dict[str, Any]) -> str:
    names = [n for n in results["contenders"] if n in results["figures"]]
    labels = [get(n).label for n in names]
    figures = results["figures"]
    absolute: list[list[str]] = []
    for label, unit, pick, _ in ROWS:
        values = [pick(figures[n]) for n in names]
        if all(v is None for v in values):
            continue
        absolute.append([f"{label} ({unit})", *(_fmt(v, unit) for v in values)])
    out = [_table(["figure", *labels], absolute)]
    if "pgqueue" in names and len(names) > 1:
        peers = [n for n in names if n not in ("pgqueue", "pgqueue_async")]
        ratios: list[list[str]] = []
        for label, unit, pick, higher in ROWS:
            if unit == "MB":
                continue
            mine = pick(figures["pgqueue"])
            cells = []
            for peer in peers:
                theirs = pick(figures[peer])
                if not mine or not theirs:
                    cells.append("-")
                else:
                    cells.append(f"{mine / theirs:.2f}x")
            if any(c != "-" for c in cells):
                better = "higher" if higher else "lower"
                ratios.append([f"{label} ({better} is better)", *cells])
        out.append("")
        out.append("pgqueue / peer")
        out.append(_table(["figure", *(get(p).label for p in peers)], ratios))
    out.append("")
    out.append("layouts:")
    for n in names:
        layouts = {k: v["layout"] for k, v in figures[n].items() if isinstance(v, dict)
                   and "layout" in v}
        capped = [k for k, v in figures[n].items() if isinstance(v, dict) and v.get("capped")]
        note = f"  (time-capped: {', '.join(capped)})" if capped else ""
        out.append(f"  {get(n).label}: " + "; ".join(f"{k} {v}" for k, v in layouts.items()) + note)
    return "\n".join(out)


def write(results: dict[str, Any], path: Path | None = None) -> Path:
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"{stamp}{'-quick' if results['quick'] else ''}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median value (the lower middle one), with every run's value kept."""
    if len(runs) == 1:
        return runs[0]
    middle = statistics.median_low(r["value"] for r in runs)
    chosen = dict(next(r for r in runs if r["value"] == middle))
    chosen["runs"] = [r["value"] for r in runs]
    return chosen
