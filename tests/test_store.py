"""The store on a real SQLite file: durability, versioning, refusal of foreign or damaged files."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from logs import new_session

from jupyter_agent import SessionConflict, SessionNotFound, StoreCorrupt, StoreVersionError
from jupyter_agent._events import EventChain, EventKind, verify_chain
from jupyter_agent._store import SCHEMA_VERSION, SqliteStore, default_store_path


def _started(name: str = "t") -> dict[str, object]:
    return {"name": name, "model": "demo", "goal": "g", "tools": [], "workspace": "."}


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore(tmp_path / "agent.db") as s:
        yield s


def test_events_round_trip_in_order_with_intact_chain(store: SqliteStore) -> None:
    chain = new_session(store)
    for i in range(5):
        store.write([chain.next(EventKind.MESSAGE, {"text": f"m{i}"}, ts=2.0 + i, actor="ann")])
    events = list(store.iter_events("s1"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[3].payload == {"text": "m2"} and events[3].actor == "ann"
    assert verify_chain(events) is None


def test_verify_chain_finds_an_edited_event(store: SqliteStore, tmp_path: Path) -> None:
    chain = new_session(store)
    for i in range(3):
        store.write([chain.next(EventKind.MESSAGE, {"text": f"m{i}"}, ts=2.0)])
    conn = sqlite3.connect(tmp_path / "agent.db")
    conn.execute("DROP TRIGGER events_no_update")  # the log's table (events is its view)
    conn.execute('UPDATE event_log SET payload = \'{"text":"forged"}\' WHERE seq = 3')
    conn.commit()
    conn.close()
    assert verify_chain(store.iter_events("s1")) == 3


def test_events_table_refuses_update_and_delete(store: SqliteStore, tmp_path: Path) -> None:
    new_session(store)
    conn = sqlite3.connect(tmp_path / "agent.db")
    for table in ("events", "event_log"):  # the view everyone reads, the table under it
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(f"UPDATE {table} SET actor = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(f"DELETE FROM {table}")
    conn.close()


def test_second_writer_of_a_sequence_number_gets_a_conflict(store: SqliteStore) -> None:
    chain = new_session(store)
    rival = EventChain("s1", last_seq=chain.last_seq, last_hash=chain.last_hash)
    store.write([chain.next(EventKind.MESSAGE, {"text": "mine"}, ts=2.0)])
    with pytest.raises(SessionConflict, match="another process"):
        store.write([rival.next(EventKind.MESSAGE, {"text": "theirs"}, ts=2.0)])
    assert [e.payload["text"] for e in store.iter_events("s1", after=1)] == ["mine"]


def test_a_failed_write_does_not_take_others_in_its_group_down(store: SqliteStore) -> None:
    chain = new_session(store)
    good = [chain.next(EventKind.MESSAGE, {"text": f"{i}"}, ts=2.0) for i in range(50)]
    dup = EventChain("s1").next(EventKind.SESSION_STARTED, _started(), ts=1.0)
    errors: list[BaseException] = []

    def write(events: list) -> None:
        try:
            store.write(events)
        except SessionConflict as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=([e],)) for e in good[:1]]
    threads += [threading.Thread(target=write, args=([dup],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in good[1:]:
        store.write([e])
    assert len(errors) == 1
    assert store.get_session("s1").id == "s1"
    assert len(list(store.iter_events("s1"))) == 51


def test_session_row_is_upserted_with_the_events(store: SqliteStore) -> None:
    chain = new_session(store)
    e = chain.next(EventKind.STATUS_CHANGED, {"status": "paused"}, ts=3.0)
    store.write([e], session={"id": "s1", "status": "paused", "updated_at": 3.0, "last_seq": 2})
    row = store.get_session("s1")
    assert (row.status, row.updated_at, row.last_seq, row.name) == ("paused", 3.0, 2, "t")


def test_a_session_rows_position_is_its_newest_events_even_when_the_row_lags(
    store: SqliteStore,
) -> None:
    """A running engine writes its row's totals at most every SESSION_ROW_EVERY_S: events
    written without the row still move the session's ``last_seq``, hash and time."""
    chain = new_session(store)
    new_session(store, "s2")
    events = [chain.next(EventKind.MESSAGE, {"text": f"m{i}"}, ts=5.0 + i) for i in range(3)]
    store.write(events)  # no session row
    row = store.get_session("s1")
    assert (row.last_seq, row.last_hash, row.updated_at) == (4, events[-1].hash, 7.0)
    assert row.name == "t" and row.status == "running"
    assert [r.id for r in store.list_sessions()] == ["s1", "s2"]  # by the newest event's time
    assert store.find_session("s1").last_seq == 4
    assert store.get_session("s2").last_seq == 1
    e = EventChain("s1", last_seq=row.last_seq, last_hash=row.last_hash).next(
        EventKind.MESSAGE, {"text": "chained from the row"}, ts=8.0
    )
    store.write([e])
    assert verify_chain(store.iter_events("s1")) is None


