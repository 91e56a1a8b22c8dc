"""Runtimes and leases: which process runs which session, and who notices when one dies.

Each process that runs sessions registers a runtime (host, pid, the pid's start time, a
heartbeat). Running a session takes its lease (``sessions.runtime_id``); every write the engine
makes is fenced by it, so a process that lost its lease cannot append. A sweep finds runtimes
that are gone — on this host by their pid (a zombie counts as dead, and the start time defeats
pid reuse), elsewhere by a stale heartbeat — ends them, and marks their sessions
``interrupted`` with a chained ``status_changed`` event. Measured in notes/kernel-runtime.md:
0.4 s from kill -9 to detection by pid, the heartbeat TTL otherwise.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .._errors import SessionConflict, SessionError
from .._events import GENESIS_HASH, EventChain, EventKind
from ._schema import SEQ_BITS

HEARTBEAT_TTL_S = 10.0
LIVE_STATUSES = ("running", "sleeping")  # a session that some process runs


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """One process that runs sessions."""

    id: str
    host: str
    pid: int
    pid_start: str | None
    user: str
    started_at: float
    heartbeat_at: float
    ended_at: float | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (user {self.user}, runtime {self.id})"


class SessionLeased(SessionError):
    """The session is running in another live process."""

    code = "session_leased"

    def __init__(self, session_id: str, owner: RuntimeInfo) -> None:
        super().__init__(
            f"session {session_id} is running in another process: {owner.describe()}; "
            "it goes on there (to run it here, release it there with Session.release(), or "
            "end that process)"
        )
        self.session_id, self.owner = session_id, owner


class LeaseLost(SessionConflict):
    """This process no longer holds the session's lease (another process took it over)."""

    code = "lease_lost"


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` from /proc (Linux), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def local_host() -> str:
    """This machine as far as pids go: the host name, plus the pid namespace when there is one
    (two containers may share a host name but not their pids)."""
    try:
        return f"{socket.gethostname()}#pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def this_process(runtime_id: str, user: str, now: float) -> RuntimeInfo:
    pid = os.getpid()
    return RuntimeInfo(runtime_id, local_host(), pid, process_start(pid), user, now, now)


def is_alive(rt: RuntimeInfo, now: float, *, ttl_s: float = HEARTBEAT_TTL_S) -> bool:
    if rt.ended_at is not None:
        return False
    if rt.host == local_host() and rt.pid_start:
        return process_start(rt.pid) == rt.pid_start
    return now - rt.heartbeat_at < ttl_s


Liveness = Callable[[RuntimeInfo, float], bool]

_RUNTIME_COLUMNS = "id, host, pid, pid_start, user, started_at, heartbeat_at, ended_at"


def _runtime(conn: sqlite3.Connection, runtime_id: str) -> RuntimeInfo | None:
    row = conn.execute(
        f"SELECT {_RUNTIME_COLUMNS} FROM runtimes WHERE id = ?", (runtime_id,)
    ).fetchone()
    return RuntimeInfo(*row) if row else None


def register(conn: sqlite3.Connection, rt: RuntimeInfo) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO runtimes ({_RUNTIME_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
        (
            rt.id,
            rt.host,
            rt.pid,
            rt.pid_start,
            rt.user,
            rt.started_at,
            rt.heartbeat_at,
            rt.ended_at,
        ),
    )


def heartbeat(conn: sqlite3.Connection, runtime_id: str, now: float) -> bool:
    """Renew the runtime; False if it was ended (another process judged it dead)."""
    cur = conn.execute(
        "UPDATE runtimes SET heartbeat_at = ? WHERE id = ? AND ended_at IS NULL", (now, runtime_id)
    )
    return cur.rowcount == 1


def acquire(
    conn: sqlite3.Connection, session_id: str, runtime_id: str, now: float, alive: Liveness
) -> None:
    """Take the session's lease, unless a live runtime other than ours holds it."""
    check_free(conn, session_id, runtime_id, now, alive)
    row = conn.execute("SELECT runtime_id FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is not None and row[0] != runtime_id:
        # a takeover: the run the old holder was asked to pause, stop, resume or restore is
        # over, and this one was started since; what people said (messages, decisions on
        # calls) stays, for the new holder to record
        conn.execute(
            "UPDATE commands SET taken_at = ?, taken_by = 'expired' WHERE session_id = ? "
            "AND taken_at IS NULL AND verb NOT IN ('tell', 'approve', 'deny')",
            (now, session_id),
        )
    conn.execute("UPDATE sessions SET runtime_id = ? WHERE id = ?", (runtime_id, session_id))


def hand_over(
    conn: sqlite3.Connection, session_id: str, from_runtime: str, to_runtime: str
) -> None:
    """Move the session's lease from ``from_runtime`` (a kernel) to ``to_runtime`` (its worker),
    only if ``from_runtime`` still holds it. Commands left meanwhile stay for the new holder."""
    row = conn.execute("SELECT runtime_id FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None or row[0] != from_runtime:
        holder = f"runtime {row[0]}" if row and row[0] else "nobody"
        raise LeaseLost(
            f"session {session_id} was to be handed over by runtime {from_runtime}, "
            f"but {holder} holds it now"
        )
    conn.execute("UPDATE sessions SET runtime_id = ? WHERE id = ?", (to_runtime, session_id))


def check_free(
    conn: sqlite3.Connection, session_id: str, runtime_id: str | None, now: float, alive: Liveness
) -> None:
    """Refuse (``SessionLeased``) unless the session is held by nobody alive but ``runtime_id``."""
    row = conn.execute("SELECT runtime_id FROM sessions WHERE id = ?", (session_id,)).fetchone()
    holder = row[0] if row else None
    if holder and holder != runtime_id:
        owner = _runtime(conn, holder)
        if owner is not None and alive(owner, now):
            raise SessionLeased(session_id, owner)


def release(conn: sqlite3.Connection, session_id: str, runtime_id: str) -> None:
    conn.execute(
        "UPDATE sessions SET runtime_id = NULL WHERE id = ? AND runtime_id = ?",
        (session_id, runtime_id),
    )


def check_fence(conn: sqlite3.Connection, session_id: str, runtime_id: str) -> int | None:
    """Refuse (``LeaseLost``) unless ``runtime_id`` holds the session; return the session's
    number (None: no such session)."""
    row = conn.execute(
        "SELECT runtime_id, num FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    if row[0] != runtime_id:
        raise LeaseLost(
            f"this process no longer holds session {session_id}: "
            f"{'runtime ' + row[0] if row[0] else 'nobody'} does now; "
            "its events are refused"
        )
    return int(row[1])


def interrupt(
    conn: sqlite3.Connection,
    session_id: str,
    *,
    now: float,
    reason: str,
    status: str = "interrupted",
    actor: str = "runtime",
    ended: str = "its process ended first",
) -> bool:
    """Mark a leased running session ``interrupted`` (or ``status``, e.g. ``stopped`` when a
    stop was asked for before its process ended) with a chained event; clear its lease.

    A stop or pause asked for through the store that no engine acted on (left open, or not
    taken yet: ``asked_in_commands``) is what it becomes instead of ``interrupted`` (a stop
    also instead of a pause), its reason saying the run ``ended`` first."""
    row = conn.execute(
        "SELECT status, last_seq, last_hash, updated_at, num FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return False
    was, last_seq, last_hash, updated_at, num = row
    base = num << SEQ_BITS
    newer = conn.execute(  # the row's position may lag the log (see SESSION_ROW_EVERY_S)
        "SELECT seq, hash, ts FROM event_log WHERE id > ? AND id < ? ORDER BY id DESC LIMIT 1",
        (base + last_seq, base + (1 << SEQ_BITS)),
    ).fetchone()
    if newer is not None:
        last_seq, last_hash, updated_at = newer[0], newer[1], max(newer[2], updated_at or 0.0)
    # a session on a fake or fast clock: its time never goes back (commands keep the wall's)
    taken_at, now = now, max(now, updated_at or 0.0)
    if was in LIVE_STATUSES:
        asked = asked_in_commands(conn, session_id, taken_at)  # (taken: the run ends here)
        if asked is not None and (status, asked[0]) in _OVERRIDDEN:
            status, actor = asked
            reason = f"{status} by {actor} ({ended})"
        chain = EventChain(session_id, last_seq=last_seq, last_hash=last_hash or GENESIS_HASH)
        e = chain.next(
            EventKind.STATUS_CHANGED, {"status": status, "reason": reason}, ts=now, actor=actor
        )
        row = (e.session_id, e.seq, e.ts, e.kind.value, e.actor, e.v, e.payload_json, e.hash)
        conn.execute(
            "INSERT INTO event_log (id, session_id, seq, ts, kind, actor, v, payload, hash) "
            "VALUES (?9 + ?2, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            (*row, base),
        )
        conn.execute(
            "UPDATE sessions SET status = ?, updated_at = ?, last_seq = ?, "
            "last_hash = ?, runtime_id = NULL WHERE id = ?",
            (status, now, e.seq, e.hash, session_id),
        )
        return True
    conn.execute("UPDATE sessions SET runtime_id = NULL WHERE id = ?", (session_id,))
    return False


_OVERRIDDEN = {  # (what the session was to become, what a command asked): the command wins
    ("interrupted", "paused"),
    ("interrupted", "stopped"),
    ("paused", "stopped"),
}


def mark_taken(
    conn: sqlite3.Connection, command_ids: Iterable[int], *, taken_by: str, now: float
) -> None:
    """Take commands (each once: one taken already stays as it was)."""
    conn.executemany(
        "UPDATE commands SET taken_at = ?, taken_by = ? WHERE id = ? AND taken_at IS NULL",
        [(now, taken_by, i) for i in command_ids],
    )


def asked_in_commands(
    conn: sqlite3.Connection, session_id: str, now: float
) -> tuple[str, str] | None:
    """``(status, who)``: the stop (or else pause) waiting in the session's commands, taken
    here as done; None if there is none."""
    rows = conn.execute(
        "SELECT id, verb, actor FROM commands WHERE session_id = ? AND taken_at IS NULL "
        "AND verb IN ('pause', 'stop') ORDER BY id",
        (session_id,),
    ).fetchall()
    if not rows:
        return None
    mark_taken(conn, [r[0] for r in rows], taken_by="ended", now=now)
    verb, who = next(((v, a) for _, v, a in rows if v == "stop"), (rows[0][1], rows[0][2]))
    return ("stopped" if verb == "stop" else "paused"), who


def end(
    conn: sqlite3.Connection,
    runtime_id: str,
    *,
    now: float,
    reason: str,
    asked: Mapping[str, tuple[str, str]] | None = None,
) -> list[str]:
    """End a runtime: its leased sessions become ``interrupted``, or, for those in ``asked``
    (``{session: (status, who)}``: a stop or pause asked for that the engine had not reached),
    what was asked. Returns their ids."""
    conn.execute(
        "UPDATE runtimes SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (now, runtime_id)
    )
    sessions = [
        r[0] for r in conn.execute("SELECT id FROM sessions WHERE runtime_id = ?", (runtime_id,))
    ]
    ended = []
    for s in sessions:
        status, who = (asked or {}).get(s, ("interrupted", ""))
        why = f"{status} by {who} (its process ended first)" if who else reason
        if interrupt(conn, s, now=now, reason=why, status=status, actor=who or "runtime"):
            ended.append(s)
    return ended


def sweep(conn: sqlite3.Connection, *, now: float, alive: Liveness) -> list[str]:
    """End every runtime that is gone; return the sessions that became ``interrupted``.

    A session leased by a runtime that is missing or already ended is orphaned too.
    """
    rows = conn.execute(f"SELECT {_RUNTIME_COLUMNS} FROM runtimes WHERE ended_at IS NULL")
    dead = [rt for rt in (RuntimeInfo(*r) for r in rows) if not alive(rt, now)]
    interrupted: list[str] = []
    for rt in dead:
        interrupted += end(conn, rt.id, now=now, reason=f"its process ({rt.describe()}) stopped")
    orphans = conn.execute(
        "SELECT s.id FROM sessions s LEFT JOIN runtimes r ON r.id = s.runtime_id "
        "WHERE s.runtime_id IS NOT NULL AND (r.id IS NULL OR r.ended_at IS NOT NULL)"
    ).fetchall()
    for (session_id,) in orphans:
        if interrupt(conn, session_id, now=now, reason="the process that ran it is gone"):
            interrupted.append(session_id)
    return interrupted
