"""``SqliteStore``: the durable home of every session, one SQLite file in WAL mode.

Writes go through one writer thread (group commit, see ``_writer``); reads use one connection
per thread, as measured safe in notes/kernel-runtime.md. The tables are documented in
docs/store.md and readable with ``sqlite3`` or ``sqlite-utils``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import operator
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import anyio

from .._errors import SessionConflict, SessionNotFound, StoreCorrupt, StoreError
from .._events import Event, EventKind
from . import _leases as leases
from ._paths import default_store_path
from ._schema import SEQ_BITS, migrate
from ._writer import BUSY, Writer, WriterClosed

Synchronous = Literal["OFF", "NORMAL", "FULL"]
STATUSES = (  # a session's status, as its row holds it
    "running",
    "sleeping",
    "paused",
    "awaiting_approval",
    "interrupted",
    "done",
    "failed",
    "stopped",
)
SHARED_COMMITS_S = 0.05  # another session wrote this recently: commits that fsync are shared


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One row of the ``sessions`` table: a session's metadata and running totals."""

    id: str
    name: str | None
    parent_id: str | None
    fork_seq: int | None
    status: str
    owner: str | None
    model: str | None
    goal: str | None
    created_at: float
    updated_at: float
    last_seq: int
    last_hash: str | None
    steps: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    runtime_id: str | None
    cached_tokens: int
    notebook: str | None


_SESSION_COLUMNS = tuple(f.name for f in fields(SessionRow))
# A running engine refreshes its row's totals at most every ``SESSION_ROW_EVERY_S`` (and at
# every status change), so the row's position may lag the log: a session's newest event, when
# newer than the row says, gives its ``updated_at``, ``last_seq`` and ``last_hash``.
_EXACT = {
    "updated_at": "coalesce(max(s.updated_at, e.ts), s.updated_at)",
    "last_seq": "coalesce(e.seq, s.last_seq)",
    "last_hash": "coalesce(e.hash, s.last_hash)",
}
LAST_SEQ = (1 << SEQ_BITS) - 1  # the most events a session may hold
# ?1 is LAST_SEQ
_SELECT_SESSIONS = (
    f"SELECT {', '.join(_EXACT.get(c, 's.' + c) for c in _SESSION_COLUMNS)} FROM sessions s "
    "LEFT JOIN event_log e ON e.id = (SELECT max(id) FROM event_log "
    f"WHERE id BETWEEN (s.num << {SEQ_BITS}) + s.last_seq + 1 AND (s.num << {SEQ_BITS}) + ?1)"
)
# the row's running totals (a running engine writes them at most every SESSION_ROW_EVERY_S)
_TOTALS = ("steps", "tool_calls", "input_tokens", "output_tokens", "cached_tokens", "cost_usd")
_EVENT_COLUMNS = "session_id, seq, ts, kind, actor, v, payload, hash"
# the key (a session's events are one range of ids) from the row's seq (?2) and the session's
# number shifted (?9), so that the row's values bind as they are
_INSERT_EVENT = (
    f"INSERT INTO event_log (id, {_EVENT_COLUMNS}) VALUES (?9 + ?2, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
)
# an event's row in _EVENT_COLUMNS order, built in C (``_value_``: the kind's text, which
# ``.value`` gives through a Python-level property)
_event_row = operator.attrgetter(
    "session_id", "seq", "ts", "kind._value_", "actor", "v", "payload_json", "hash"
)


@dataclass(frozen=True, slots=True)
class Command:
    """A control message for a session from another process (server, CLI, another kernel)."""

    id: int
    session_id: str
    verb: str
    args: dict[str, Any]
    actor: str
    created_at: float
    left_open: bool = False  # left untaken by ``take_commands`` until the engine acts on it


