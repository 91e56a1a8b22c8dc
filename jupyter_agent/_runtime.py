"""The process's agent runtime: one daemon thread running an anyio event loop.

Every running session is a task on that loop, so agents keep going while the notebook's thread
runs cells (even cells that block; see notes/kernel-runtime.md, design (b)). Code on other
threads reaches the loop only through the blocking portal. The runtime never prints.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._errors import InvalidSessionState
from ._inbox import Inbox

T = TypeVar("T")


class Runtime:
    """Runs sessions in the background of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._tasks: dict[str, Future[object]] = {}
        self._inboxes: dict[str, Inbox] = {}

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

    def inbox(self, session_id: str) -> Inbox:
        """The session's mailbox in this process (one per session, shared by every handle)."""
        with self._lock:
            return self._inboxes.setdefault(session_id, Inbox())

    def is_running(self, session_id: str) -> bool:
        """Whether an engine of this process is running the session (or about to)."""
        return self.inbox(session_id).active

    def launch(self, session_id: str, run: Callable[[], Awaitable[T]]) -> Future[T]:
        """Start ``run()`` as the session's task; refuse if the session already runs here.

        ``run`` must release the session's inbox when it ends (``Engine.run_to_rest`` does).
        """
        portal = self._ensure_loop()
        inbox = self.inbox(session_id)
        if not inbox.activate():
            raise InvalidSessionState(f"session {session_id} is already running in this process")
        try:
            task: Future[T] = portal.start_task_soon(run)
        except BaseException:
            inbox.deactivate()
            raise
        self._tasks[session_id] = task  # type: ignore[assignment]
        return task

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the runtime's loop and wait for it (e.g. ``model.aclose``)."""
        return self._ensure_loop().call(fn)

    def task(self, session_id: str) -> Future[object] | None:
        return self._tasks.get(session_id)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, created on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime
