"""A process that kills the commands a ``shell`` call left running if this process dies.

A ``shell`` call runs its command in a process group of its own, and kills that group when the
call ends, times out or is cancelled. A process killed outright (kill -9, out of memory) does
none of that: the command ran on, re-parented to init, while the store marked its call in doubt
and a person's approval could run it again beside it. So the groups of the calls in progress
are also told to a small process of this one's (started with the first call): it reads
``+PGID`` and ``-PGID`` lines on its stdin, and when that closes (this process is gone, however
it went) it kills the groups still listed. Where there are no process groups (Windows) there is
nothing to do.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

_REAPER = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """This process's reaper (``watch`` a group while its call runs, then ``done``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Have the reaper running (before a command is started: ``watch`` is then one write,
        with no time for a kill to come between the command's start and the reaper's knowing)."""
        self._say("")

    def watch(self, group: int) -> None:
        self._say(f"+{group}\n")

    def done(self, group: int) -> None:
        self._say(f"-{group}\n")

    def _say(self, line: str) -> None:
        if not hasattr(os, "killpg"):
            return
        with self._lock, contextlib.suppress(OSError, ValueError):
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _REAPER],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                    start_new_session=True,  # a kernel's interrupt (SIGINT to its group) is not its
                )
            assert self._proc.stdin is not None
            if line:
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()

    def forget_in_child(self) -> None:
        """After os.fork: the child's calls are its own; its copy of the pipe is closed so that
        the reaper still hears when the parent goes."""
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.close()
        self._proc = None
        self._lock = threading.Lock()


REAPER = Reaper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=REAPER.forget_in_child)
