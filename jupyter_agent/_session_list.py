"""``sessions()``'s result: a list of handles that shows itself as a table.

A notebook renders ``_repr_html_``; a terminal or ``print`` gets the same columns as text. Rows
are read from the store when shown, so showing the list again shows the sessions as they are now.
"""

from __future__ import annotations

import html
import time

from ._session import Session
from ._store import SessionRow
from ._watch import cost_text

COLUMNS = ("id", "name", "status", "model", "owner", "steps", "tool calls", "cost", "updated")
_NUMERIC = frozenset({"steps", "tool calls", "cost"})


class SessionList(list[Session]):
    """Sessions, most recently updated first; a table in a notebook, text elsewhere."""

    def table(self) -> list[tuple[str, ...]]:
        """One tuple of cells (as shown) per session, in ``COLUMNS`` order."""
        return [_cells(s.row) for s in self]

    def __repr__(self) -> str:
        rows = self.table()
        if not rows:
            return "(no sessions)"
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
        lines = [_text_line(COLUMNS, widths), *(_text_line(r, widths) for r in rows)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self.table()
        if not rows:
            return "<p><em>no sessions</em></p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(f"<tr>{_html_cells(r)}</tr>" for r in rows)
        return (
            '<table class="jupyter-agent-sessions">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def _cells(row: SessionRow) -> tuple[str, ...]:
    cost = cost_text(row)
    updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.updated_at))
    return (
        row.id,
        row.name or "",
        row.status,
        row.model or "",
        row.owner or "",
        str(row.steps),
        str(row.tool_calls),
        cost,
        updated,
    )


def _text_line(cells: tuple[str, ...], widths: list[int]) -> str:
    parts = [
        c.rjust(w) if name in _NUMERIC else c.ljust(w)
        for c, w, name in zip(cells, widths, COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _html_cells(cells: tuple[str, ...]) -> str:
    return "".join(
        f'<td style="text-align:right">{html.escape(c)}</td>'
        if name in _NUMERIC
        else f"<td>{html.escape(c)}</td>"
        for c, name in zip(cells, COLUMNS, strict=True)
    )
