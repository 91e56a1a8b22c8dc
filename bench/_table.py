"""The one table: a row per measurement, the systems side by side, and the ratios."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

Cell = float | str | None
COLUMNS = ("project", "LangGraph", "DBOS", "floor", "proj/LG", "proj/DBOS", "proj/floor")


@dataclass
class Row:
    metric: str
    at: str
    durability: str
    project: Cell = None
    langgraph: Cell = None
    dbos: Cell = None
    floor: Cell = None
    floor_label: str = ""  # what the floor column holds when it is not the SQLite floor

    def ratio(self, other: Cell) -> float | None:
        if isinstance(self.project, float | int) and isinstance(other, float | int) and other:
            return float(self.project) / float(other)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric.strip(),
            "at": self.at,
            "durability": self.durability,
            "project": self.project,
            "langgraph": self.langgraph,
            "dbos": self.dbos,
            "floor": self.floor,
            "floor_is": self.floor_label or ("sqlite floor" if self.floor is not None else ""),
            "project_over_langgraph": self.ratio(self.langgraph),
            "project_over_dbos": self.ratio(self.dbos),
            "project_over_floor": self.ratio(self.floor),
        }


def number(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value:.3f} (1/{1 / value:.3g})" if value else "0"
    return f"{value:.3g}"


def render(rows: list[Row], *, title: str, notes: list[str]) -> str:
    cells = []
    for r in rows:
        floor = number(r.floor)
        if r.floor_label and r.floor is not None:
            floor = f"{floor} ({r.floor_label})"
        cells.append(
            [
                r.metric,
                r.at,
                r.durability,
                number(r.project),
                number(r.langgraph),
                number(r.dbos),
                floor,
                ratio(r.ratio(r.langgraph)),
                ratio(r.ratio(r.dbos)),
                ratio(r.ratio(r.floor)),
            ]
        )
    header = ["metric", "at", "durability", *COLUMNS]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    left = 3  # metric, at and durability read left to right; numbers line up on the right

    def line(values: list[str]) -> str:
        parts = [
            v.ljust(w) if i < left else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [title, "", line(header), "  ".join("-" * w for w in widths)]
    previous = None
    for r, c in zip(rows, cells, strict=True):
        if previous is not None and r.metric.strip() != previous and not r.metric.startswith("  "):
            out.append("")
        previous = r.metric.strip()
        out.append(line(c))
    out.append("")
    for note in notes:
        out.extend(textwrap.wrap(note, 100, initial_indent="- ", subsequent_indent="  "))
    return "\n".join(out)
