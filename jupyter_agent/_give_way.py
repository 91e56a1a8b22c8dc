"""The notebook comes first: agents running in a kernel give way to the kernel's own work.

The kernel's threads (the one that runs cells, and ipykernel's threads that carry its messages)
and the agents' loop share one interpreter lock. A loop kept busy (many agents whose model
and tools answer at once) holds it most of the time, and CPython hands it to a waiting thread
only when its switch interval (5 ms) passes without the holder letting go, which a loop that
writes to SQLite does every few microseconds (letting go and taking it back at once). Every
hop of a request through the kernel's threads then waited up to ~5 ms: a ``1+1`` round trip
at 2-3 times its idle p95 with 50 agents stepping every 10 ms (``python -m bench.kernel``).

So, in a kernel, the loop gives way at each step boundary (``GiveWay.__call__``, which the
engine calls before each step and each write):

- while the kernel handles a request (a cell, a widget's message, a completion: between
  ipykernel's pre- and post-handler hooks) and for ``TAIL_S`` after it (the reply on its way
  out), the loop waits: for at most ``HOLD_S`` of any one request (a long cell shares the lock
  again after that), and for no more time than the agents then get (a client that sends cells
  back to back does not starve them); overlapping requests (subshells) share one hold; a
  cell that waits on the loop (``session.wait()``, starting an agent, a restore) gives it
  back at once;
- the wait begins when the request reaches the kernel: ipykernel's shell channel thread
  receives it and passes it on to the thread that handles it, and each of those hops would
  otherwise wait for the lock too (``ARRIVING_S`` at most, if no handler begins);
- while the notebook is in use (a request in the last ``IN_USE_S``), the loop sleeps
  ``BREATH_S`` after each ``BREATHE_EVERY_S`` of unbroken work, so a waiting thread gets the
  lock within about that, not ~5 ms.

Agents in the kernel's worker process (``worker=True``) run on an interpreter lock of their own,
but on the same cores: the worker's loop busy with fifty agents takes most of one, and the
kernel's threads and the client that sent the cell then wait for the other (p95 of a ``1+1``
at ~1.5 times idle on two cores). So the kernel shares its holds with its worker: each change
of when the loop may go on is written to a small shared memory map (``share``, an unlinked
file the worker inherits), and the worker's loop waits at its step boundaries until then
(``follow``), reading it every ``FOLLOW_POLL_S`` (the kernel may end a hold early) and for no
longer than a hold at a time whatever it reads. ``time.monotonic`` is one clock for every
process of a machine, so the two compare its readings.

Outside a kernel and its worker (the CLI, a script) nothing is installed and the engine's call
is two attribute tests. ``JUPYTER_AGENT_GIVE_WAY=0`` turns it off in a kernel too (agents there
then run at full speed and the notebook answers more slowly while they do).
"""

from __future__ import annotations

import mmap
import os
import sys
import tempfile
import threading
import time
from typing import Any

HOLD_S = 0.05  # the longest the loop waits for one request
TAIL_S = 0.003  # and after it: the reply and the idle status leave through other threads
ARRIVING_S = 0.005  # a request received, on its way to its handler
IN_USE_S = 30.0  # a request this recently: someone is using the notebook
BREATHE_EVERY_S = 0.0002  # unbroken loop work between two breaths while it is in use
BREATH_S = 0.00005  # long enough for a waiting thread to wake and take the lock
IDLE_GAP_S = 0.0005  # calls further apart than this: the loop rested in between
FOLLOW_POLL_S = 0.0005  # how often a worker held by its kernel looks whether it still is
SHARED_HOLDS_ENV = "JUPYTER_AGENT_KERNEL_HOLDS"  # a worker's descriptor of its kernel's holds