class SqliteStore:
    """An agent store on one SQLite file.

    Example:
        >>> store = SqliteStore("agent.db")   # or SqliteStore() for $JUPYTER_AGENT_DB / the default
        >>> [s.name for s in store.list_sessions()]
        []
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._lineage: dict[str, list[tuple[str, int | None]]] = {}
        self._nums: dict[str, int] = {}  # session id -> its number (see _num)
        self._last_async: tuple[str, float] = ("", 0.0)  # the last write_async: session, when
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; give the store a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot make the folder for the store {self.path}: {exc.strerror or exc}"
            ) from exc
        # every later connection opens this very file, and never makes one: a store moved or
        # removed while open would otherwise be replaced by an empty one (and its log reset);
        # nor does a change of folder (a notebook's os.chdir) point them at another file
        self._file = self.path.absolute()
        conn = self._connect(wal=False, create=True)  # WAL once the file is known to be ours
        try:
            migrate(conn, self.path)
            self._writer = Writer(
                self._connect, name=f"jupyter-agent-store-writer:{self.path.name}"
            )
        finally:
            # closed once the writer's connection is open: closing the file's last connection
            # checkpoints and removes the write-ahead log (~12 ms), only to open it again
            conn.close()

    # -- connections -------------------------------------------------------------------------

    def _connect(self, *, wal: bool = True, create: bool = False) -> sqlite3.Connection:
        target = self._file if create else f"file:{urllib.parse.quote(str(self._file))}?mode=rw"
        try:
            conn = sqlite3.connect(
                target, uri=not create, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            if wal:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.DatabaseError as exc:
            if not create and not self._file.exists():
                raise StoreError(
                    f"the store {self.path} is gone (moved or deleted while this process had it "
                    "open): open it where it is now"
                ) from exc
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY:
                raise StoreError(
                    f"{self.path} cannot be written by this user, and opening a store writes to "
                    "it (and its folder), even to read: copy it somewhere writable and open the "
                    "copy"
                ) from exc
            raise StoreCorrupt(
                f"{self.path} is not a readable jupyter-agent store ({exc}); "
                "move it aside or set JUPYTER_AGENT_DB to another file"
            ) from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        """Finish pending writes and close every connection."""
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------

    def write(
        self,
        events: Sequence[Event] = (),
        *,
        session: Mapping[str, Any] | None = None,
        snapshot: tuple[int, str] | None = None,
        lease: str | None = None,
        free_for: str | None = None,
        blobs: Sequence[bytes] = (),
        conversation: tuple[int | None, str] | None = None,
    ) -> None:
        """Append events, upsert the session row, add a snapshot and blobs: atomically; wait
        until durable. ``conversation`` is ``(base_seq, messages_json)``: the messages said
        since the conversation chunk at ``base_seq`` (or all of them), as of the snapshot.

        With ``lease``, the write is refused (``LeaseLost``) unless that runtime holds the
        session. Raises ``SessionConflict`` if another writer already took one of the sequence
        numbers, and ``StoreError`` if the write could not be made durable. With ``free_for``,
        the write is refused (``SessionLeased``) while a live runtime other than that one holds
        the session (for writes from outside the session's engine).

        The caller waits anyway, so the write is committed on its thread when nobody else is
        writing (no hand-off to the writer thread and back); otherwise it joins a group commit.
        """
        job = _WriteJob(events, session, snapshot, lease, free_for, blobs, conversation)
        try:
            if self._writer.run_inline(job) is not BUSY:
                return
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc
        self._wait(self._submit(job))

    async def write_async(
        self,
        events: Sequence[Event] = (),
        *,
        session: Mapping[str, Any] | None = None,
        snapshot: tuple[int, str] | None = None,
        lease: str | None = None,
        blobs: Sequence[bytes] = (),
        conversation: tuple[int | None, str] | None = None,
    ) -> None:
        """``write`` for the event loop: commits on the loop's thread when nobody else is
        writing, which is quicker than handing the write to the writer thread and back, unless
        commits wait for the disk (``synchronous = FULL``) and other sessions write too: then
        the writer thread lets them share commits while the loop goes on (group commit).

        A write once started is waited for even if the caller is cancelled meanwhile (a pause
        may not cut a write in half). ``blobs`` are stored (under their sha256, see
        ``blob_digest``) in the same commit."""
        job = _WriteJob(events, session, snapshot, lease, blobs=blobs, conversation=conversation)
        writer = events[0].session_id if events else str((session or {}).get("id"))
        if self._synchronous != "FULL" or self._alone(writer):
            try:
                if self._writer.run_inline(job) is not BUSY:
                    return
            except sqlite3.Error as exc:
                raise self._store_error(exc) from exc
        fut = self._submit(job)
        try:
            with anyio.CancelScope(shield=True):
                await asyncio.wrap_future(fut)
        except (sqlite3.Error, WriterClosed) as exc:
            raise self._store_error(exc) from exc

    def _alone(self, session_id: str) -> bool:
        """Whether ``session_id`` is the only session that wrote through ``write_async``
        lately (within ``SHARED_COMMITS_S``)."""
        now = time.monotonic()
        last_id, last_at = self._last_async
        self._last_async = (session_id, now)
        return last_id == session_id or now - last_at > SHARED_COMMITS_S

    def _submit(self, job: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        try:
            return self._writer.submit(job)
        except WriterClosed as exc:
            raise self._store_error(exc) from exc

    def _wait(self, fut: Future[Any]) -> Any:
        try:
            return fut.result()
        except (sqlite3.Error, WriterClosed) as exc:
            raise self._store_error(exc) from exc

    def _store_error(self, exc: BaseException) -> StoreError:
        return StoreError(f"could not write to {self.path}: {exc}")

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` under its sha256 (once, however often it is put); return the digest."""
        self._wait(self._submit(lambda conn: _put_blobs(conn, [data])))
        return blob_digest(data)

    def send_command(
        self, session_id: str, verb: str, args: Mapping[str, Any] | None = None, *, actor: str
    ) -> int:
        """Queue a control message for the runtime that owns ``session_id``."""
        result: int = self._wait(self.send_command_soon(session_id, verb, args, actor=actor))
        return result

    def send_command_soon(
        self, session_id: str, verb: str, args: Mapping[str, Any] | None = None, *, actor: str
    ) -> Future[int]:
        """``send_command`` without waiting for the write (another process may hold the lock):
        the future gives the command's id once it is in the store."""
        created_at = time.time()

        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO commands (session_id, verb, args, actor, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, verb, json.dumps(dict(args or {})), actor, created_at),
            )
            return int(cur.lastrowid or 0)

        return self._submit(job)

    def queued_commands(self, session_id: str) -> list[Command]:
        """The session's commands nobody has taken yet, oldest first (they stay queued)."""
        return [_command(r) for r in self._reader().execute(_QUEUED, (session_id,))]

    def queued_decision(self, session_id: str, call_id: str, asked: int | None) -> Command | None:
        """The decision (approve or deny) on request ``asked`` of ``call_id`` that waits in the
        queue to be taken, if one does: the first given is the one the session acts on."""
        for cmd in self.queued_commands(session_id):
            args = cmd.args
            if cmd.verb in ("approve", "deny") and (args.get("call_id"), args.get("asked")) == (
                call_id,
                asked,
            ):
                return cmd
        return None

    def take_commands(
        self, session_id: str, *, taken_by: str, leave_open: Collection[str] = ()
    ) -> list[Command]:
        """Claim the session's untaken commands, oldest first (each is taken exactly once).

        Those whose verb is in ``leave_open`` are returned but stay untaken (``left_open``), for
        as long as the engine has not acted on them: a pause or stop asked of a running
        session is then kept if the process ends first (``leases.interrupt`` applies it).
        ``close_commands`` takes them once acted on; a holder's next call returns them again.
        """

        def job(conn: sqlite3.Connection) -> list[Command]:
            rows = conn.execute(_QUEUED, (session_id,)).fetchall()
            taken = [_command(r, left_open=r[2] in leave_open) for r in rows]
            ids = [c.id for c in taken if not c.left_open]
            leases.mark_taken(conn, ids, taken_by=taken_by, now=time.time())
            return taken

        result: list[Command] = self._wait(self._submit(job))
        return result

    def close_commands(self, ids: Collection[int], *, taken_by: str) -> None:
        """Take commands left open (``take_commands``) once what they asked for was done."""
        if ids:
            now = time.time()
            self._wait(
                self._submit(lambda conn: leases.mark_taken(conn, ids, taken_by=taken_by, now=now))
            )

    # -- runtimes and leases (see _leases) ---------------------------------------------------

    def register_runtime(self, rt: leases.RuntimeInfo) -> None:
        self._wait(self._submit(lambda conn: leases.register(conn, rt)))

    def heartbeat(self, runtime_id: str, now: float) -> bool:
        """Renew a runtime; False if it was ended meanwhile (judged dead by another process)."""
        alive: bool = self._wait(self._submit(lambda conn: leases.heartbeat(conn, runtime_id, now)))
        return alive

    def interrupt_session(
        self, session_id: str, runtime_id: str, *, now: float, reason: str
    ) -> None:
        """If ``runtime_id`` still holds the session: mark it ``interrupted`` (or as a stop or
        pause waiting in its commands asked: ``reason`` then says why the run ended first),
        free it."""

        def job(conn: sqlite3.Connection) -> bool:
            leases.check_fence(conn, session_id, runtime_id)
            return leases.interrupt(conn, session_id, now=now, reason=reason, ended=reason)

        if self._wait(self._submit(job)):
            self._settle_totals([session_id])

    def acquire_lease(
        self,
        session_id: str,
        runtime_id: str,
        *,
        now: float,
        alive: leases.Liveness = leases.is_alive,
    ) -> None:
        """Take the session for ``runtime_id``; ``SessionLeased`` names the live owner if any."""
        self._wait(
            self._submit(lambda conn: leases.acquire(conn, session_id, runtime_id, now, alive))
        )

    def hand_over_lease(self, session_id: str, from_runtime: str, to_runtime: str) -> None:
        """Give the session from one runtime to another (``LeaseLost`` if the first no longer
        holds it)."""
        self._wait(
            self._submit(lambda conn: leases.hand_over(conn, session_id, from_runtime, to_runtime))
        )

    def release_lease(self, session_id: str, runtime_id: str) -> None:
        self._wait(self._submit(lambda conn: leases.release(conn, session_id, runtime_id)))

    def end_runtime(
        self,
        runtime_id: str,
        *,
        now: float,
        reason: str,
        asked: Mapping[str, tuple[str, str]] | None = None,
    ) -> list[str]:
        """End a runtime; its running sessions become ``interrupted`` (returned), or
        ``stopped``/``paused`` where ``asked`` says a person asked for that (``{id: (status,
        who)}``) and the engine had not got to it yet."""
        result: list[str] = self._wait(
            self._submit(
                lambda conn: leases.end(conn, runtime_id, now=now, reason=reason, asked=asked)
            )
        )
        self._settle_totals(result)
        return result

    def sweep(self, *, now: float, alive: leases.Liveness = leases.is_alive) -> list[str]:
        """End runtimes that are gone; return the sessions this marked ``interrupted``."""
        result: list[str] = self._wait(
            self._submit(lambda conn: leases.sweep(conn, now=now, alive=alive))
        )
        self._settle_totals(result)
        return result

    def _settle_totals(self, session_ids: Sequence[str]) -> None:
        """Bring the totals in the rows of sessions just marked interrupted up to their logs:
        the engine that stopped without saying so wrote them at most every
        ``SESSION_ROW_EVERY_S``. Left as they are if anyone wrote the session meanwhile, or if
        this fails: the interruption is recorded, and the next run writes the whole row."""
        for sid in session_ids:
            with contextlib.suppress(Exception):
                self._settle(sid)

    def _settle(self, sid: str) -> None:
        from .._state import load_state_lean, session_totals  # _state needs no store

        num = self._num(sid)
        if num is None:
            return
        state = load_state_lean(self, sid)
        totals = {k: v for k, v in session_totals(state).items() if k in _TOTALS}
        sets = ", ".join(f"{k} = ?" for k in totals)
        base = num << SEQ_BITS
        newest = f"(SELECT max(id) FROM event_log WHERE id BETWEEN {base} AND {base + LAST_SEQ})"
        sql = f"UPDATE sessions SET {sets} WHERE id = ? AND runtime_id IS NULL AND {newest} = ?"
        params = [*totals.values(), sid, base + state.last_seq]
        self._wait(self._submit(lambda conn: conn.execute(sql, params)))

    def get_runtime(self, runtime_id: str) -> leases.RuntimeInfo | None:
        row = (
            self._reader()
            .execute(
                "SELECT id, host, pid, pid_start, user, started_at, heartbeat_at, ended_at "
                "FROM runtimes WHERE id = ?",
                (runtime_id,),
            )
            .fetchone()
        )
        return leases.RuntimeInfo(*row) if row else None

    # -- reads -------------------------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRow:
        sql = f"{_SELECT_SESSIONS} WHERE s.id = ?2"
        row = self._reader().execute(sql, (LAST_SEQ, session_id)).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return SessionRow(*row)

    def find_session(self, id_or_prefix: str) -> SessionRow:
        """The session with this id, or the only one whose id starts with it."""
        try:
            return self.get_session(id_or_prefix)
        except SessionNotFound:
            pass
        rows = (
            self._reader()
            .execute(
                "SELECT id FROM sessions WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 4",
                (_like_prefix(id_or_prefix),),
            )
            .fetchall()
        )
        if len(rows) == 1 and id_or_prefix:
            return self.get_session(rows[0][0])
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
            raise SessionNotFound(
                id_or_prefix,
                f"{id_or_prefix!r} is the start of several session ids ({ids}); give more of it",
            )
        raise SessionNotFound(
            id_or_prefix,
            f"no session {id_or_prefix!r} in the store {self.path} (list its sessions: "
            "jupyter-agent --db PATH sessions, %agent list --store PATH, or sessions(store=...))",
        )

    def list_sessions(
        self, *, status: str | None = None, limit: int | None = None
    ) -> list[SessionRow]:
        """Sessions, most recently updated first (with ``status``, those with that status)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        sql = _SELECT_SESSIONS
        params: list[Any] = [LAST_SEQ]
        if status is not None:
            sql += " WHERE s.status = ?2"
            params.append(status)
        sql += f" ORDER BY {_EXACT['updated_at']} DESC"
        if limit is not None:
            sql += f" LIMIT ?{len(params) + 1}"
            params.append(limit)
        return [SessionRow(*r) for r in self._reader().execute(sql, params)]

    def lineage(self, session_id: str) -> list[tuple[str, int | None]]:
        """Where a session's events live, oldest first: ``(session_id, up to seq)``.

        A session's own events come last (``None``: all of them). A fork's history begins with
        its parent's events up to the fork point; nothing is copied.
        """
        cached = self._lineage.get(session_id)
        if cached is not None:
            return cached
        segments: list[tuple[str, int | None]] = []
        sid: str | None = session_id
        until: int | None = None
        while sid is not None:
            segments.append((sid, until))
            row = (
                self._reader()
                .execute("SELECT parent_id, fork_seq FROM sessions WHERE id = ?", (sid,))
                .fetchone()
            )
            if row is None:
                return segments[::-1]  # not (yet) in the store: nothing to remember
            sid, parent_until = row
            if sid is None:
                break
            # a fork of a fork at an earlier point sees even less of the grandparent
            until = parent_until if until is None else min(until, parent_until)
        self._lineage[session_id] = segments[::-1]
        return segments[::-1]

    def iter_events(
        self,
        session_id: str,
        *,
        after: int = 0,
        until: int | None = None,
        kinds: Sequence[EventKind] | None = None,
    ) -> Iterator[Event]:
        """The session's events with ``after < seq <= until``, in order (for a fork, its
        parent's events up to the fork point come first; they keep the parent's id)."""
        for r in self._rows(_EVENT_COLUMNS, session_id, after, until, kinds):
            yield Event(r[0], r[1], r[2], EventKind(r[3]), r[4], r[5], r[6], r[7])

    def iter_rows(
        self,
        session_id: str,
        *,
        after: int = 0,
        until: int | None = None,
        kinds: Sequence[EventKind] | None = None,
    ) -> Iterator[tuple[int, str, str, str]]:
        """``(seq, kind, actor, payload_json)`` of the events ``iter_events`` gives, without
        making ``Event`` objects: for folds over many events (rebuilding a conversation)."""
        return self._rows("seq, kind, actor, payload", session_id, after, until, kinds)

    def _rows(
        self,
        columns: str,
        session_id: str,
        after: int,
        until: int | None,
        kinds: Sequence[EventKind] | None,
    ) -> Iterator[Any]:
        for owner, upto in self.lineage(session_id):
            end = upto if until is None else until if upto is None else min(until, upto)
            if end is not None and end <= after:
                continue
            yield from self._own_rows(columns, owner, after, end, kinds)
            if upto is not None:
                after = max(after, upto)

    def _own_rows(
        self,
        columns: str,
        session_id: str,
        after: int,
        until: int | None,
        kinds: Sequence[EventKind] | None,
    ) -> Iterator[Any]:
        num = self._num(session_id)
        after, until = max(after, 0), LAST_SEQ if until is None else min(until, LAST_SEQ)
        if num is None or until <= after:  # (outside 0..LAST_SEQ is another session's range)
            return iter(())
        base = num << SEQ_BITS
        sql = f"SELECT {columns} FROM event_log WHERE id > ? AND id <= ?"
        params: list[Any] = [base + after, base + until]
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params.extend(k.value for k in kinds)
        sql += " ORDER BY id"
        return self._reader().execute(sql, params)

    def _num(self, session_id: str) -> int | None:
        """The session's number (its events' ids are ``num << SEQ_BITS | seq``); None for a
        session not in the store."""
        num = self._nums.get(session_id)
        if num is None:
            row = (
                self._reader()
                .execute("SELECT num FROM sessions WHERE id = ?", (session_id,))
                .fetchone()
            )
            if row is None:
                return None
            num = self._nums[session_id] = int(row[0])  # a session's number never changes
        return num

    def latest_snapshot(
        self, session_id: str, *, at_most: int | None = None
    ) -> tuple[int, str] | None:
        """The newest snapshot ``(seq, state_json)`` at or before ``at_most`` (a fork may start
        from its parent's)."""
        limit = at_most if at_most is not None else 2**62
        for owner, upto in reversed(self.lineage(session_id)):
            row = (
                self._reader()
                .execute(
                    "SELECT seq, state FROM snapshots WHERE session_id = ? AND seq <= ? "
                    "ORDER BY seq DESC LIMIT 1",
                    (owner, limit if upto is None else min(limit, upto)),
                )
                .fetchone()
            )
            if row:
                return (int(row[0]), str(row[1]))
        return None

    def latest_conversation(
        self, session_id: str, *, at_most: int | None = None
    ) -> tuple[str, int, list[str]] | None:
        """The newest conversation chunk at or before ``at_most`` in the session's lineage, as
        ``(owner, seq, chunks)``: ``chunks`` oldest first, the conversation after event ``seq``
        when joined (see ``write``'s ``conversation``)."""
        limit = at_most if at_most is not None else 2**62
        reader = self._reader()
        for owner, upto in reversed(self.lineage(session_id)):
            row = reader.execute(
                "SELECT seq, base_seq, messages FROM conversations WHERE session_id = ? "
                "AND seq <= ? ORDER BY seq DESC LIMIT 1",
                (owner, limit if upto is None else min(limit, upto)),
            ).fetchone()
            if row is None:
                continue
            seq, base, said = row
            chunks, at = [said], seq
            while base is not None:
                found = reader.execute(
                    "SELECT base_seq, messages FROM conversations WHERE session_id = ? AND seq = ?",
                    (owner, base),
                ).fetchone()
                if found is None or base >= at:
                    return None  # not a chain this version writes: rebuild from the events
                at, (base, said) = base, found
                chunks.append(said)
            chunks.reverse()
            return owner, int(seq), chunks
        return None

    def get_blob(self, digest: str) -> bytes:
        row = (
            self._reader().execute("SELECT data FROM blobs WHERE sha256 = ?", (digest,)).fetchone()
        )
        if row is None:
            raise StoreError(f"no blob {digest} in {self.path}")
        return bytes(row[0])

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return str(self._reader().execute("PRAGMA integrity_check").fetchone()[0])


_QUEUED = (  # a session's commands nobody has taken yet, oldest first
    "SELECT id, session_id, verb, args, actor, created_at FROM commands "
    "WHERE session_id = ? AND taken_at IS NULL ORDER BY id"
)


def _command(row: Sequence[Any], *, left_open: bool = False) -> Command:
    return Command(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], left_open)


