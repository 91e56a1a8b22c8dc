"""The process's agent runtime: one daemon thread running an anyio event loop.

Every running session is a task on that loop, so agents keep going while the notebook's thread
runs cells (even cells that block; see notes/kernel-runtime.md, design (b)). Code on other
threads reaches the loop only through the blocking portal. The runtime never prints.

The runtime registers itself in each store it runs sessions from and leases those sessions;
a housekeeping thread heartbeats, finds runtimes that died (marking their sessions
``interrupted``) and takes control messages other processes left in the store's ``commands``.
A clean exit (kernel shutdown or restart) marks its running sessions ``interrupted`` too.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._clock import SystemClock
from ._engine import Engine, record_message
from ._errors import InvalidSessionState, JupyterAgentError
from ._identity import current_identity
from ._inbox import Decision, Inbox
from ._state import TERMINAL
from ._store import SqliteStore
from ._store._leases import is_alive, this_process

T = TypeVar("T")
HOUSEKEEPING_INTERVAL_S = 0.5


class Runtime:
    """Runs sessions in the background of this process."""

    def __init__(self) -> None:
        self.id = f"rt-{uuid.uuid4().hex[:10]}"
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._tasks: dict[str, Future[object]] = {}
        self._inboxes: dict[str, Inbox] = {}
        self._engines: dict[str, Engine] = {}
        self._relaunch: dict[str, Callable[[], object]] = {}
        self._stores: dict[str, SqliteStore] = {}
        self._housekeeper: threading.Thread | None = None
        self._closing = threading.Event()

    # -- the loop ----------------------------------------------------------------------------

    def _ensure_loop(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                ready = threading.Event()
                holder: list[BlockingPortal] = []

                async def main() -> None:
                    async with BlockingPortal() as portal:
                        holder.append(portal)
                        ready.set()
                        await portal.sleep_until_stopped()

                threading.Thread(
                    target=anyio.run, args=(main,), name="agent-loop", daemon=True
                ).start()
                ready.wait()
                self._portal = holder[0]
            return self._portal

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the runtime's loop and wait for it (e.g. ``model.aclose``)."""
        return self._ensure_loop().call(fn)

    # -- stores ------------------------------------------------------------------------------

    def attach(self, store: SqliteStore) -> None:
        """Register this runtime in ``store`` (once) and start housekeeping."""
        key = str(store.path)
        with self._lock:
            if key in self._stores:
                return
            self._stores[key] = store
        now = time.time()
        store.register_runtime(this_process(self.id, current_identity(), now))
        store.sweep(now=now)
        with self._lock:
            if self._housekeeper is None:
                self._housekeeper = threading.Thread(
                    target=self._housekeep, name="agent-runtime-housekeeping", daemon=True
                )
                self._housekeeper.start()
                atexit.register(self.shutdown)

    def _housekeep(self) -> None:
        while not self._closing.wait(HOUSEKEEPING_INTERVAL_S):
            for store in list(self._stores.values()):
                try:
                    now = time.time()
                    store.heartbeat(self.id, now)
                    store.sweep(now=now)
                    self._take_commands(store)
                except JupyterAgentError:
                    continue  # the store is busy or gone: try again next round

    def shutdown(self) -> None:
        """Clean exit: running sessions become ``interrupted`` and this runtime ends."""
        self._closing.set()
        for store in list(self._stores.values()):
            with contextlib.suppress(JupyterAgentError):
                store.end_runtime(self.id, now=time.time(), reason="its kernel shut down")

    # -- sessions ----------------------------------------------------------------------------

    def inbox(self, session_id: str) -> Inbox:
        """The session's mailbox in this process (one per session, shared by every handle)."""
        with self._lock:
            return self._inboxes.setdefault(session_id, Inbox())

    def is_running(self, session_id: str) -> bool:
        """Whether an engine of this process is running the session (or about to)."""
        return self.inbox(session_id).active

    def launch(self, engine: Engine, relaunch: Callable[[], object]) -> Future[object]:
        """Lease the session and start its engine; refuse if it already runs here or elsewhere.

        The lease is kept while the session can still go on (paused, waiting for a person), so
        another process cannot take it over; ``relaunch`` resumes it here when a command from
        another process (an approval) needs that.
        """
        session_id, store = engine.session_id, engine.store
        self.attach(store)
        inbox = self.inbox(session_id)
        if not inbox.activate():
            raise InvalidSessionState(f"session {session_id} is already running in this process")
        try:
            store.acquire_lease(session_id, self.id, now=time.time())
            engine.lease = self.id
            portal = self._ensure_loop()
            task: Future[object] = portal.start_task_soon(self._run, engine)
        except BaseException:
            inbox.deactivate()
            raise
        self._tasks[session_id] = task
        self._engines[session_id] = engine
        self._relaunch[session_id] = relaunch
        return task

    async def _run(self, engine: Engine) -> object:
        try:
            state = await engine.run_to_rest()
        finally:
            self._engines.pop(engine.session_id, None)
        if state.status in TERMINAL:
            self._relaunch.pop(engine.session_id, None)
            await anyio.to_thread.run_sync(engine.store.release_lease, engine.session_id, self.id)
        return state

    def interrupt(self, session_id: str) -> None:
        """Cut short what the session waits on (a model answer, a sleep): it then sees its
        pause or stop request at once instead of at the end of the wait."""
        engine = self._engines.get(session_id)
        if engine is not None and self._portal is not None:
            self._portal.call(engine.interrupt)

    def task(self, session_id: str) -> Future[object] | None:
        return self._tasks.get(session_id)

    def owner_elsewhere(self, store: SqliteStore, session_id: str) -> str | None:
        """The live runtime of another process that holds the session, or None."""
        holder = store.get_session(session_id).runtime_id
        if not holder or holder == self.id:
            return None
        info = store.get_runtime(holder)
        return holder if info is not None and is_alive(info, time.time()) else None

    def _take_commands(self, store: SqliteStore) -> None:
        for session_id in list(self._relaunch):
            for cmd in store.take_commands(session_id, taken_by=self.id):
                self._apply_command(session_id, cmd.verb, cmd.args, cmd.actor)

    def _apply_command(
        self, session_id: str, verb: str, args: dict[str, object], actor: str
    ) -> None:
        inbox, relaunch = self.inbox(session_id), self._relaunch.get(session_id)
        if verb == "tell":
            engine = self._engines.get(session_id)
            store = engine.store if engine else None
            text = str(args.get("text", ""))

            def record() -> None:
                if store is not None:
                    record_message(store, session_id, text, actor=actor, clock=SystemClock())

            inbox.post_message(text, actor, otherwise=record)
        elif verb in ("approve", "deny"):
            decision = Decision(verb == "approve", actor, str(args.get("reason", "")))
            if not inbox.post_decision(str(args.get("call_id")), decision) and relaunch:
                relaunch()
        elif verb == "resume" and relaunch and not inbox.active:
            relaunch()
        elif verb in ("pause", "stop"):
            if verb == "pause":
                inbox.pause_requested = True
            else:
                inbox.stop_requested = True
            self.interrupt(session_id)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, created on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime
