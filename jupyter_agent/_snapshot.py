"""A session as static HTML: its header and newest timeline rows, with no script.

Carried beside the live widget in a notebook's output, so nbviewer, GitHub and a notebook
opened without a kernel still show what happened; the server serves it fresh (the lab
extension puts the newest one into the output when the notebook is saved).
"""

from __future__ import annotations

import html
import time

from ._state import TERMINAL, load_state_lean
from ._store import SqliteStore
from ._timeline import _MARK, TimelineRow, format_duration, left_text, timeline
from ._watch import PAGE_SIZE, cost_text, elapsed_s, with_totals

# (!important: the hosts' own table styles, e.g. JupyterLab's and nbconvert's right-aligned,
# fixed-layout cells, are more specific than these)
_SNAPSHOT_CSS = """<style>
.ja-snapshot{font:12px/1.4 var(--jp-ui-font-family,system-ui,sans-serif);
color:var(--jp-ui-font-color1,inherit);border:1px solid var(--jp-border-color2,#ddd);
border-radius:4px;padding:6px 8px;max-width:100%;overflow:auto}
.ja-snapshot table{border-collapse:collapse;width:100%;table-layout:auto!important;
margin:0!important}
.ja-snapshot td{padding:1px 6px!important;vertical-align:top;white-space:nowrap!important;
text-align:left!important;border:none!important;max-width:none}
.ja-snapshot td.ja-s-detail{white-space:normal!important;width:100%;
color:var(--jp-ui-font-color2,#555)}
.ja-snapshot .ja-s-muted{color:var(--jp-ui-font-color3,#888)}
.ja-snapshot tr.ja-s-left{opacity:.5}
</style>"""


def snapshot_html(store: SqliteStore, session_id: str, *, limit: int = PAGE_SIZE) -> str:
    """The session's header and its newest timeline rows as plain HTML (no script)."""
    row = store.get_session(session_id)
    last = row.last_seq
    if row.status not in TERMINAL:  # its row may lag the events the table shows
        state = load_state_lean(store, session_id)
        row, last = with_totals(row, state), max(last, state.last_seq)
    first = max(0, last - limit)
    rows = timeline(store.iter_events(session_id, after=first))
    e = html.escape
    cost = cost_text(row)
    facts = [
        ("status", row.status),
        ("model", row.model or ""),
        ("owner", row.owner or ""),
        ("steps", str(row.steps)),
        ("tool calls", str(row.tool_calls)),
        ("tokens", str(row.input_tokens + row.output_tokens)),
        ("cost", cost),
        ("elapsed", elapsed_text(elapsed_s(row.status, row.created_at, row.updated_at))),
    ]
    head = " · ".join(f"{e(k)} <b>{e(v)}</b>" for k, v in facts)
    earlier = f'<p class="ja-s-muted">{first} earlier events not shown</p>' if first > 0 else ""
    body = "\n".join(_snapshot_row(r) for r in rows)
    taken = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{_SNAPSHOT_CSS}\n"
        f'<div class="ja-snapshot" data-session-id="{e(session_id)}">\n'
        f'<div><b>{e(row.name or "agent")}</b> <span class="ja-s-muted">session '
        f"{e(session_id)}</span></div>\n<div>{head}</div>\n{earlier}\n"
        f"<table>\n{body}\n</table>\n"
        f'<p class="ja-s-muted">snapshot of event {last}, taken {e(taken)}; run the '
        f"notebook to see the live view</p>\n</div>"
    )


def _snapshot_row(r: TimelineRow) -> str:
    e = html.escape
    clock = time.strftime("%H:%M:%S", time.localtime(r.ts))
    left = left_text(r)
    marked = f' class="ja-s-left" title="{e(left[1:-1])}"' if left else ""
    return (
        f'<tr data-seq="{r.seq}" data-kind="{e(r.kind)}"{marked}>'
        f'<td class="ja-s-muted">{r.seq}</td><td class="ja-s-muted">{clock}</td>'
        f"<td>{_MARK.get(r.status, '·')}</td><td>{e(r.kind)}</td><td>{e(r.label)}</td>"
        f'<td class="ja-s-detail">{e(r.detail)}</td>'
        f'<td class="ja-s-muted">{e(format_duration(r.duration_ms))}</td></tr>'
    )


def elapsed_text(seconds: float) -> str:
    """``42s``, ``3m 07s``, ``2h 03m``, ``1d 04h``: how the widget shows elapsed time."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