def test_unknown_session_is_a_clear_error(store: SqliteStore) -> None:
    with pytest.raises(SessionNotFound, match="no session 'nope'"):
        store.get_session("nope")


def test_find_session_by_unique_prefix(store: SqliteStore) -> None:
    new_session(store, "abc123")
    new_session(store, "abd456")
    assert store.find_session("abc").id == "abc123"
    with pytest.raises(SessionNotFound):
        store.find_session("ab")


def test_snapshot_is_returned_newest_first_at_or_before(store: SqliteStore) -> None:
    chain = new_session(store)
    for i in range(3):
        e = chain.next(EventKind.MESSAGE, {"text": f"{i}"}, ts=2.0)
        store.write([e], snapshot=(e.seq, f'{{"at": {e.seq}}}'))
    assert store.latest_snapshot("s1") == (4, '{"at": 4}')
    assert store.latest_snapshot("s1", at_most=3) == (3, '{"at": 3}')


def test_blobs_are_content_addressed_and_stored_once(store: SqliteStore, tmp_path: Path) -> None:
    a = store.put_blob(b"x" * 100_000)
    b = store.put_blob(b"x" * 100_000)
    assert a == b and store.get_blob(a) == b"x" * 100_000
    conn = sqlite3.connect(tmp_path / "agent.db")
    assert conn.execute("select count(*) from blobs").fetchone()[0] == 1
    conn.close()


def test_commands_are_taken_once_in_order(store: SqliteStore) -> None:
    store.send_command("s1", "pause", actor="ann")
    store.send_command("s1", "tell", {"text": "hi"}, actor="bob")
    taken = store.take_commands("s1", taken_by="rt1")
    assert [(c.verb, c.args, c.actor) for c in taken] == [
        ("pause", {}, "ann"),
        ("tell", {"text": "hi"}, "bob"),
    ]
    assert store.take_commands("s1", taken_by="rt2") == []


def test_an_sqlite_older_than_the_store_needs_is_refused_in_one_line() -> None:
    from jupyter_agent import StoreError
    from jupyter_agent._store._schema import MIN_SQLITE, check_sqlite

    with pytest.raises(
        StoreError, match=r"needs SQLite 3\.25\.0 or later; this Python has SQLite 3\.22\.0"
    ):
        check_sqlite((3, 22, 0))
    check_sqlite(MIN_SQLITE)
    check_sqlite(sqlite3.sqlite_version_info)  # this machine's: the store opens


def test_store_is_wal_and_versioned(store: SqliteStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "agent.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"sessions", "event_log", "snapshots", "blobs", "commands"} <= tables
    views = {r[0] for r in conn.execute("select name from sqlite_master where type='view'")}
    assert views == {"events"}  # the log as everyone reads it
    conn.close()


def test_store_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreVersionError, match="newer jupyter-agent"):
        SqliteStore(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    with pytest.raises(StoreCorrupt, match="not a readable jupyter-agent store"):
        SqliteStore(path)


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table customers (id integer)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt, match="not a jupyter-agent store"):
        SqliteStore(path)


def test_default_location_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JUPYTER_AGENT_DB", str(tmp_path / "x.db"))
    assert default_store_path() == tmp_path / "x.db"
    monkeypatch.delenv("JUPYTER_AGENT_DB")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "agent" / "agent.db"


