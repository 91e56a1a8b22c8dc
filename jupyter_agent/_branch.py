"""Fork and restore: branch a session at an event, or rewind it to one. Nothing is deleted.

A fork is a new session row pointing at its parent and fork point; its log starts with a
``fork`` event chained to the parent's event at that point, and its history before it is the
parent's (read through ``SqliteStore.lineage``, never copied).

A restore appends a ``restore`` event: the session's state becomes what it was right after the
target event (the fold does this), the branch it leaves stays in the log for anyone to read,
and files the file tools wrote since are put back as they were, from the before/after blobs
recorded with each call's result. Tokens and money spent on the abandoned branch stay counted.
"""

from __future__ import annotations

import collections
import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._clock import Clock
from ._errors import InvalidSessionState
from ._events import GENESIS_HASH, EventChain, EventKind
from ._state import load_state, session_totals
from ._store import SessionRow, SqliteStore
from ._store._leases import SessionLeased, is_alive
from ._store._sqlite import blob_digest
from ._tools._workspace import resolve_in_workspace

_CHANGES = (EventKind.TOOL_RESULT, EventKind.RESTORE)
_CALLS_PER_ANSWER = 1000  # the most tool calls one answer is looked back for (see check_point)


@dataclass(frozen=True, slots=True)
class FileVersion:
    """A file's content at some point of a session: ``None`` when it did not exist."""

    path: str
    digest: str | None


def check_point(store: SqliteStore, session_id: str, at: int, *, verb: str) -> None:
    """A clear error unless ``at`` is an event of the session at which it can go on: not
    between a model's answer and the tool calls it asked for (recorded with it, right after
    it), where the answer would ask for calls that never get a result."""
    last = store.get_session(session_id).last_seq
    if isinstance(at, bool) or not isinstance(at, int) or not 1 <= at <= last:
        raise ValueError(f"cannot {verb} session {session_id} at {at!r}: give an event 1..{last}")
    answers = store.iter_rows(
        session_id, after=max(0, at - _CALLS_PER_ANSWER), until=at, kinds=[EventKind.MODEL_RESPONSE]
    )
    for answer in collections.deque(answers, maxlen=1):  # the newest one
        seq, calls = answer[0], len(json.loads(answer[3]).get("tool_calls") or ())
        if at < seq + calls:
            raise ValueError(
                f"cannot {verb} session {session_id} at {at}: it is inside a step (the model's "
                f"answer, event {seq}, asked for tool calls recorded in "
                f"{_events(seq + 1, seq + calls)}); give {seq - 1} (before the answer) or "
                f"{seq + calls}"
            )


def _events(first: int, last: int) -> str:
    return f"event {first}" if first == last else f"events {first}-{last}"