class GiveWay:
    """The kernel's claim on the interpreter lock, and the loop's side of it."""

    def __init__(self) -> None:
        self.installed = False
        self.forget()

    def forget(self) -> None:
        """No request, nobody using the notebook (a process forked from a kernel starts so)."""
        self._changed = threading.Condition()
        self._held_until = 0.0  # the loop waits until then (monotonic)
        self._shared: memoryview[float] | None = None  # in a kernel with a worker: its copy of that
        self._shared_fd = -1
        self._follows: memoryview[float] | None = None  # in a worker: its kernel's copy, to follow
        self._requests = 0  # requests being handled that hold the loop (subshells overlap)
        self._hold_began = 0.0
        self._arrived = 0.0  # when the last request reached the kernel
        self._holds = threading.local()  # whether this thread's request holds it
        self._agents_until = 0.0  # the agents' turn: a request before then does not hold
        self._in_use_until = 0.0  # 0 outside a kernel
        self._last_call = 0.0
        self._next_breath = 0.0

    # -- the kernel's side (its shell thread, or a subshell's) -------------------------------

    def request_began(self) -> None:
        now = time.monotonic()
        with self._changed:
            self._in_use_until = now + IN_USE_S
            holds = self._requests > 0 or now >= self._agents_until
            self._holds.value = holds
            if not holds:
                return  # the last requests held the loop as long as the agents have had since
            if not self._requests:  # the first of overlapping requests starts the hold
                began = self._arrived if now - self._arrived < ARRIVING_S else now  # (arrival)
                self._hold_began = began
                self._hold_until(began + HOLD_S)
            self._requests += 1

    def request_arriving(self) -> None:
        """A request reached the kernel (called on the thread that receives them): the loop
        waits for its handler to begin, ``ARRIVING_S`` at most."""
        now = self._arrived = time.monotonic()
        if now < self._agents_until or self._held_until >= now + ARRIVING_S:
            return  # the agents' turn, or held already
        with self._changed:
            self._in_use_until = now + IN_USE_S
            self._hold_until(now + ARRIVING_S)

    def request_ended(self) -> None:
        now = time.monotonic()
        with self._changed:
            if not getattr(self._holds, "value", False):
                return
            self._holds.value = False
            self._requests -= 1
            if self._requests:
                return  # another request still holds it
            held = min(now - self._hold_began, HOLD_S) + TAIL_S
            self._hold_until(min(self._held_until, now + TAIL_S))
            self._agents_until = now + TAIL_S + held
            self._changed.notify_all()

    def give_back(self) -> None:
        """The kernel waits on the agents (a cell in ``session.wait()``, starting an agent):
        let them run."""
        if self._held_until:
            with self._changed:
                self._hold_until(0.0)
                self._changed.notify_all()

    def _hold_until(self, until: float) -> None:
        self._held_until = until
        if self._shared is not None:
            self._shared[0] = until  # (an aligned 8-byte store: read whole by the worker)

    def share(self) -> int:
        """A descriptor of the memory map the kernel's holds are copied to, for its worker to
        inherit and ``follow``; -1 where there is nothing to share (not in a kernel, or no
        ``pass_fds`` to give it with)."""
        if not self.installed or os.name != "posix":
            return -1
        with self._changed:
            if self._shared is None:
                with tempfile.TemporaryFile() as f:  # unlinked: nothing to clean up
                    f.truncate(mmap.PAGESIZE)
                    self._shared_fd = os.dup(f.fileno())
                shared = memoryview(mmap.mmap(self._shared_fd, mmap.PAGESIZE)).cast("d")
                shared[0] = self._held_until
                self._shared = shared
            return self._shared_fd

    def follow(self, fd: int) -> None:
        """In a worker: wait at step boundaries while the kernel that started it holds its
        own loop (``share``)."""
        self._follows = memoryview(mmap.mmap(fd, mmap.PAGESIZE)).cast("d")
        os.close(fd)

    def holds(self) -> bool:
        """Whether the loop waits now (at its next step boundary) for the kernel."""
        return self._held_until > time.monotonic()

    # -- the loop's side -----------------------------------------------------------------

    def __call__(self) -> None:
        """Called on the loop at a step boundary: wait while the kernel has a request, and
        breathe after a stretch of work while the notebook is in use."""
        if not self._in_use_until:
            if self._follows is not None:
                self._wait_for_kernel(self._follows)
            return
        now = time.monotonic()
        if now >= self._in_use_until:
            return
        if self._held_until > now:
            with self._changed:
                while (left := self._held_until - time.monotonic()) > 0:
                    self._changed.wait(left)
            now = time.monotonic()
        elif now - self._last_call > IDLE_GAP_S:
            self._next_breath = now + BREATHE_EVERY_S  # it rested: a stretch starts now
        elif now >= self._next_breath:
            time.sleep(BREATH_S)  # (lets go of the interpreter lock)
            now = time.monotonic()
            self._next_breath = now + BREATHE_EVERY_S
        self._last_call = now

    @staticmethod
    def _wait_for_kernel(held: memoryview[float]) -> None:
        """A worker's wait while its kernel holds its own loop: until the kernel's hold ends,
        ``HOLD_S + TAIL_S`` at most (a kernel gone mid-hold, or a hold read half-written)."""
        now = time.monotonic()
        if held[0] <= now:
            return
        deadline = now + HOLD_S + TAIL_S
        while now < (until := min(held[0], deadline)):
            time.sleep(min(until - now, FOLLOW_POLL_S))
            now = time.monotonic()


GIVE_WAY = GiveWay()
if hasattr(os, "register_at_fork"):  # a child of a kernel handles no requests of its own
    os.register_at_fork(after_in_child=GIVE_WAY.forget)


def install_in_kernel() -> None:
    """Hook ``GIVE_WAY`` into the IPython kernel this process runs, if any (once)."""
    if GIVE_WAY.installed or os.environ.get("JUPYTER_AGENT_GIVE_WAY", "1") == "0":
        return
    kernel = current_kernel()
    before = getattr(kernel, "pre_handler_hook", None)
    after = getattr(kernel, "post_handler_hook", None)
    if kernel is None or not callable(before) or not callable(after):
        return

    def pre_handler_hook() -> None:
        GIVE_WAY.request_began()
        before()

    def post_handler_hook() -> None:
        try:
            after()
        finally:
            GIVE_WAY.request_ended()

    kernel.pre_handler_hook, kernel.post_handler_hook = pre_handler_hook, post_handler_hook
    _hook_arrivals(kernel)
    GIVE_WAY.installed = True


def _hook_arrivals(kernel: Any) -> None:
    """Tell ``GIVE_WAY`` of each request as the kernel's shell channel thread receives it
    (ipykernel 7 and later; before, requests are received on the thread that handles them)."""
    thread = getattr(kernel, "shell_channel_thread", None)
    stream = getattr(kernel, "shell_stream", None)
    receive = getattr(kernel, "shell_channel_thread_main", None)
    io_loop = getattr(thread, "io_loop", None)
    if stream is None or not callable(receive) or io_loop is None:
        return

    def arriving(msg: Any) -> Any:
        GIVE_WAY.request_arriving()
        return receive(msg)

    io_loop.add_callback(stream.on_recv, arriving, copy=False)  # (on the stream's own thread)


def current_kernel() -> Any:
    """The IPython kernel this process runs, if any (``None`` outside one)."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it; importing it costs ~40 ms
    if ipython is None:
        return None
    return getattr(ipython.get_ipython(), "kernel", None)
