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

Outside a kernel (a worker, the CLI, a script) nothing is installed and the engine's call is
one attribute test. ``JUPYTER_AGENT_GIVE_WAY=0`` turns it off in a kernel too (agents there
then run at full speed and the notebook answers more slowly while they do).
"""

from __future__ import annotations

import os
import sys
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


class GiveWay:
    """The kernel's claim on the interpreter lock, and the loop's side of it."""

    def __init__(self) -> None:
        self.installed = False
        self.forget()

    def forget(self) -> None:
        """No request, nobody using the notebook (a process forked from a kernel starts so)."""
        self._changed = threading.Condition()
        self._held_until = 0.0  # the loop waits until then (monotonic)
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
                self._hold_began, self._held_until = began, began + HOLD_S
            self._requests += 1

    def request_arriving(self) -> None:
        """A request reached the kernel (called on the thread that receives them): the loop
        waits for its handler to begin, ``ARRIVING_S`` at most."""
        now = self._arrived = time.monotonic()
        if now < self._agents_until or self._held_until >= now + ARRIVING_S:
            return  # the agents' turn, or held already
        with self._changed:
            self._in_use_until = now + IN_USE_S
            self._held_until = now + ARRIVING_S

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
            self._held_until = min(self._held_until, now + TAIL_S)
            self._agents_until = now + TAIL_S + held
            self._changed.notify_all()

    def give_back(self) -> None:
        """The kernel waits on the agents (a cell in ``session.wait()``, starting an agent):
        let them run."""
        if self._held_until:
            with self._changed:
                self._held_until = 0.0
                self._changed.notify_all()

    def holds(self) -> bool:
        """Whether the loop waits now (at its next step boundary) for the kernel."""
        return self._held_until > time.monotonic()

    # -- the loop's side -----------------------------------------------------------------

    def __call__(self) -> None:
        """Called on the loop at a step boundary: wait while the kernel has a request, and
        breathe after a stretch of work while the notebook is in use."""
        if not self._in_use_until:
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