def test_two_store_objects_on_one_file_both_see_all_events(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as one, SqliteStore(tmp_path / "a.db") as two:
        chain = new_session(one)
        two.write([chain.next(EventKind.MESSAGE, {"text": "from two"}, ts=2.0)])
        assert [e.seq for e in one.iter_events("s1")] == [1, 2]


def test_an_ambiguous_prefix_says_so(store: SqliteStore) -> None:
    new_session(store, "abc1")
    new_session(store, "abc2")
    with pytest.raises(SessionNotFound, match=r"start of several session ids \(abc1, abc2\)"):
        store.find_session("abc")
    for n in range(3, 6):
        new_session(store, f"abc{n}")
    with pytest.raises(SessionNotFound, match=r"\(abc1, abc2, abc3, \.\.\.\); give more"):
        store.find_session("abc")


def test_refusing_a_foreign_database_leaves_it_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table customers (id integer)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt):
        SqliteStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_write_that_cannot_get_the_lock_fails_instead_of_hanging(tmp_path: Path) -> None:
    from jupyter_agent import StoreError

    with SqliteStore(tmp_path / "a.db", busy_timeout_s=0.2) as store:
        chain = new_session(store)
        blocker = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"could not write .* locked"):
            store.write([chain.copy().next(EventKind.MESSAGE, {"text": "x"}, ts=2.0)])
        blocker.execute("ROLLBACK")
        blocker.close()
        store.write([chain.next(EventKind.MESSAGE, {"text": "x"}, ts=2.0)])  # works again
        assert [e.seq for e in store.iter_events("s1")] == [1, 2]


def test_a_writer_thread_that_dies_fails_every_caller(tmp_path: Path) -> None:
    from jupyter_agent._store._writer import Writer, WriterClosed

    class Fatal(BaseException):
        pass

    def boom(conn: sqlite3.Connection) -> None:
        raise Fatal("the thread goes down")

    writer = Writer(
        lambda: sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False),
        name="test-writer",
    )
    with pytest.raises(WriterClosed, match="Fatal"):
        writer.submit(boom).result(timeout=5)
    with pytest.raises(WriterClosed, match="stopped"):
        writer.submit(lambda conn: None)
    writer.close()


def test_integer_timestamps_still_verify(store: SqliteStore) -> None:
    chain = EventChain("s2")
    e = chain.next(EventKind.SESSION_STARTED, _started(), ts=1000)  # an int, as a clock may give
    store.write(
        [e], session={"id": "s2", "status": "running", "created_at": 1.0, "updated_at": 1.0}
    )
    assert verify_chain(store.iter_events("s2")) is None


def test_text_that_is_not_valid_unicode_round_trips(store: SqliteStore) -> None:
    chain = new_session(store)
    store.write([chain.next(EventKind.MESSAGE, {"text": "bad\udcffname"}, ts=2.0)])
    (e,) = store.iter_events("s1", after=1)
    assert e.payload["text"] == "bad\udcffname"
    assert verify_chain(store.iter_events("s1")) is None


def test_nan_and_infinity_are_refused_so_the_log_stays_json(store: SqliteStore) -> None:
    chain = new_session(store)
    with pytest.raises(ValueError):
        chain.next(EventKind.TIMER_SET, {"timer_id": "t", "wake_at": float("inf")}, ts=2.0)
    assert chain.last_seq == 1


def test_an_older_store_is_migrated_forward_and_keeps_its_sessions(tmp_path: Path) -> None:
    import sqlite_utils

    from jupyter_agent._store._schema import APPLICATION_ID, MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](sqlite_utils.Database(conn))  # the store as version 1 made it
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO sessions (id, name, status, created_at, updated_at) "
        "VALUES ('old1', 'legacy', 'done', 1.0, 2.0)"
    )
    conn.close()
    with SqliteStore(path) as store:
        row = store.get_session("old1")
        assert (row.name, row.status, row.cached_tokens) == ("legacy", "done", 0)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    conn.close()


def v6_store(path: Path, *, wal: bool = False) -> sqlite3.Connection:
    """A store as version 6 made it (events keyed by ``(session_id, seq)``), left open."""
    return store_at(path, 6, wal=wal)


