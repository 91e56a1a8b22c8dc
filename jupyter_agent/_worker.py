"""A worker process beside the kernel that runs the sessions of agents made with ``worker=True``.

Agents in the kernel share its interpreter lock with the notebook: fifty agents stepping every
10 ms keep one core busy and a ``1+1`` cell waits its turn (bench/kernel.py). In a worker they
run on their own lock and the notebook stays as quick as with none. The agent's model and
tools go there by value (cloudpickle), so ones defined in a cell work; they see the notebook's
variables as they were when the agent was made, and the ``python`` tool has a namespace there.

The kernel keeps one worker, started with the first such agent. It sends frames on the
worker's stdin (an 8-byte length, then a pickled dict) and reads one JSON line per frame from
its stdout. The worker runs the sessions on its own runtime, leased in the store as any
process's are, so everything else reaches them through the store: handles, widgets, the CLI
and the sidebar read it, and controls become commands there (the kernel pokes the worker to
take them at once). When the kernel goes, the worker's stdin closes: it ends its runtime (its
sessions become ``interrupted``, resumable) and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cloudpickle

from ._errors import ConfigError, JupyterAgentError

REPLY_TIMEOUT_S = 60.0  # a start: the worker's imports (~1 s) and the agent's first lease
_HEADER = 8


class WorkerError(JupyterAgentError):
    """The worker process could not run the session (or is gone)."""


def pack_agent(spec: dict[str, Any]) -> bytes:
    """The agent's arguments as bytes for the worker; a clear error if they cannot go there."""
    try:
        packed: bytes = cloudpickle.dumps(spec)
        return packed
    except Exception as exc:
        raise ConfigError(
            f"this agent cannot run in a worker process: its model or tools cannot be sent "
            f"there ({type(exc).__name__}: {exc}); name the model as a string, or make the "
            "agent without worker=True"
        ) from None


class Worker:
    """The kernel's handle on its worker process."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from jupyter_agent._worker import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,  # the kernel's interrupt (SIGINT to its group) is not ours
        )
        self._lock = threading.Lock()
        self._replies: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="agent-worker-replies", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _read(self) -> None:
        assert self._proc.stdout is not None
        with self._proc.stdout:
            for line in self._proc.stdout:
                self._replies.put(line)
        self._replies.put(b"")  # it exited

    def request(self, message: dict[str, Any], *, timeout: float = REPLY_TIMEOUT_S) -> Any:
        """Send one frame and return the worker's answer (its error raised as ``WorkerError``)."""
        data = pickle.dumps(message)
        with self._lock:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(len(data).to_bytes(_HEADER, "big") + data)
                self._proc.stdin.flush()
                line = self._replies.get(timeout=timeout)
            except (OSError, ValueError):
                line = b""
            except queue.Empty:
                raise WorkerError(
                    f"the agent worker (pid {self.pid}) did not answer in {timeout:g} s"
                ) from None
        if not line:
            raise WorkerError(
                f"the agent worker (pid {self.pid}) has exited "
                f"(code {self._proc.wait()}); its error is in the kernel's log"
            )
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"the agent worker could not run it: {reply.get('error')}")
        return reply.get("value")

    def poke(self, store: str) -> None:
        """Have the worker take the commands waiting in ``store`` now (else within 0.5 s)."""
        if self.alive():
            with contextlib.suppress(WorkerError):  # its housekeeping takes them anyway
                self.request({"op": "poke", "store": store}, timeout=5.0)

    def close(self, timeout: float = 10.0) -> None:
        """Close its stdin: it ends its runtime (sessions ``interrupted``) and exits."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)


_worker: Worker | None = None
_worker_lock = threading.Lock()


def get_worker() -> Worker:
    """This process's worker, started on first use (again if it died)."""
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.alive():
            if _worker is None:
                atexit.register(close_worker)
            _worker = Worker()
        return _worker


def current_worker() -> Worker | None:
    """The worker if one runs (nothing is started)."""
    return _worker if _worker is not None and _worker.alive() else None


def close_worker() -> None:
    """Close this process's worker, if any (at exit; a test's end): its sessions become
    ``interrupted``."""
    global _worker
    with _worker_lock:
        if _worker is not None:
            _worker.close()
            _worker = None


def _forget_worker_in_child() -> None:
    global _worker
    _worker = None  # a forked child does not own its parent's worker


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_in_child)


# -- the worker's side -------------------------------------------------------------------------


def _handle(message: dict[str, Any]) -> Any:
    from ._agent import Agent, open_store
    from ._runtime import get_runtime

    op = message["op"]
    store = open_store(Path(message["store"]))
    if op == "poke":
        get_runtime().take_commands_now(store)
        return None
    for entry in reversed(message.get("sys_path", [])):  # modules the notebook could import
        if entry not in sys.path:
            sys.path.insert(0, entry)
    spec = pickle.loads(message["agent"])
    agent = Agent(**spec, store=store)
    session_id = message["session_id"]
    if op == "launch":
        agent._launch(session_id, takeover_from=message.get("from_runtime"))
        return get_runtime().id
    raise ValueError(f"unknown request {op!r}")


def main() -> None:
    """Serve the kernel's frames until its end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stop/pause go through the store
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what tools print goes to the kernel's log, not into the replies
    sys.stdout = sys.stderr
    frames = sys.stdin.buffer
    while True:
        header = frames.read(_HEADER)
        if len(header) < _HEADER:
            break
        data = frames.read(int.from_bytes(header, "big"))
        try:
            reply = {"ok": True, "value": _handle(pickle.loads(data))}
        except BaseException as exc:  # the kernel gets it as one line; this process goes on
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        replies.write(json.dumps(reply) + "\n")
    from ._runtime import get_runtime

    get_runtime().shutdown(reason="its kernel has gone")
    replies.close()
