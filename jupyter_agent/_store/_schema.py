"""The store's schema and its forward migrations.

The schema version lives in ``PRAGMA user_version`` and the file is tagged with
``PRAGMA application_id``, so any SQLite tool can tell what it is looking at. Migrations only
ever move forward, each in the same ``BEGIN IMMEDIATE`` transaction as the version bump, so a
crash mid-migration leaves the old schema intact. See docs/store.md for the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from .._errors import StoreCorrupt, StoreError, StoreVersionError

APPLICATION_ID = 0x4A414753  # "JAGS"


def _v1(db: sqlite_utils.Database) -> None:
    db.table("sessions").create(
        {
            "id": str,
            "name": str,
            "parent_id": str,
            "fork_seq": int,
            "status": str,
            "owner": str,
            "model": str,
            "goal": str,
            "created_at": float,
            "updated_at": float,
            "last_seq": int,
            "last_hash": str,
            "steps": int,
            "tool_calls": int,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "runtime_id": str,
        },
        pk="id",
        not_null={"status", "created_at", "updated_at"},
        defaults={
            "last_seq": 0,
            "steps": 0,
            "tool_calls": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        },
    )
    db.table("events").create(
        {
            "session_id": str,
            "seq": int,
            "ts": float,
            "kind": str,
            "actor": str,
            "v": int,
            "payload": str,
            "hash": str,
        },
        pk=("session_id", "seq"),
        not_null={"ts", "kind", "actor", "v", "payload", "hash"},
    )
    db.table("events").create_index(["kind"])
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    db.table("snapshots").create(
        {"session_id": str, "seq": int, "state": str, "created_at": float},
        pk=("session_id", "seq"),
    )
    db.table("blobs").create(
        {"sha256": str, "size": int, "data": bytes, "created_at": float}, pk="sha256"
    )
    db.table("commands").create(
        {
            "id": int,
            "session_id": str,
            "verb": str,
            "args": str,
            "actor": str,
            "created_at": float,
            "taken_at": float,
            "taken_by": str,
        },
        pk="id",
    )
    db.table("commands").create_index(["session_id", "taken_at"])
    db.table("sessions").create_index(["status"])
    db.table("sessions").create_index(["updated_at"])


def _v2(db: sqlite_utils.Database) -> None:
    """Cached input tokens join the session's running totals (providers report them)."""
    db.table("sessions").add_column("cached_tokens", int, not_null_default=0)


def _v3(db: sqlite_utils.Database) -> None:
    """Runtimes (processes that run sessions), for leases and for finding orphaned sessions."""
    db.table("runtimes").create(
        {
            "id": str,
            "host": str,
            "pid": int,
            "pid_start": str,
            "user": str,
            "started_at": float,
            "heartbeat_at": float,
            "ended_at": float,
        },
        pk="id",
    )
    db.table("sessions").create_index(["runtime_id"])


def _v4(db: sqlite_utils.Database) -> None:
    """The notebook a session was started from (``JPY_SESSION_NAME`` in a Jupyter kernel)."""
    db.table("sessions").add_column("notebook", str)


def _v5(db: sqlite_utils.Database) -> None:
    """Fewer pages per commit: no index on events.kind (every read is per session, by seq)
    and none on sessions.updated_at (lists are short); each made every step's commit dearer."""
    db.execute("DROP INDEX IF EXISTS idx_events_kind")
    db.execute("DROP INDEX IF EXISTS idx_sessions_updated_at")


def _v6(db: sqlite_utils.Database) -> None:
    """The conversation as of each snapshot, in chunks: ``messages`` are the ones said after
    the chunk at ``base_seq`` (all of them when that is null). A resume reads the chunks instead
    of decoding every message event; like snapshots, they are derived from the log and can be
    rebuilt from it."""
    db.table("conversations").create(
        {"session_id": str, "seq": int, "base_seq": int, "messages": str},
        pk=("session_id", "seq"),
        not_null={"messages"},
    )


SEQ_BITS = 32  # an event's key is ``session num << SEQ_BITS | seq``


def _v7(db: sqlite_utils.Database) -> None:
    """Events keyed by one integer, ``id = sessions.num << 32 | seq``: a session's events are
    one range of the table's own b-tree, so an append writes the table and no separate index
    for ``(session_id, seq)`` (a page fewer a commit). ``num`` numbers the sessions for good.
    Events of a session without a row (none are written so) are kept under negative numbers,
    which no session is ever given."""
    conn = db.conn
    conn.execute("ALTER TABLE sessions ADD COLUMN num INTEGER")
    conn.execute("UPDATE sessions SET num = rowid")
    conn.execute("CREATE UNIQUE INDEX idx_sessions_num ON sessions (num)")
    conn.execute("CREATE TEMP TABLE v7_nums (id TEXT PRIMARY KEY, num INTEGER)")
    conn.execute("INSERT INTO v7_nums SELECT id, num FROM sessions")
    conn.execute(
        "INSERT INTO v7_nums SELECT session_id, -row_number() OVER (ORDER BY session_id) "
        "FROM (SELECT DISTINCT session_id FROM events "
        "WHERE session_id NOT IN (SELECT id FROM sessions))"
    )
    conn.execute(
        "CREATE TABLE events_v7 (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
        "seq INTEGER NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, "
        "v INTEGER NOT NULL, payload TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    conn.execute(
        f"INSERT INTO events_v7 SELECT (n.num << {SEQ_BITS}) + e.seq, e.session_id, e.seq, e.ts, "
        "e.kind, e.actor, e.v, e.payload, e.hash FROM events e JOIN v7_nums n "
        "ON n.id = e.session_id ORDER BY 1"
    )
    conn.execute("DROP TABLE v7_nums")
    conn.execute("DROP TABLE events")  # its triggers go with it
    conn.execute("ALTER TABLE events_v7 RENAME TO events")
    for op in ("UPDATE", "DELETE"):
        conn.execute(
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )
    # A process still running an older jupyter-agent would insert events without their key (an
    # id of its own choosing, in another session's range) and sessions without a number: refuse.
    upgraded = (
        "BEGIN SELECT RAISE(ABORT, 'this store was upgraded by a newer jupyter-agent (schema 7); "
        "restart this process with the new version'); END"
    )
    conn.execute(
        "CREATE TRIGGER events_keyed BEFORE INSERT ON events "
        f"WHEN NEW.id & {(1 << SEQ_BITS) - 1} != NEW.seq {upgraded}"
    )
    conn.execute(
        "CREATE TRIGGER sessions_numbered BEFORE INSERT ON sessions "
        f"WHEN NEW.num IS NULL {upgraded}"
    )