def store_at(path: Path, version: int, *, wal: bool = False) -> sqlite3.Connection:
    """A store as schema ``version`` made it, left open."""
    import sqlite_utils

    from jupyter_agent._store._schema import APPLICATION_ID, MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    db = sqlite_utils.Database(conn)
    for step in MIGRATIONS[:version]:
        step(db)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_a_version_7_store_keeps_its_log_and_no_trigger_runs_for_each_event(
    tmp_path: Path,
) -> None:
    """v8 renames the events table to event_log (nothing copied), and ``events`` becomes a view
    of it, whose trigger refuses what an older process would insert; v7's trigger on every
    inserted row is gone."""
    path = tmp_path / "v7.db"
    conn = store_at(path, 7)
    chains = {sid: EventChain(sid) for sid in ("b2", "a1")}
    nums = {"b2": 1, "a1": 2}
    logs: dict[str, list[str]] = {sid: [] for sid in chains}
    for i in range(200):  # interleaved, as sessions running side by side write them
        for sid, chain in chains.items():
            e = chain.next(EventKind.MESSAGE, {"text": f"{sid} {i} " + "x" * 200}, ts=1.0 + i)
            key = (nums[sid] << 32) + e.seq
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    e.session_id,
                    e.seq,
                    e.ts,
                    e.kind.value,
                    e.actor,
                    e.v,
                    e.payload_json,
                    e.hash,
                ),
            )
            logs[sid].append(e.hash)
    for sid, num in nums.items():
        conn.execute(
            "INSERT INTO sessions (id, status, created_at, updated_at, last_seq, last_hash, num) "
            "VALUES (?, 'paused', 1.0, 200.0, 200, ?, ?)",
            (sid, logs[sid][-1], num),
        )
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with SqliteStore(path) as store:
        for sid in ("a1", "b2"):
            assert [e.hash for e in store.iter_events(sid)] == logs[sid]
            assert verify_chain(store.iter_events(sid)) is None
        e = chains["a1"].next(EventKind.MESSAGE, {"text": "after the upgrade"}, ts=300.0)
        store.write([e], session={"id": "a1", "updated_at": 300.0})
        assert [e.seq for e in store.iter_events("a1", after=199)] == [200, 201]
        with pytest.raises(SessionConflict):
            store.write([EventChain("a1").next(EventKind.MESSAGE, {"text": "x"}, ts=301.0)])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA page_count").fetchone()[0] <= pages + 2, "the log was copied"
    on_log = conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'event_log'")
    assert {name for (name,) in on_log} == {"event_log", "events_no_update", "events_no_delete"}
    assert conn.execute("SELECT count(*) FROM events WHERE session_id = 'b2'").fetchone() == (200,)
    with pytest.raises(sqlite3.IntegrityError, match=r"newer jupyter-agent .*restart this process"):
        conn.execute(  # as a process of version 6 or 7 would write it
            "INSERT INTO events (id, session_id, seq, ts, kind, actor, v, payload, hash) "
            "VALUES (?, 'a1', 202, 302.0, 'message', 'ann', 1, '{}', 'x')",
            ((2 << 32) + 202,),
        )
    with pytest.raises(sqlite3.IntegrityError, match=r"\(schema 8\); restart this process"):
        conn.execute(  # a session without its number, as a process before version 7 would
            "INSERT INTO sessions (id, status, created_at, updated_at) VALUES ('z', 'x', 1, 1)"
        )
    conn.close()


def test_a_version_6_store_keeps_every_event_readable_after_the_events_are_rekeyed(
    tmp_path: Path,
) -> None:
    """v7 keys events by ``session num << 32 | seq``: the logs of v6 stores move over whole."""
    path = tmp_path / "v6.db"
    conn = v6_store(path)
    chains = {sid: EventChain(sid) for sid in ("b2", "a1", "orphan")}
    logs: dict[str, list[str]] = {sid: [] for sid in chains}
    for i in range(30):  # interleaved, as sessions running side by side write them
        for sid, chain in chains.items():
            e = chain.next(EventKind.MESSAGE, {"text": f"{sid} {i}"}, ts=1.0 + i)
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (e.session_id, e.seq, e.ts, e.kind.value, e.actor, e.v, e.payload_json, e.hash),
            )
            logs[sid].append(e.hash)
    for sid in ("b2", "a1"):  # "orphan" has events but no row (never written so; kept anyway)
        conn.execute(
            "INSERT INTO sessions (id, status, created_at, updated_at, last_seq, last_hash) "
            "VALUES (?, 'paused', 1.0, 30.0, 30, ?)",
            (sid, logs[sid][-1]),
        )
    conn.close()
    with SqliteStore(path) as store:
        for sid in ("a1", "b2"):
            assert [e.hash for e in store.iter_events(sid)] == logs[sid]
            assert verify_chain(store.iter_events(sid)) is None
            assert [e.seq for e in store.iter_events(sid, after=10, until=12)] == [11, 12]
        e = chains["a1"].next(EventKind.MESSAGE, {"text": "after the upgrade"}, ts=40.0)
        store.write([e], session={"id": "a1", "updated_at": 40.0})
        assert store.get_session("a1").last_seq == 31
        new_session(store, "c3")
        assert [s.id for s in store.list_sessions()][-1] == "c3"
        with pytest.raises(SessionConflict):
            store.write([EventChain("a1").next(EventKind.MESSAGE, {"text": "x"}, ts=41.0)])
    conn = sqlite3.connect(path)
    nums = dict(conn.execute("SELECT id, num FROM sessions"))
    assert len(set(nums.values())) == 3
    orphans = conn.execute(
        "SELECT count(*), min(id >> 32) FROM events WHERE session_id = ?", ("orphan",)
    )
    count, num = orphans.fetchone()
    assert count == 30 and num not in nums.values()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    conn.close()