class _WriteJob:
    """One atomic write: events, the session row, a snapshot (any of them may be absent)."""

    __slots__ = ("blobs", "conversation", "events", "free_for", "lease", "session", "snapshot")

    def __init__(
        self,
        events: Sequence[Event],
        session: Mapping[str, Any] | None,
        snapshot: tuple[int, str] | None,
        lease: str | None = None,
        free_for: str | None = None,
        blobs: Sequence[bytes] = (),
        conversation: tuple[int | None, str] | None = None,
    ) -> None:
        self.events, self.session, self.snapshot, self.lease = events, session, snapshot, lease
        self.free_for, self.blobs, self.conversation = free_for, blobs, conversation

    def __call__(self, conn: sqlite3.Connection) -> None:
        sid = self.events[0].session_id if self.events else str((self.session or {})["id"])
        if self.free_for is not None:
            leases.check_free(conn, sid, self.free_for, time.time(), leases.is_alive)
        num = None  # the session's number, from whichever statement reads its row
        if self.session:
            num = _update_session(conn, self.session, self.lease)
            if num is None:
                if self.lease is not None:
                    leases.check_fence(conn, sid, self.lease)
                num = _insert_session(conn, self.session)
        elif self.lease is not None:
            num = leases.check_fence(conn, sid, self.lease)
        if self.blobs:
            _put_blobs(conn, self.blobs)
        if self.events:
            if num is None:
                num = _session_num(conn, sid)
            key = (num << SEQ_BITS,)
            try:
                if len(self.events) == 1:
                    conn.execute(_INSERT_EVENT, _event_row(self.events[0]) + key)
                else:
                    if any(e.session_id != sid for e in self.events):
                        raise ValueError("a write holds the events of one session")
                    conn.executemany(_INSERT_EVENT, [_event_row(e) + key for e in self.events])
            except sqlite3.IntegrityError as exc:
                if "event_log.id" not in str(exc):
                    raise
                first = self.events[0]
                raise SessionConflict(
                    f"session {first.session_id} already has an event {first.seq}: another "
                    "process is writing it; reopen the session to see its latest state"
                ) from exc
        if self.snapshot:
            seq, state = self.snapshot
            sid = self.events[-1].session_id if self.events else str((self.session or {})["id"])
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (session_id, seq, state, created_at) "
                "VALUES (?, ?, ?, ?)",
                (sid, seq, state, time.time()),
            )
            if self.conversation is not None:
                base, said = self.conversation
                conn.execute(
                    "INSERT OR REPLACE INTO conversations (session_id, seq, base_seq, messages) "
                    "VALUES (?, ?, ?, ?)",
                    (sid, seq, base, said),
                )


