"""A session's events as a timeline: one row per model turn, tool call, message or change.

Shared by every view (CLI, exports, later the widget and the lab panel) so they agree on what
a step is and how it went.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ._events import Event, EventKind

RowStatus = Literal["ok", "error", "running", "waiting", "skipped", "info"]
_MARK = {"ok": "✓", "error": "✗", "running": "…", "waiting": "?", "skipped": "-", "info": "·"}


@dataclass(slots=True)
class TimelineRow:
    seq: int
    ts: float
    kind: str  # model|tool|message|plan|status|approval|timer|error|result|fork|restore
    label: str
    detail: str = ""
    status: RowStatus = "info"
    duration_ms: float | None = None
    actor: str = "agent"
    abandoned_by: int | None = None  # the restore that left this row's branch behind
    result_seq: int | None = None  # a tool call's: the event that completed it


def timeline(events: Iterable[Event]) -> list[TimelineRow]:
    """Fold events into rows; a tool call's row is completed by its result."""
    rows: list[TimelineRow] = []
    calls: dict[str, TimelineRow] = {}
    asked_at: dict[str, float] = {}  # the newest answer's calls: when it asked for each
    undone: list[_Undone] = []
    marks: dict[int, list[tuple[int, int | None]]] = {}  # per row: (restore, its mark since)
    for e in events:
        if e.kind is EventKind.RESTORE:
            _rewind(calls, undone, e.seq, e.payload["to_seq"])
            _leave_branch(rows, marks, e.seq, e.payload["to_seq"])
        row = _row(e, e.payload, calls, asked_at)
        if row is not None:
            rows.append(row)
    return rows


def _leave_branch(
    rows: list[TimelineRow],
    marks: dict[int, list[tuple[int, int | None]]],
    restore_seq: int,
    to_seq: int,
) -> None:
    """The rows after ``to_seq`` are a branch the restore at ``restore_seq`` leaves behind
    (if no earlier restore left them); the rows up to it are marked as they were at
    ``to_seq`` (a restore of a restore takes a branch back, and one to a point in between
    leaves it again). The page's fold does the same (widget.js)."""
    for r in rows:
        if r.seq <= to_seq:
            was = next((m for at, m in reversed(marks.get(id(r), ())) if at <= to_seq), None)
        elif r.abandoned_by is None:
            was = restore_seq
        else:
            continue
        if was != r.abandoned_by:
            r.abandoned_by = was
            marks.setdefault(id(r), []).append((restore_seq, was))


@dataclass(slots=True)
class _Undone:
    """A row a restore (at ``restore_seq``) closed while it was open: it was ``status`` (with
    ``detail``) from event ``since`` on, which a later restore to a point in between (a
    restore of the restore) puts back."""

    key: str
    row: TimelineRow
    status: RowStatus
    detail: str
    duration_ms: float | None
    result_seq: int | None
    since: int
    restore_seq: int