def test_an_upgrade_that_rewrites_the_events_leaves_no_big_write_ahead_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v6.db"
    conn = v6_store(path, wal=True)
    conn.execute(
        "INSERT INTO sessions (id, status, created_at, updated_at) VALUES ('a', 'done', 1, 1)"
    )
    chain = EventChain("a")
    events = [chain.next(EventKind.MESSAGE, {"text": "x" * 1000}, ts=1.0) for _ in range(2000)]
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (e.session_id, e.seq, e.ts, e.kind.value, e.actor, e.v, e.payload_json, e.hash)
            for e in events
        ],
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with SqliteStore(path) as store:
        assert (tmp_path / "v6.db-wal").stat().st_size < 100_000  # the 2 MB rewrite is in the file
        assert verify_chain(store.iter_events("a")) is None


def test_an_upgrade_does_not_wait_for_a_reader_to_truncate_the_log(tmp_path: Path) -> None:
    """Truncating the write-ahead log waits for readers; the upgrade only tries (waiting would
    hold the write lock for the whole busy timeout)."""
    path = tmp_path / "v6.db"
    conn = v6_store(path, wal=True)
    conn.close()
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sessions").fetchone()  # holds its snapshot
    started = time.monotonic()
    with SqliteStore(path, busy_timeout_s=5) as store:
        assert time.monotonic() - started < 2.5
        new_session(store)
        assert store.get_session("s1").status == "running"
    reader.execute("ROLLBACK")
    reader.close()


def test_reads_never_reach_past_a_sessions_own_range_of_ids(store: SqliteStore) -> None:
    """A session's ids are ``num << 32 | seq``: a seq out of 1..2**32-1 asked for (from the
    REST API or the widget) must not read the next session's events."""
    new_session(store, "a")
    new_session(store, "b")
    assert [(e.session_id, e.seq) for e in store.iter_events("a", until=2**40)] == [("a", 1)]
    assert list(store.iter_events("a", after=2**32)) == []
    assert [(e.session_id, e.seq) for e in store.iter_events("b", after=-(2**33))] == [("b", 1)]
    assert list(store.iter_events("nobody")) == []


def test_a_process_with_the_older_schema_cannot_write_into_an_upgraded_store(
    store: SqliteStore, tmp_path: Path
) -> None:
    """An old jupyter-agent still running (a Jupyter server not restarted) would insert events
    without their key and sessions without a number: both are refused with what to do."""
    new_session(store, "a")
    old = sqlite3.connect(tmp_path / "agent.db", isolation_level=None)
    upgraded = "upgraded by a newer jupyter-agent .*restart this process"
    with pytest.raises(sqlite3.IntegrityError, match=upgraded):
        old.execute(
            "INSERT INTO events (session_id, seq, ts, kind, actor, v, payload, hash) "
            "VALUES ('a', 2, 2.0, 'message', 'ann', 1, '{}', 'x')"
        )
    with pytest.raises(sqlite3.IntegrityError, match=upgraded):
        old.execute(
            "INSERT INTO sessions (id, status, created_at, updated_at) "
            "VALUES ('z', 'running', 1.0, 1.0)"
        )
    old.close()
    assert [e.seq for e in store.iter_events("a")] == [1]


def test_an_append_without_the_session_row_writes_about_one_page(tmp_path: Path) -> None:
    """A session's events are one range of the events table's own b-tree, and a commit
    without the session row writes no other page (the floor: one page a commit)."""
    with SqliteStore(tmp_path / "a.db") as store:
        chain = new_session(store)
        store.acquire_lease("s1", "rt-a", now=1.0)
        wal = tmp_path / "a.db-wal"
        before = wal.stat().st_size
        commits = 200
        for _ in range(commits):
            store.write([chain.next(EventKind.MESSAGE, {"text": "x" * 300}, ts=2.0)], lease="rt-a")
        frames = (wal.stat().st_size - before) / (4096 + 24)
        assert 1.0 <= frames / commits < 1.25
        reader = sqlite3.connect(tmp_path / "a.db")
        plan = " ".join(
            str(r[3])
            for r in reader.execute(
                "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE id > ? AND id <= ? ORDER BY id",
                (0, 1),
            )
        )
        reader.close()
        assert "INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan


