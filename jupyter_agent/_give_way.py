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
                self._hold_began, self._held_until = now, now + HOLD_S
            self._requests += 1

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
    GIVE_WAY.installed = True


def current_kernel() -> Any:
    """The IPython kernel this process runs, if any (``None`` outside one)."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it; importing it costs ~40 ms
    if ipython is None:
        return None
    return getattr(ipython.get_ipython(), "kernel", None)