def _rewind(
    calls: dict[str, TimelineRow], undone: list[_Undone], restore_seq: int, to_seq: int
) -> None:
    """A restore to ``to_seq``: rows an earlier restore closed that were open at ``to_seq``
    are open again, as they were then; rows still open that began after it are undone (a
    call whose approval was asked after it runs again: it is asked anew), and calls begun
    before it whose result came after it are open again (they run again). The page's fold
    does the same (widget.js)."""
    back: dict[int, _Undone] = {}  # per row, its state as of to_seq: the latest begun by then
    for u in undone:
        if u.since <= to_seq < u.restore_seq and (
            id(u.row) not in back or u.since > back[id(u.row)].since
        ):
            back[id(u.row)] = u
    for u in back.values():
        u.row.status, u.row.detail = u.status, u.detail
        u.row.duration_ms, u.row.result_seq = u.duration_ms, u.result_seq
        calls[u.key] = u.row
    undone[:] = [u for u in undone if not (u.since <= to_seq < u.restore_seq)]

    def keep(key: str, row: TimelineRow, since: int, status: RowStatus | None = None) -> None:
        was = status or row.status
        undone.append(
            _Undone(key, row, was, row.detail, row.duration_ms, row.result_seq, since, restore_seq)
        )

    def close(key: str, row: TimelineRow, since: int, status: RowStatus) -> None:
        keep(key, row, since)
        row.status = status
        if status == "skipped":
            row.detail = f"{row.detail}  ⇒ cut off by the restore".strip()

    before = dict(calls)
    for key, row in before.items():
        asked = before.get(f"?{key}")
        if row.seq > to_seq and row.status in ("running", "waiting"):
            if row.status == "waiting" and asked is not None:  # running until it was asked
                keep(key, row, row.seq, "running")
                close(key, row, asked.seq, "skipped")
            else:
                close(key, row, row.seq, "skipped")
            del calls[key]
        elif row.status == "waiting" and asked is not None and asked.seq > to_seq:
            close(key, row, asked.seq, "running")  # asked after the point: it runs again
        elif row.seq <= to_seq and row.result_seq is not None and row.result_seq > to_seq:
            if key.startswith("?"):  # a question answered after the point: asked again
                close(key, row, row.result_seq, "waiting")
                row.result_seq = None
                continue
            # its result is on the branch left: open again, as at the point (it runs again,
            # or waits for the person its question is open to again)
            answered_at = asked.result_seq if asked is not None else None
            waits = asked is not None and asked.seq <= to_seq
            waits = waits and (answered_at is None or answered_at > to_seq)
            close(key, row, row.result_seq, "waiting" if waits else "running")
            row.detail = row.detail[: max(0, row.detail.rfind("  ⇒ "))]
            row.duration_ms = row.result_seq = None