def test_a_write_waits_for_another_process_that_holds_the_lock(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        chain = new_session(store)
        blocker = sqlite3.connect(tmp_path / "a.db", isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, blocker.execute, ["ROLLBACK"]).start()
        store.write([chain.next(EventKind.MESSAGE, {"text": "after the lock"}, ts=2.0)])
        blocker.close()
        assert [e.payload for e in store.iter_events("s1")][-1] == {"text": "after the lock"}


def test_the_write_ahead_log_stays_small_however_many_commits(tmp_path: Path) -> None:
    from jupyter_agent._store._writer import CHECKPOINT_EVERY

    with SqliteStore(tmp_path / "a.db") as store:
        chain = new_session(store)
        for i in range(6 * CHECKPOINT_EVERY):
            store.write([chain.next(EventKind.MESSAGE, {"text": "x" * 300}, ts=2.0 + i)])
        wal = (tmp_path / "a.db-wal").stat().st_size
        # a commit here is about one frame (a page and its header): the log restarts after
        # each checkpoint (~3 MB), where one that writers overtake would keep growing (~15 MB)
        assert wal < 2 * CHECKPOINT_EVERY * 2 * (4096 + 24)
        assert store.integrity_check() == "ok"


WRITER_PROCESS = """
import sys
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call, reply

@tool(effect="read_only")
def instant(n: int) -> str:
    '''Returns at once.'''
    return "x" * 300

steps = int(sys.argv[2])
model = ScriptedModel(lambda r: reply("done") if r.step > steps else call("instant", n=r.step))
agent = Agent("w", model=model, tools=[instant], store=sys.argv[1], max_steps=steps + 5)
session = agent.start("go")
session.wait()
print(session.status)
"""


def test_the_write_ahead_log_stays_small_with_processes_writing_at_once(tmp_path: Path) -> None:
    """With several processes committing all the time, one of them was always inside the log
    when another's write could have restarted it: it grew without end (~360 MB here for four
    processes of 5,000 steps each)."""
    db = tmp_path / "a.db"
    SqliteStore(db).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_PROCESS, str(db), "4000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    largest = 0
    while any(p.poll() is None for p in procs):
        with contextlib.suppress(FileNotFoundError):
            largest = max(largest, (tmp_path / "a.db-wal").stat().st_size)
        time.sleep(0.05)
    assert [p.communicate()[0].strip() for p in procs] == ["done"] * 4
    assert largest < 64 * 2**20, f"the log reached {largest / 2**20:.0f} MB"
    with SqliteStore(db) as store:
        assert store.integrity_check() == "ok"
        sessions = store.list_sessions()
        assert len(sessions) == 4
        for s in sessions:
            events = list(store.iter_events(s.id))
            assert verify_chain(events) is None
            assert sum(e.kind is EventKind.TOOL_RESULT for e in events) == 4000


def _in_a_new_thread(fn):  # a thread's first read opens its own connection to the store
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


def test_a_store_moved_while_open_is_never_made_again_at_its_old_path(tmp_path: Path) -> None:
    """A connection opened after the move would have made a new, empty store there (and reset
    the write-ahead log that still held the session): it fails in one line instead."""
    from jupyter_agent import StoreError

    store = SqliteStore(tmp_path / "a.db")
    new_session(store)
    (tmp_path / "a.db").rename(tmp_path / "b.db")
    failed = _in_a_new_thread(store.list_sessions)
    assert isinstance(failed, StoreError)
    assert str(failed) == (
        f"the store {tmp_path / 'a.db'} is gone (moved or deleted while this process had it "
        "open): open it where it is now"
    )
    assert not (tmp_path / "a.db").exists()
    store.close()


def test_a_store_opened_by_a_relative_path_stays_that_file_after_a_change_of_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore("agent.db")
    new_session(store)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # as a notebook's os.chdir
    rows = _in_a_new_thread(store.list_sessions)
    assert [r.id for r in rows] == ["s1"]
    assert not (tmp_path / "elsewhere" / "agent.db").exists()
    store.close()
