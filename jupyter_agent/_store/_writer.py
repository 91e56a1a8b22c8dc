"""One writer thread per store: jobs queue up, run in one transaction, commit together.

Group commit: the writer takes whatever is queued (up to ``MAX_BATCH`` jobs), runs each under
its own savepoint inside one ``BEGIN IMMEDIATE`` transaction, commits once, and only then
resolves each job's future. So an append returns when its event is durable, and many sessions
appending at once share one commit. Measured in notes/kernel-runtime.md: this is the scheme that
kept acknowledged events across kill -9 with no lock errors across processes.

Every future is resolved, whatever happens: a job that fails gets its own error and the rest of
its batch commits; a batch that cannot commit fails every job in it; if the thread itself dies,
every waiting and later job fails with that cause.

``run_inline(job)`` may instead run the job at once on the caller's thread, in its own
transaction on the same connection: when the connection is free, nothing is queued and no
other process holds the write lock. A hand-off to the writer thread and back costs more than a
commit that does not wait for the disk (two thread wake-ups, measured in bench/), so an engine
on a store with ``synchronous = NORMAL`` writes this way, and so do callers that wait anyway.
The caller never waits for a lock: busy, it queues the job like any other.

WAL checkpoints (copying the log into the database file, with an fsync) run on a thread of
their own, every ``CHECKPOINT_EVERY`` commits, instead of inside whichever commit crosses
SQLite's threshold, so the thread that commits (an engine's event loop) never blocks on one.
Each runs twice: first while this process's writers go on (the bulk of the log), then holding
their connection for what they wrote meanwhile (a few frames: a few ms, not ~10), so that the
log is copied whole and restarts; a checkpoint that writers keep overtaking never finishes,
and the log would then grow without end.

Other processes writing the same store can still keep the log from restarting: it restarts at
a write that finds it copied whole and no reader in it, and with several processes committing
all the time one of them is always between two statements of its own. The log then grew
without end (1.2 GB with four processes writing 20,000 steps each). So a round that finds
the log longer than ``OVERTAKEN_FRAMES`` ends with a ``RESTART`` checkpoint: it holds other
writers back (a few ms) until the log is copied and free, and the next write starts it afresh;
it waits ``RESTART_WAIT_MS`` at most for readers, so a slow reader stalls nobody for long (the
next round tries again). ``journal_size_limit`` then cuts the file back to a few MB.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

MAX_BATCH = 500
CHECKPOINT_EVERY = 500  # commits of a few pages: a WAL of a few MB, two fsyncs per ~500 steps
OVERTAKEN_FRAMES = 2_000  # a log of ~8 MB (4 KiB pages) after a round: other writers kept it
RESTART_WAIT_MS = 50  # how long a RESTART checkpoint waits for readers (writers wait with it)
WAL_SIZE_LIMIT = 8 * 2**20  # bytes the log's file is cut back to when it restarts
BUSY = object()  # what ``run_inline`` returns when it could not run the job

Job = Callable[[sqlite3.Connection], Any]
_Item = tuple[Job, "Future[Any]"]


class WriterClosed(RuntimeError):
    """The writer is closed or died; nothing more can be written through it."""


class Writer:
    def __init__(self, connect: Callable[[], sqlite3.Connection], *, name: str) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._dead: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        conn = connect()  # fail here, in the caller, if the file cannot be opened
        self._busy_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        self._waits_when_busy = True  # the connection's busy_timeout: writer thread's, or 0
        self._conn_lock = threading.Lock()  # whoever holds it may use the connection
        self._conn = conn
        # for the statements that frame transactions: ``conn.execute`` makes a cursor each time
        self._sql = conn.cursor().execute
        self._checkpoints: _Checkpointer | None = None
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            self._checkpoints = _Checkpointer(connect, self._conn_lock, name=f"{name}:checkpoints")
        self._thread.start()

    def submit(self, job: Job, *, inline: bool = False) -> Future[Any]:
        """Queue ``job`` for the writer thread; with ``inline``, run it now if that is free
        (see the module's docstring). The future is done when the job's commit is."""
        fut: Future[Any] = Future()
        if inline:
            try:
                value = self.run_inline(job)
            except Exception as exc:
                fut.set_exception(exc)
                return fut
            if value is not BUSY:
                fut.set_result(value)
                return fut
        with self._lock:
            if self._dead is not None:
                raise WriterClosed(f"the store's writer stopped: {self._dead!r}")
            if self._closed:
                raise WriterClosed("the store is closed")
            self._queue.put((job, fut))
        return fut

    def run_inline(self, job: Job) -> Any:
        """Run ``job`` now, in its own transaction on this thread, and return its value (its
        error is raised); ``BUSY`` (nothing done) if the writer is busy, closed or dead, the
        write lock is taken or the commit failed: then ``submit`` it, and the writer thread
        waits for the lock and reports the errors."""
        if not self._queue.empty() or not self._conn_lock.acquire(blocking=False):
            return BUSY
        try:
            if self._dead is not None or self._closed:
                return BUSY
            return self._run_locked(job)
        finally:
            self._conn_lock.release()

    def _run_locked(self, job: Job) -> Any:
        conn, sql = self._conn, self._sql
        if self._waits_when_busy:
            sql("PRAGMA busy_timeout = 0")
            self._waits_when_busy = False
        try:
            sql("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return BUSY  # another process writes: the writer thread waits it out
        try:
            value = job(conn)
        except BaseException:
            sql("ROLLBACK")
            raise
        try:
            sql("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                sql("ROLLBACK")
            return BUSY
        if self._checkpoints is not None:
            self._checkpoints.committed()
        return value

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        if self._checkpoints is not None:
            self._checkpoints.close()

    def _run(self) -> None:
        batch: list[_Item] = []
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item]
                stop = self._drain(batch)
                self._commit(batch)
                batch = []
                if stop:
                    return
        except BaseException as exc:  # the thread is going down: nobody may wait forever
            with self._lock:
                self._dead = exc
            self._fail_all(batch, exc)  # every caller sees the cause; nothing to re-raise to
        finally:
            with self._conn_lock:
                self._conn.close()

    def _fail_all(self, batch: list[_Item], exc: BaseException) -> None:
        for _job, fut in batch:
            if not fut.done():
                fut.set_exception(WriterClosed(f"the store's writer stopped: {exc!r}"))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and not item[1].done():
                item[1].set_exception(WriterClosed(f"the store's writer stopped: {exc!r}"))

    def _drain(self, batch: list[_Item]) -> bool:
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _commit(self, batch: list[_Item]) -> None:
        with self._conn_lock:
            if not self._waits_when_busy:
                self._sql(f"PRAGMA busy_timeout = {self._busy_ms}")
                self._waits_when_busy = True
            self._commit_locked(batch)

    def _commit_locked(self, batch: list[_Item]) -> None:
        conn, sql = self._conn, self._sql
        results: list[tuple[Future[Any], Any, Exception | None]] = []
        try:
            sql("BEGIN IMMEDIATE")
            for job, fut in batch:
                if not fut.set_running_or_notify_cancel():
                    continue
                sql("SAVEPOINT job")
                try:
                    value = job(conn)
                except Exception as exc:
                    sql("ROLLBACK TO job")
                    sql("RELEASE job")
                    results.append((fut, None, exc))
                else:
                    sql("RELEASE job")
                    results.append((fut, value, None))
            sql("COMMIT")
            if self._checkpoints is not None:
                self._checkpoints.committed()
        except Exception as exc:  # could not begin or commit (locked, disk full, I/O error)
            if conn.in_transaction:
                sql("ROLLBACK")
            for _job, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut, value, error in results:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)


class _Checkpointer:
    """A thread that checkpoints the WAL every ``CHECKPOINT_EVERY`` commits, on its own
    connection: once while writes go on, then once more holding the writer's connection lock
    (no write of this process overtakes that one; ``PASSIVE``: it waits for nobody else, and
    an unfinished round is tried again)."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], lock: threading.Lock, *, name: str
    ) -> None:
        self._connect, self._lock, self._name = connect, lock, name
        self._commits = 0
        self._wanted = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        self._commits += 1  # under the writer's connection lock: one writer at a time
        if self._commits >= CHECKPOINT_EVERY:
            self._commits = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wanted.set()

    def close(self) -> None:
        self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closed:
                    return
                with contextlib.suppress(Exception):  # failed: the next round retries
                    conn = conn or self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # writers go on
                    with self._lock:  # what they wrote meanwhile: a short round, then the log
                        _busy, frames, _copied = conn.execute(  # restarts
                            "PRAGMA wal_checkpoint(PASSIVE)"
                        ).fetchone()
                    if frames >= OVERTAKEN_FRAMES:  # other processes' writes kept it going
                        self._restart(conn)
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _restart(conn: sqlite3.Connection) -> None:
        """A ``RESTART`` checkpoint that waits ``RESTART_WAIT_MS`` at most for others."""
        waits = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        try:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {waits}")