def blob_digest(data: bytes) -> str:
    """The key a blob is stored under: its sha256, in hex."""
    return hashlib.sha256(data).hexdigest()


def _put_blobs(conn: sqlite3.Connection, blobs: Sequence[bytes]) -> None:
    now = time.time()
    conn.executemany(
        "INSERT OR IGNORE INTO blobs (sha256, size, data, created_at) VALUES (?, ?, ?, ?)",
        [(blob_digest(b), len(b), b, now) for b in blobs],
    )


_UPDATES: dict[tuple[tuple[str, ...], bool], str] = {}  # (the row's keys, fenced) -> SQL


def _update_session(
    conn: sqlite3.Connection, row: Mapping[str, Any], lease: str | None = None
) -> int | None:
    """Update the session's row and return its number; None if there is none (or, with
    ``lease``, none held by that runtime). The lease check rides in the same statement."""
    keys = tuple(row)
    key = (keys, lease is not None)
    sql = _UPDATES.get(key)
    if sql is None:
        sql = _update_sql(keys, fenced=lease is not None)
        if len(_UPDATES) < 1000:
            _UPDATES[key] = sql
    params = (*row.values(), lease) if lease is not None else tuple(row.values())
    if not conn.execute(sql, params).rowcount:
        return None
    return _session_num(conn, str(row["id"]))


