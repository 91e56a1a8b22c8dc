"""A session as a file: JSON (everything, machine-readable), JSON lines (the log as recorded)
or Markdown (for people)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ._events import EventKind
from ._store import SessionRow, SqliteStore
from ._timeline import counted, format_duration, left_text, timeline
from ._watch import cost_text


def export_json(store: SqliteStore, row: SessionRow) -> str:
    """The session row and every event, payloads included, as one JSON document; with
    ``outputs``, the whole text of each tool output too long to be kept in its event (the
    event holds its start and the blob's digest, ``output_blob``), by digest."""
    events, outputs = [], {}
    for e in store.iter_events(row.id):
        events.append(e.to_dict())
        if e.kind is EventKind.TOOL_RESULT and '"output_blob":' in e.payload_json:
            digest = str(e.payload["output_blob"])
            outputs[digest] = store.get_blob(digest).decode("utf-8", errors="replace")
    doc = {
        "format": "jupyter-agent-session",
        "version": 1,
        "session": asdict(row),
        "events": events,
        "outputs": outputs,
    }
    return json_text(doc, indent=1) + "\n"


# DEL and the C1 controls, which JSON lets through as they are (it escapes C0): a terminal
# showing the JSON may act on them, so they are written as \u escapes too
_C1 = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0))}


def json_text(value: object, *, indent: int | None = None) -> str:
    """``value`` as JSON text, UTF-8 as it is but every control character escaped."""
    return json.dumps(value, indent=indent, ensure_ascii=False).translate(_C1)


def export_markdown(store: SqliteStore, row: SessionRow) -> str:
    """A readable report: header, timeline table, final result."""
    cost = cost_text(row)
    lines = [
        f"# Session `{row.id}`: {row.name}",
        "",
        f"- **status**: {row.status}",
        f"- **model**: {row.model}",
        f"- **owner**: {row.owner}",
        f"- **goal**: {row.goal}",
        f"- **totals**: {counted(row.steps, 'step')}, {counted(row.tool_calls, 'tool call')}, "
        f"{row.input_tokens + row.output_tokens} tokens, cost {cost}",
        "",
        "| seq | kind | what | status | duration | detail |",
        "|---:|---|---|---|---:|---|",
    ]
    result = None
    for r in timeline(store.iter_events(row.id)):
        detail = f"{r.detail} {left_text(r)}".strip().replace("|", "\\|")
        lines.append(
            f"| {r.seq} | {r.kind} | {r.label} | {r.status} | "
            f"{format_duration(r.duration_ms)} | {detail} |"
        )
        if r.kind == "result" and r.abandoned_by is None:  # (not one a restore left)
            result = r
    if result is not None:
        state_result = store.iter_events(row.id, after=result.seq - 1, until=result.seq)
        for e in state_result:
            lines += ["", "## Result", "", str(e.payload.get("result", ""))]
    return "\n".join(lines) + "\n"


def export_jsonl(store: SqliteStore, row: SessionRow) -> str:
    """The session row on the first line, then one event a line."""
    head = {"format": "jupyter-agent-session", "version": 1, "session": asdict(row)}
    lines = [json_text(head)]
    lines += [json_text(e.to_dict()) for e in store.iter_events(row.id)]
    return "\n".join(lines) + "\n"


EXPORTERS: dict[str, Callable[[SqliteStore, SessionRow], str]] = {
    "markdown": export_markdown,
    "md": export_markdown,
    "json": export_json,
    "jsonl": export_jsonl,
}


def write_export(text: str, path: str | Path, store: SqliteStore) -> Path:
    """Write an export to ``path``; refuse (``ValueError``) a path that is the store's own
    file or one of its companions, which the export would destroy."""
    target = Path(path).expanduser()
    ours = [store.path, *(Path(f"{store.path}{end}") for end in ("-wal", "-shm", "-journal"))]
    if any(target.resolve() == p.resolve() or _same_file(target, p) for p in ours):
        raise ValueError(
            f"{path} is the store the session is read from: write the export to another file"
        )
    target.write_text(text, encoding="utf-8")
    return target


def _same_file(a: Path, b: Path) -> bool:
    """Whether both name one file (a hard link, another spelling on a folded file system)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is not there
        return False