def _v8(db: sqlite_utils.Database) -> None:
    """No trigger runs for each event inserted. v7 refused an older process's events with a
    ``BEFORE INSERT`` trigger, a program of its own for every row (0.8 µs of a 5.4 µs insert,
    measured; a tenth of a batch of appends). The table is now ``event_log``, which this
    version writes, and ``events`` a view of it: what any process reads as before, and what
    an older one would insert into, refused by the view's trigger with what to do. (A CHECK
    constraint cannot stand in: it sees the id SQLite gave the row, which for the next event
    of the last-numbered session is the right one, and for another session's may pass too.)
    Renaming is a change of the schema alone: nothing is copied."""
    conn = db.conn
    conn.execute("DROP TRIGGER events_keyed")
    conn.execute("ALTER TABLE events RENAME TO event_log")  # its two triggers follow it
    conn.execute(
        "CREATE VIEW events AS "
        "SELECT id, session_id, seq, ts, kind, actor, v, payload, hash FROM event_log"
    )
    conn.execute(f"CREATE TRIGGER events_upgraded INSTEAD OF INSERT ON events {_UPGRADED}")
    conn.execute("DROP TRIGGER sessions_numbered")  # its message named schema 7
    conn.execute(
        f"CREATE TRIGGER sessions_numbered BEFORE INSERT ON sessions WHEN NEW.num IS NULL "
        f"{_UPGRADED}"
    )
    for op in ("UPDATE", "DELETE"):
        conn.execute(
            f"CREATE TRIGGER events_view_no_{op.lower()} INSTEAD OF {op} ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        )


_UPGRADED = (
    "BEGIN SELECT RAISE(ABORT, 'this store was upgraded by a newer jupyter-agent (schema 8); "
    "restart this process with the new version'); END"
)

# MIGRATIONS[i] takes the schema from version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7,
    _v8,
]
LATEST = len(MIGRATIONS)


MIN_SQLITE = (3, 25, 0)  # window functions (in the v7 migration, which every new store runs)


def check_sqlite(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """Refuse, in one line, an SQLite library older than the store needs."""
    if version < MIN_SQLITE:
        have, need = ".".join(map(str, version)), ".".join(map(str, MIN_SQLITE))
        raise StoreError(
            f"jupyter-agent needs SQLite {need} or later; this Python has SQLite {have}: use a "
            "Python built with a newer one (python.org's and conda's builds are)"
        )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the store at ``path`` to ``LATEST``, or refuse it with a one-line reason."""
    check_sqlite()
    try:
        version, app_id = _read_version(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(
            f"{path} is not a readable jupyter-agent store ({exc}); "
            "move it aside or set JUPYTER_AGENT_DB to another file"
        ) from exc
    _check(version, app_id, conn, path)
    if version == LATEST:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:  # busy past the timeout: another upgrade, say
        raise StoreError(
            f"could not upgrade {path} to store schema {LATEST} ({exc}): another process holds "
            "it; try again when that is done"
        ) from exc
    try:
        version, app_id = _read_version(conn)  # another process may have migrated meanwhile
        _check(version, app_id, conn, path)
        db = sqlite_utils.Database(conn)
        for step in MIGRATIONS[version:]:
            step(db)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {LATEST}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if version < LATEST:  # an upgrade that rewrote a table leaves a write-ahead log as big:
        # truncate it now if nobody reads (never wait: waiting holds the write lock)
        busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")


def _read_version(conn: sqlite3.Connection) -> tuple[int, int]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    return int(version), int(app_id)


def _check(version: int, app_id: int, conn: sqlite3.Connection, path: Path) -> None:
    if app_id not in (0, APPLICATION_ID):
        raise StoreCorrupt(
            f"{path} is an SQLite file of another application "
            f"(application_id {app_id:#x}); point JUPYTER_AGENT_DB elsewhere"
        )
    if app_id == 0 and version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
        if tables[0]:
            raise StoreCorrupt(
                f"{path} holds tables but is not a jupyter-agent store; "
                "point JUPYTER_AGENT_DB elsewhere"
            )
    if version > LATEST:
        raise StoreVersionError(
            f"{path} was written by a newer jupyter-agent (store schema {version}, this version "
            f"reads up to {LATEST}); upgrade: pip install -U jupyter-agent"
        )