def _update_sql(keys: tuple[str, ...], *, fenced: bool) -> str:
    """The UPDATE for a row with these keys, its parameters numbered in the row's own order
    (``?1`` is the first key's value), so its values bind as they are; then the lease."""
    sets = ", ".join(f"{c} = ?{i}" for i, c in enumerate(keys, 1) if c != "id")
    sql = f"UPDATE sessions SET {sets} WHERE id = ?{keys.index('id') + 1}"
    return sql + f" AND runtime_id = ?{len(keys) + 1}" if fenced else sql


def _insert_session(conn: sqlite3.Connection, row: Mapping[str, Any]) -> int:
    """Insert the session's row, numbered after every other; return its number."""
    cols = [c for c in row if c not in ("id", "num")]
    conn.execute(
        f"INSERT INTO sessions (id, num, {', '.join(cols)}) VALUES "
        f"(?, (SELECT coalesce(max(num), 0) + 1 FROM sessions), {', '.join('?' * len(cols))})",
        [row["id"], *(row[c] for c in cols)],
    )
    return _session_num(conn, str(row["id"]))


def _session_num(conn: sqlite3.Connection, session_id: str) -> int:
    found = conn.execute("SELECT num FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if found is None:
        raise SessionNotFound(session_id, f"no session {session_id} to add events to")
    return int(found[0])


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