def _row(
    e: Event, p: dict[str, Any], calls: dict[str, TimelineRow], asked_at: dict[str, float]
) -> TimelineRow | None:
    k = e.kind
    if k is EventKind.SESSION_STARTED:
        return TimelineRow(e.seq, e.ts, "status", "started", _short(p["goal"], 100), actor=e.actor)
    if k is EventKind.MODEL_RESPONSE:
        asked_at.clear()
        asked_at.update((c["id"], e.ts) for c in p["tool_calls"])
        names = ", ".join(c["name"] for c in p["tool_calls"])
        detail = f"→ {names}" if names else f"answer: {_short(p['text'], 80)}"
        if names and p["text"]:
            detail = f"{_short(p['text'], 50)} {detail}"
        u = p["usage"]
        tokens = u.get("input_tokens", 0) + u.get("output_tokens", 0)
        return TimelineRow(
            e.seq,
            e.ts,
            "model",
            f"step {p['step']}",
            f"{detail}  [{tokens} tok]",
            "ok",
            p.get("duration_ms"),
        )
    if k is EventKind.MODEL_RETRY:
        err = p["error"]
        return TimelineRow(
            e.seq,
            e.ts,
            "model",
            f"retry {p['attempt']}",
            f"{_short(err.get('message', ''), 80)}; again in {p['delay_s']:g} s",
            "error",
        )
    if k is EventKind.TOOL_CALL:
        row = TimelineRow(e.seq, e.ts, "tool", p["name"], _args(p["arguments"]), "running")
        calls[p["call_id"]] = row
        return row
    if k is EventKind.TOOL_RESULT:
        call = calls.get(p["call_id"])
        # a row of its own if it is its own intent (recorded with it: the arguments are here),
        # if its intent is before the window being shown, or if its row is closed (a call run
        # again after a restore to between its intent and its result)
        fresh = call is None or call.status not in ("running", "waiting")
        if call is None or fresh:
            detail, ts = "run again" if p.get("rerun") else "", e.ts
            if "arguments" in p:  # its own intent: its row begins as the answer asked for it
                detail, ts = _args(p["arguments"]), asked_at.get(p["call_id"], e.ts)
            call = calls[p["call_id"]] = TimelineRow(e.seq, ts, "tool", p["name"], detail)
        elif p.get("rerun"):  # (a row a restore opened again)
            call.detail = f"{call.detail} (run again)".strip()
        call.status = "skipped" if p.get("skipped") else "error" if p["is_error"] else "ok"
        call.duration_ms = p.get("duration_ms")
        call.detail = f"{call.detail}  ⇒ {_short(p['output'], 60)}".strip()
        call.result_seq = e.seq
        return call if fresh else None
    if k is EventKind.MESSAGE:
        return TimelineRow(
            e.seq, e.ts, "message", f"from {e.actor}", _short(p["text"], 100), actor=e.actor
        )
    if k is EventKind.PLAN_UPDATED:
        marks = {"done": "[x]", "active": "[>]", "pending": "[ ]"}
        plan = " ".join(f"{marks.get(i['status'], '[ ]')} {i['step']}" for i in p["plan"])
        return TimelineRow(e.seq, e.ts, "plan", "plan", _short(plan, 120))
    if k is EventKind.APPROVAL_REQUESTED:
        call = calls.get(p["call_id"])
        if call is not None:
            call.status = "waiting"
        asked = calls[f"?{p['call_id']}"] = TimelineRow(
            e.seq,
            e.ts,
            "approval",
            "approval asked",
            f"{p.get('name', '')} {p['call_id']} ({p['reason']})",
            "waiting",
        )
        return asked
    if k is EventKind.APPROVAL_DECIDED:
        approved = p["decision"] == "approve"
        question = calls.get(f"?{p['call_id']}")
        if question is not None:  # answered: no longer a question
            question.status = "ok" if approved else "skipped"
            question.result_seq = e.seq
        call = calls.get(p["call_id"])
        if approved and call is not None and call.status == "waiting":
            call.status = "running"  # (until its result)
        label = f"{'approved' if approved else 'denied'} by {e.actor}"
        return TimelineRow(e.seq, e.ts, "approval", label, p["call_id"], actor=e.actor)
    if k is EventKind.TIMER_SET:
        return TimelineRow(
            e.seq,
            e.ts,
            "timer",
            "sleep until",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["wake_at"])),
        )
    if k is EventKind.STATUS_CHANGED and p["status"] not in ("running", "sleeping"):
        return TimelineRow(e.seq, e.ts, "status", p["status"], p.get("reason", ""), actor=e.actor)
    if k is EventKind.BUDGET_EXCEEDED:
        return TimelineRow(
            e.seq,
            e.ts,
            "status",
            "limit reached",
            f"{p['kind']}: {p['used']:g} of {p['limit']:g}",
            "error",
        )
    if k is EventKind.ERROR:
        return TimelineRow(e.seq, e.ts, "error", p["code"], _short(p["message"], 120), "error")
    if k is EventKind.FORK:
        return TimelineRow(
            e.seq,
            e.ts,
            "fork",
            f"forked by {e.actor}",
            f"from {p['parent_id']} after event {p['fork_seq']}: {p['name']}",
            actor=e.actor,
        )
    if k is EventKind.RESTORE:  # (its rows were rewound before: see _rewind)
        files = ", ".join(f["path"] for f in p["files"])
        detail = f"back to event {p['to_seq']}" + (f"; files put back: {files}" if files else "")
        return TimelineRow(
            e.seq, e.ts, "restore", f"restored by {e.actor}", _short(detail, 120), actor=e.actor
        )
    if k is EventKind.SESSION_FINISHED:
        return TimelineRow(e.seq, e.ts, "result", "done", _short(p["result"], 120), "ok")
    return None


def format_rows(rows: Iterable[TimelineRow]) -> list[str]:
    """Rows as text lines: seq, time, mark, what, detail, duration."""
    lines = []
    for r in rows:
        clock = time.strftime("%H:%M:%S", time.localtime(r.ts))
        mark = _MARK[r.status]
        what = f"{r.kind:<8} {r.label}"
        dur = format_duration(r.duration_ms)
        detail = f"{r.detail}  {left_text(r)}" if r.abandoned_by is not None else r.detail
        lines.append(f"{r.seq:>6}  {clock}  {mark} {what:<28} {dur:>9}  {detail}".rstrip())
    return lines


def left_text(r: TimelineRow) -> str:
    """How a row on a branch a restore left is marked (``""`` for the session's own)."""
    if r.abandoned_by is None:
        return ""
    return f"(left by the restore at event {r.abandoned_by})"


def counted(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``, ``1 tool call``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def _args(arguments: str) -> str:
    try:
        value = json.loads(arguments)
    except ValueError:
        return _short(arguments, 70)
    if isinstance(value, dict):
        parts = [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in value.items()]
        return _short(", ".join(parts), 70)
    return _short(arguments, 70)


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