def fork_session(
    store: SqliteStore,
    parent_id: str,
    at: int,
    *,
    actor: str,
    clock: Clock,
    name: str | None = None,
    workspace: str | Path | None = None,
) -> str:
    """A new session that continues from ``parent_id``'s event ``at``; returns its id.

    The fork works in its parent's workspace, or, given ``workspace``, in a copy of it whose
    files are put back as they were at the fork point (the parent's own folder, even at a
    point of the history it inherited).
    """
    check_point(store, parent_id, at, verb="fork")
    state = load_state(store, parent_id, at=at)
    parent = store.get_session(parent_id)
    # the parent's own folder: at a point it inherited (a fork of a fork), the state there
    # names the folder of the session it was forked from, whose files have moved on since
    home = state.workspace if at == parent.last_seq else _own_workspace(store, parent_id)
    fork_id = uuid.uuid4().hex[:12]
    payload: dict[str, Any] = {
        "parent_id": parent_id,
        "fork_seq": at,
        "name": name or f"{parent.name or 'agent'} (fork at {at})",
    }
    if workspace is not None:
        target = Path(workspace).expanduser().resolve()
        if target.exists() and any(target.iterdir()):
            raise ValueError(f"workspace {target} is not empty; give a new folder for the fork")
        # made beside it and renamed when whole: a fork cut short leaves no half copy there
        partial = target.with_name(f".{target.name}.fork-{fork_id}")
        try:
            shutil.copytree(Path(home), partial)
            put_files_back(store, partial, versions_at(file_history(store, parent_id), at))
            partial.replace(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        payload["workspace"] = str(target)
    elif home != state.workspace:
        payload["workspace"] = home
    chain = EventChain(fork_id, last_seq=at, last_hash=state.last_hash or GENESIS_HASH)
    # never before the event it follows: a session's own clock may run ahead of this one
    (branched,) = store.iter_events(parent_id, after=at - 1, until=at)
    event = chain.next(EventKind.FORK, payload, ts=max(clock.now(), branched.ts), actor=actor)
    state.apply(event)
    store.write(
        [event],
        session={
            **session_totals(state),
            "name": payload["name"],
            "parent_id": parent_id,
            "fork_seq": at,
            "owner": actor,
            "model": parent.model,
            "goal": parent.goal,
            "notebook": parent.notebook,
            "created_at": event.ts,
            "updated_at": event.ts,
        },
    )
    return fork_id


def _own_workspace(store: SqliteStore, session_id: str) -> str:
    """The folder a session works in now: the last one its start or a fork named (reading
    those events alone, not folding its whole history)."""
    workspace = ""
    for event in store.iter_events(session_id, kinds=[EventKind.SESSION_STARTED, EventKind.FORK]):
        p = event.payload
        if event.kind is EventKind.SESSION_STARTED:
            workspace = p["workspace"]
        else:
            workspace = p.get("workspace", workspace)
    return workspace


def check_restore_point(store: SqliteStore, session_id: str, at: int) -> SessionRow:
    """A clear error unless the session can be restored to ``at``; its row."""
    check_point(store, session_id, at, verb="restore")
    row = store.get_session(session_id)
    if at == row.last_seq:
        raise ValueError(f"session {session_id} is already at event {at}: nothing to restore")
    return row


def restore_session(
    store: SqliteStore,
    session_id: str,
    at: int,
    *,
    actor: str,
    clock: Clock,
    runtime_id: str | None = None,
) -> list[FileVersion]:
    """Rewind a session no engine runs to right after event ``at``; return the files put back.

    Refused with ``SessionLeased`` if a live process other than ``runtime_id`` holds it.
    """
    row = check_restore_point(store, session_id, at)
    if row.status == "running":
        raise InvalidSessionState(f"session {session_id} is running: pause it before restoring")
    holder = store.get_runtime(row.runtime_id) if row.runtime_id else None
    if holder is not None and holder.id != runtime_id and is_alive(holder, time.time()):
        raise SessionLeased(session_id, holder)  # before any file is touched
    state = load_state(store, session_id)
    workspace = Path(state.workspace)
    changes = file_history(store, session_id)
    wanted = versions_at(changes, at)
    logged = {path: after for _seq, path, _before, after in changes}  # as the log has them
    replaced = {v.path: _read(workspace, v.path) for v in wanted}  # kept: restorable again
    restored = put_files_back(store, workspace, wanted)  # files first: a crash here leaves
    files = []  # the log as it was, and a second restore finishes the job
    for v in wanted:
        # a file an earlier, cut-short restore put back already changes all the same: from
        # what the log says it was (so that undoing this restore brings that back)
        on_disk = _digest(replaced[v.path])
        before = on_disk if on_disk != v.digest else logged[v.path]
        if before != v.digest:
            files.append({"path": v.path, "before": before, "after": v.digest})
    chain = EventChain(session_id, last_seq=row.last_seq, last_hash=row.last_hash or GENESIS_HASH)
    ts = max(clock.now(), row.updated_at)
    event = chain.next(EventKind.RESTORE, {"to_seq": at, "files": files}, ts=ts, actor=actor)
    state.apply(event, rewind=lambda seq: load_state(store, session_id, at=seq))
    store.write(
        [event],
        session={**session_totals(state), "updated_at": ts},
        free_for=runtime_id or "",
        blobs=[b for v in restored if (b := replaced[v.path]) is not None],
    )
    return restored


# -- file versions ---------------------------------------------------------------------------


def file_history(
    store: SqliteStore, session_id: str
) -> list[tuple[int, str, str | None, str | None]]:
    """Every recorded file change, in log order: ``(seq, path, before, after)`` digests.

    Only the results that wrote files are decoded (most calls write none)."""
    changes = []
    for seq, _kind, _actor, payload in store.iter_rows(session_id, kinds=_CHANGES):
        if '"files":' not in payload:
            continue
        for f in json.loads(payload).get("files", ()):
            changes.append((seq, f["path"], f["before"], f["after"]))
    return changes


def versions_at(
    changes: list[tuple[int, str, str | None, str | None]], at: int
) -> list[FileVersion]:
    """Each file changed after event ``at``, with its content as it was right after ``at``."""
    last_before: dict[str, str | None] = {}
    first_after: dict[str, str | None] = {}
    for seq, path, before, after in changes:
        if seq <= at:
            last_before[path] = after
        elif path not in first_after:
            first_after[path] = before
    return [FileVersion(p, last_before.get(p, b)) for p, b in first_after.items()]


def put_files_back(
    store: SqliteStore, workspace: Path, versions: list[FileVersion]
) -> list[FileVersion]:
    """Make each file as ``versions`` says; return those that had to change."""
    changed = []
    for v in versions:
        target = resolve_in_workspace(workspace, v.path)
        now = blob_digest(target.read_bytes()) if target.is_file() else None
        if now == v.digest:
            continue
        if v.digest is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.get_blob(v.digest))
        changed.append(v)
    return changed


def _read(workspace: Path, path: str) -> bytes | None:
    target = resolve_in_workspace(workspace, path)
    return target.read_bytes() if target.is_file() else None


def _digest(data: bytes | None) -> str | None:
    return None if data is None else blob_digest(data)
