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

import asyncio
import atexit
import collections
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio._backends._asyncio  # the loop's: imported now, not (~9 ms) at the first start
from anyio.from_thread import BlockingPortal

from ._branch import FileVersion, restore_session
from ._clock import SystemClock
from ._engine import Engine, record_message, record_stop
from ._errors import InvalidSessionState, JupyterAgentError
from ._give_way import GIVE_WAY, current_kernel, install_in_kernel
from ._identity import current_identity
from ._inbox import Decision, Inbox
from ._state import TERMINAL
from ._store import SqliteStore
from ._store._leases import LeaseLost, is_alive, this_process

T = TypeVar("T")
HOUSEKEEPING_INTERVAL_S = 0.5
TASK_WAIT_S = 1.0  # how long task() waits for a run that is starting to register its task


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
        self._restores: dict[str, tuple[SqliteStore, int, str, Future[list[FileVersion]]]] = {}
        self._stores: dict[str, SqliteStore] = {}
        self._session_stores: dict[str, SqliteStore] = {}  # sessions whose lease we hold
        self._abandoned: dict[str, tuple[SqliteStore, str]] = {}  # to mark interrupted
        self._housekeeper: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # anyio runs on asyncio here
        self._closing = threading.Event()
        self._commands_lock = threading.RLock()  # a command may launch a run, which takes more
        self._forked = False
        self.errors: collections.deque[str] = collections.deque(maxlen=50)

    # -- the loop ----------------------------------------------------------------------------

    def _ensure_loop(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                ready = threading.Event()
                holder: list[BlockingPortal] = []

                async def main() -> None:
                    self._loop = asyncio.get_running_loop()
                    async with BlockingPortal() as portal:
                        holder.append(portal)
                        ready.set()
                        await portal.sleep_until_stopped()

                self._loop_thread = threading.Thread(
                    target=anyio.run, args=(main,), name="agent-loop", daemon=True
                )
                self._loop_thread.start()
                install_in_kernel()
                ready.wait()
                self._portal = holder[0]
            return self._portal

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the runtime's loop and wait for it (e.g. ``model.aclose``)."""
        portal = self._ensure_loop()
        GIVE_WAY.give_back()  # a cell that waits on the loop: the loop may not wait on it
        return portal.call(fn)

    # -- stores ------------------------------------------------------------------------------

    def attach(self, store: SqliteStore) -> None:
        """Register this runtime in ``store`` (once) and start housekeeping."""
        key = str(store.path)
        if key in self._stores:
            return
        now = time.time()
        store.register_runtime(this_process(self.id, current_identity(), now))
        store.sweep(now=now)
        with self._lock:
            self._stores.setdefault(key, store)
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
                    if not store.heartbeat(self.id, now):  # judged dead while we lived on
                        store.register_runtime(this_process(self.id, current_identity(), now))
                    store.sweep(now=now)
                    self.take_commands(store)
                    self._retry_abandoned()
                except Exception as exc:  # housekeeping must outlive any one bad round
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def shutdown(self, reason: str | None = None) -> None:
        """Clean exit: running sessions become ``interrupted`` and this runtime ends."""
        if self._forked or self._closing.is_set():
            return  # a forked child (the stores' writer threads are not here), or done
        if reason is None:
            in_kernel = current_kernel() is not None
            reason = "its kernel shut down" if in_kernel else "its process ended"
        self._closing.set()
        asked: dict[str, tuple[str, str]] = {}  # a stop or pause the engine did not reach
        with self._lock:
            inboxes = list(self._inboxes.items())
        for session_id, inbox in inboxes:
            if inbox.active and inbox.stop_requested:
                asked[session_id] = ("stopped", inbox.stop_requested)
            elif inbox.active and inbox.pause_requested:
                asked[session_id] = ("paused", inbox.pause_requested)
        for store in list(self._stores.values()):
            with contextlib.suppress(JupyterAgentError):
                store.end_runtime(self.id, now=time.time(), reason=reason, asked=asked)

    # -- sessions ----------------------------------------------------------------------------

    def inbox(self, session_id: str) -> Inbox:
        """The session's mailbox in this process (one per session, shared by every handle)."""
        with self._lock:
            return self._inboxes.setdefault(session_id, Inbox())

    def is_running(self, session_id: str) -> bool:
        """Whether an engine of this process is running the session (or about to)."""
        return self.inbox(session_id).active

    def launch(
        self,
        engine: Engine,
        relaunch: Callable[[], object],
        *,
        takeover_from: str | None = None,
    ) -> Future[object]:
        """Lease the session and start its engine; refuse if it already runs here or elsewhere.

        The lease is kept while the session can still go on (paused, waiting for a person), so
        another process cannot take it over; ``relaunch`` resumes it here when a command from
        another process (an approval, a resume) needs that. ``takeover_from``: the runtime that
        hands the session over (a kernel to its worker); refused unless it still holds it.
        """
        session_id, store = engine.session_id, engine.store
        self.attach(store)
        inbox = self.inbox(session_id)
        if not inbox.activate():
            raise InvalidSessionState(f"session {session_id} is already running in this process")
        self._abandoned.pop(session_id, None)  # run again: no longer to be marked interrupted
        try:
            if takeover_from is None:
                store.acquire_lease(session_id, self.id, now=time.time())
            else:
                store.hand_over_lease(session_id, takeover_from, self.id)
        except BaseException:
            inbox.deactivate()
            raise
        engine.lease = self.id
        self._engines[session_id] = engine
        self._relaunch[session_id] = relaunch
        self._session_stores[session_id] = store
        with self._commands_lock:  # what was left while no process ran it (a decision on a
            self._apply_commands(session_id, store)  # waiting call): before the run settles
        try:
            portal = self._ensure_loop()
            GIVE_WAY.give_back()  # the portal waits for the loop to take the task
            task: Future[object] = portal.start_task_soon(self._run, engine)
        except BaseException:
            self._engines.pop(session_id, None)
            inbox.deactivate()
            self.forget(session_id)
            raise
        self._tasks[session_id] = task
        return task

    async def _run(self, engine: Engine) -> object:
        try:
            state = await engine.run_to_rest()
        except BaseException as exc:
            self._engines.pop(engine.session_id, None)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._abandon, engine, exc)
            if isinstance(exc, Exception | anyio.get_cancelled_exc_class()):
                raise
            # e.g. SystemExit from a model: it ends this session, not the loop every other
            # session runs on (the portal's task group would take it down with it)
            raise RuntimeError(f"session {engine.session_id} stopped: {_named(exc)}") from exc
        self._engines.pop(engine.session_id, None)
        waiting = self._restores.pop(engine.session_id, None)
        if waiting is not None:  # the pause it asked for has come: rewind now
            await anyio.to_thread.run_sync(lambda: self._restore_now(engine.session_id, *waiting))
        elif state.status in TERMINAL:
            await anyio.to_thread.run_sync(self.forget, engine.session_id)
        return state

    def _note_failure(self, done: Future[Any]) -> None:
        if done.exception() is not None:
            self.errors.append(f"{type(done.exception()).__name__}: {done.exception()}")

    def restore(
        self, store: SqliteStore, session_id: str, at: int, actor: str
    ) -> Future[list[FileVersion]]:
        """Rewind a session to event ``at``: at once when nothing runs it here, else once the
        pause this asks for has come. Nothing can run it meanwhile, here or elsewhere."""
        done: Future[list[FileVersion]] = Future()
        if self.inbox(session_id).active:
            self._restores[session_id] = (store, at, actor, done)
            self.inbox(session_id).pause_requested = actor
            self.interrupt(session_id)
        else:
            self._restore_now(session_id, store, at, actor, done)
        return done

    def _restore_now(
        self,
        session_id: str,
        store: SqliteStore,
        at: int,
        actor: str,
        done: Future[list[FileVersion]],
    ) -> None:
        inbox = self.inbox(session_id)
        if not inbox.activate():  # an engine started in between: wait for its pause
            self._restores[session_id] = (store, at, actor, done)
            inbox.pause_requested = actor
            self.interrupt(session_id)
            return
        try:
            done.set_result(
                restore_session(
                    store, session_id, at, actor=actor, clock=SystemClock(), runtime_id=self.id
                )
            )
        except BaseException as exc:
            done.set_exception(exc)
        finally:
            late = inbox.take_messages()
            inbox.deactivate()
            for text, who in late:  # told while the files and the log were being rewound
                record_message(store, session_id, text, actor=who, clock=SystemClock())

    def _abandon(self, engine: Engine, exc: BaseException) -> None:
        """The engine stopped on an error it could not record: mark the session interrupted
        (if this process still holds it) so anyone can resume it, and let it go. If the store
        refuses now (it may be what failed), housekeeping tries again."""
        self._relaunch.pop(engine.session_id, None)
        self._session_stores.pop(engine.session_id, None)
        self._abandoned[engine.session_id] = (engine.store, f"its engine stopped: {_named(exc)}")
        self._retry_abandoned()

    def _retry_abandoned(self) -> None:
        for session_id, (store, reason) in list(self._abandoned.items()):
            try:
                store.interrupt_session(session_id, self.id, now=time.time(), reason=reason)
            except LeaseLost:
                pass  # another runtime holds it now: nothing left to mark
            except JupyterAgentError:
                continue
            self._abandoned.pop(session_id, None)

    def relaunch(self, session_id: str) -> bool:
        """Run again, with the agent it last ran with, a session this process holds (paused or
        waiting here); False if there is none to run it with."""
        again = self._relaunch.get(session_id)
        if again is None or self.is_running(session_id):
            return False
        again()
        return True

    def forget(self, session_id: str) -> None:
        """Give the session up: release its lease (if held here) and its relaunch entry."""
        self._relaunch.pop(session_id, None)
        store = self._session_stores.pop(session_id, None)
        if store is not None:
            with contextlib.suppress(JupyterAgentError):
                store.release_lease(session_id, self.id)

    def interrupt(self, session_id: str, *, only: str | None = None) -> None:
        """Cut short what the session waits on (a model answer, a sleep; with ``only``, just
        that kind of wait): it then sees its pause or stop request at once."""
        engine = self._engines.get(session_id)
        if engine is None or self._portal is None:
            return
        if threading.current_thread() is self._loop_thread:
            engine.interrupt(only=only)
        elif self._loop is not None:  # never wait for the loop: it may be busy
            self._loop.call_soon_threadsafe(lambda: engine.interrupt(only=only))

    def task(self, session_id: str) -> Future[object] | None:
        """The task of the session's newest run here. A run that is starting has its inbox
        active before its task is registered: that one is waited for (``TASK_WAIT_S`` at most),
        not the last run's, which has ended."""
        task = self._tasks.get(session_id)
        if task is None or not task.done() or self.on_loop_thread():
            return task
        deadline = time.monotonic() + TASK_WAIT_S
        while self.is_running(session_id) and time.monotonic() < deadline:
            newer = self._tasks.get(session_id)
            if newer is not task:
                return newer
            time.sleep(0.001)
        return self._tasks.get(session_id)

    def on_loop_thread(self) -> bool:
        """Whether the caller is the runtime's loop (where waiting for a run stops it)."""
        return threading.current_thread() is self._loop_thread

    def holds(self, session_id: str) -> bool:
        """Whether this process holds the session's lease (running it, or paused here)."""
        return session_id in self._session_stores

    def owner_elsewhere(self, store: SqliteStore, session_id: str) -> str | None:
        """The live runtime of another process that holds the session, or None."""
        holder = store.get_session(session_id).runtime_id
        if not holder or holder == self.id:
            return None
        info = store.get_runtime(holder)
        return holder if info is not None and is_alive(info, time.time()) else None

    def ask(self, store: SqliteStore, session_id: str, verb: str, actor: str) -> None:
        """Pause or stop (``verb``) a session running here, at its engine's next step boundary.

        It is also queued in the store, without waiting for the write (another process may
        hold the lock), as applied and left open, as one from elsewhere is (``_apply_commands``):
        once written, it is what the session becomes if this process is killed before the
        engine gets to it."""
        inbox = self.inbox(session_id)
        if verb == "pause":
            inbox.pause_requested = actor
        else:
            inbox.stop_requested = actor
        self.interrupt(session_id)

        def written(done: Future[int]) -> None:  # (on the store's writer thread, at once)
            if done.exception() is None:
                inbox.applied_before(done.result(), still_open=True)

        with contextlib.suppress(JupyterAgentError):  # (the engine has it all the same)
            sending = store.send_command_soon(session_id, verb, {}, actor=actor)
            sending.add_done_callback(written)
            inbox.asking(sending)

    def take_commands(self, store: SqliteStore) -> None:
        """Take the commands waiting in ``store`` for the sessions held here (housekeeping does
        it every round; a worker at once, when its kernel pokes it)."""
        with self._commands_lock:
            for session_id, held_in in list(self._session_stores.items()):
                if held_in is store:
                    self._apply_commands(session_id, store)

    def _apply_commands(self, session_id: str, store: SqliteStore) -> None:
        inbox = self.inbox(session_id)
        # a pause or stop of a running session stays open in the store until the run ends:
        # if this process ends before its engine gets to it, it is still what happens
        leave_open = ("pause", "stop") if inbox.active else ()
        for cmd in store.take_commands(session_id, taken_by=self.id, leave_open=leave_open):
            if inbox.applied_before(cmd.id, still_open=cmd.left_open):
                continue
            try:
                self._apply_command(session_id, cmd.verb, cmd.args, cmd.actor)
            except Exception as exc:  # one bad command must not drop the others
                self.errors.append(f"command {cmd.id} ({cmd.verb}): {exc}")

    def _apply_command(self, session_id: str, verb: str, args: object, actor: str) -> None:
        args = args if isinstance(args, dict) else {}
        inbox, store = self.inbox(session_id), self._session_stores[session_id]
        clock = SystemClock()
        if verb == "tell":
            text = str(args.get("text", ""))
            inbox.post_message(
                text,
                actor,
                otherwise=lambda: record_message(
                    store, session_id, text, actor=actor, clock=clock, runtime_id=self.id
                ),
            )
            self.interrupt(session_id, only="tick")
        elif verb in ("approve", "deny"):
            asked = args.get("asked")
            asked = asked if isinstance(asked, int) and not isinstance(asked, bool) else None
            decision = Decision(verb == "approve", actor, str(args.get("reason", "")), asked)
            if not inbox.post_decision(str(args.get("call_id")), decision):
                self._relaunch[session_id]()
        elif verb == "resume" and not inbox.active:
            self._relaunch[session_id]()
        elif verb == "release" and not inbox.active:  # from the kernel this worker serves
            self.forget(session_id)
        elif verb == "stop" and not inbox.active:
            record_stop(store, session_id, actor=actor, clock=clock, runtime_id=self.id)
            self.forget(session_id)
        elif verb == "restore":
            self.restore(store, session_id, int(args["at"]), actor).add_done_callback(
                self._note_failure
            )
        elif verb in ("pause", "stop") and inbox.active:
            if verb == "pause":
                inbox.pause_requested = actor
            else:
                inbox.stop_requested = actor
            self.interrupt(session_id)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def _forget_runtime_in_child() -> None:
    """After os.fork the child has none of the parent's threads: start afresh, and never
    let the parent's runtime speak for the child at exit."""
    global _runtime
    if _runtime is not None:
        _runtime._forked = True
    _runtime = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runtime_in_child)


def get_runtime() -> Runtime:
    """This process's runtime, created on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def _named(exc: BaseException) -> str:
    """``Type: text``, or the type alone when the error has no text (a cancellation)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
