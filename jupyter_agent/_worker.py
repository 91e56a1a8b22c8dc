"""A worker process beside the kernel that runs the sessions of agents made with ``worker=True``.

Agents in the kernel share its interpreter lock with the notebook: fifty agents stepping every
10 ms keep one core busy and a ``1+1`` cell waits its turn (bench/kernel.py). In a worker they
run on their own lock; they share the machine's cores, so they wait while the kernel handles a
request as agents in it do (the kernel's holds are shared with the worker: ``_give_way``). The
agent's model and tools go there by value (cloudpickle), so ones defined in a cell work; they
see the notebook's variables as they were when the agent was made, and the ``python`` tool has
a namespace there.

The kernel keeps one worker, started with the first such agent. It sends frames on the worker's
stdin (an 8-byte length, then a pickled dict with an id) and reads a JSON line with that id per
request from its stdout. The kernel leases the session and hands it over; the worker runs it on
its own runtime, leased in the store as any process's are, so everything else reaches it through
the store: handles, widgets, the CLI and the sidebar read it, and controls become commands there
(the kernel pokes the worker to take them at once); the text a model streams comes back on the
reply pipe to the kernel's live views. When the kernel goes, the worker's stdin closes (or its
parent changes): it ends its runtime (its sessions become ``interrupted``, resumable) and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import cloudpickle

from ._errors import ConfigError, JupyterAgentError
from ._give_way import GIVE_WAY, SHARED_HOLDS_ENV, install_in_kernel
from ._inbox import Decision
from ._live import PartialText, live_text

REPLY_TIMEOUT_S = 60.0  # a start: the worker's imports (~1 s) and the agent's first lease
CLOSE_TIMEOUT_S = 3.0  # within Jupyter's 5 s shutdown grace, with the kernel's own to do
PARENT_CHECK_S = 0.5  # how often the worker looks for its kernel
LIVE_EVERY_S = 0.1  # how often a streaming model's text so far goes to the kernel
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
    """The kernel's handle on its worker process.

    Frames carry an id and the worker answers a request with it; a request that gets no
    answer in time stops the worker (the next agent starts a fresh one), so a late answer is
    never taken for another's, and a launch given up on never runs after all.
    """

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        install_in_kernel()  # (once) its agents give way to the kernel's requests, as ours do
        holds = GIVE_WAY.share()
        if holds >= 0:
            env[SHARED_HOLDS_ENV] = str(holds)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from jupyter_agent._worker import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            pass_fds=(holds,) if holds >= 0 else (),
            start_new_session=True,  # the kernel's interrupt (SIGINT to its group) is not ours
        )
        self._lock = threading.Lock()  # one request waits for its answer at a time
        self._write_lock = threading.Lock()  # frames go out whole (a poke waits for no answer)
        self._ids = itertools.count(1)
        self._replies: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="agent-worker-replies", daemon=True)
        self._reader.start()
        self.runtime_id: str | None = None  # its runtime, once it has run a session

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _read(self) -> None:
        """Answers go to the request waiting for them; the text a session's model streams
        goes to this process's live views (its handles and widgets), as if it ran here."""
        assert self._proc.stdout is not None
        with self._proc.stdout:
            for line in self._proc.stdout:
                if line.startswith(b'{"live"'):
                    with contextlib.suppress(Exception):  # a view's listener must not stop us
                        _show_live(json.loads(line)["live"])
                else:
                    self._replies.put(line)
        self._replies.put(b"")  # it exited

    def _send(self, frame_id: int, message: dict[str, Any]) -> None:
        data = pickle.dumps({**message, "id": frame_id})
        assert self._proc.stdin is not None
        with self._write_lock:
            self._proc.stdin.write(len(data).to_bytes(_HEADER, "big") + data)
            self._proc.stdin.flush()

    def request(self, message: dict[str, Any], *, timeout: float = REPLY_TIMEOUT_S) -> Any:
        """Send one frame and return the worker's answer (its error raised as ``WorkerError``)."""
        with self._lock:
            frame_id = next(self._ids)
            deadline = time.monotonic() + timeout
            reply: dict[str, Any] | None = None
            try:
                self._send(frame_id, message)
                while reply is None:
                    line = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
                    if not line:
                        break  # it exited
                    answer = json.loads(line)
                    if answer.get("id") == frame_id:
                        reply = answer
            except (OSError, ValueError):
                pass  # its pipe is closed: it exited
            except queue.Empty:
                self._proc.kill()
                self._proc.wait()  # gone before the next agent looks for a worker
                raise WorkerError(
                    f"the agent worker (pid {self.pid}) did not answer in {timeout:g} s, so it "
                    "was stopped; the next agent made with worker=True starts a new one"
                ) from None
        if reply is None:
            raise WorkerError(
                f"the agent worker (pid {self.pid}) has exited "
                f"(code {self._proc.wait()}); its error is in the kernel's log"
            )
        if not reply.get("ok"):
            raise WorkerError(f"the agent worker could not run it: {reply.get('error')}")
        return reply.get("value")

    def poke(self, store: str) -> None:
        """Have the worker take the commands waiting in ``store`` now (else within 0.5 s); no
        answer is waited for."""
        with contextlib.suppress(OSError, ValueError):
            if self.alive():
                self._send(0, {"op": "poke", "store": store})

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
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

    def forget_in_child(self) -> None:
        """After os.fork: the child must not hold the worker's pipes open (its stdin would
        then never close when the kernel goes)."""
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    os.close(pipe.fileno())


def _show_live(live: dict[str, Any]) -> None:
    if live["text"] is None:
        live_text.clear(live["session_id"])
    else:
        live_text.set(live["session_id"], live["step"], live["text"])


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
    if _worker is not None:
        _worker.forget_in_child()
    _worker = None  # a forked child does not own its parent's worker


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_in_child)


def launch_message(
    store: Path,
    session_id: str,
    agent: bytes,
    from_runtime: str,
    decisions: Mapping[str, Decision] | None = None,
) -> dict[str, Any]:
    """What the worker needs to run a session as this process would: the notebook's current
    folder, environment (keys set in a cell since the worker started) and import path, and
    the decisions on waiting calls that asked for the run, and the price table (with what
    ``set_price`` added in a cell)."""
    from ._models._prices import PRICES

    cwd = os.getcwd()
    return {
        "op": "launch",
        "store": str(store.resolve()),
        "session_id": session_id,
        "agent": agent,
        "from_runtime": from_runtime,
        "cwd": cwd,
        "env": dict(os.environ),
        "sys_path": [p or cwd for p in sys.path],
        "decisions": [
            (call_id, d.approve, d.actor, d.reason, d.asked)
            for call_id, d in (decisions or {}).items()
        ],
        "prices": dict(PRICES),
    }


# -- the worker's side -------------------------------------------------------------------------


def _launch(message: dict[str, Any]) -> str:
    from ._agent import Agent, open_store
    from ._models._prices import PRICES
    from ._runtime import get_runtime

    os.chdir(message["cwd"])
    env = message["env"]
    for key in [k for k in os.environ if k not in env and k != "PYTHONUNBUFFERED"]:
        del os.environ[key]
    os.environ.update(env)
    for entry in reversed(message["sys_path"]):  # modules the notebook could import
        if entry not in sys.path:
            sys.path.insert(0, entry)
    PRICES.update(message.get("prices", {}))  # the notebook's, as of this launch
    store = open_store(Path(message["store"]))
    session_id = store.get_session(message["session_id"]).id  # refused if not in that store
    spec = pickle.loads(message["agent"])
    agent = Agent(**spec, store=store)
    inbox = get_runtime().inbox(session_id)
    for call_id, approve, actor, reason, asked in message.get("decisions", ()):
        inbox.post_decision(call_id, Decision(approve, actor, reason, asked))  # the run takes them
    agent._launch(session_id, takeover_from=message["from_runtime"])
    return get_runtime().id


def _take_pokes(pokes: queue.Queue[str]) -> None:
    """Take the commands the kernel just left, off the thread that reads its frames (taking
    one, a restore, may take a while)."""
    from ._agent import open_store
    from ._runtime import get_runtime

    while True:
        store = pokes.get()
        with contextlib.suppress(Exception):  # housekeeping takes them anyway
            get_runtime().take_commands(open_store(Path(store)))


def _exit(reason: str) -> None:
    """End the runtime (its sessions become ``interrupted``) and leave at once: a thread a tool
    left behind must not keep the process alive."""
    from ._runtime import get_runtime

    with contextlib.suppress(Exception):
        get_runtime().shutdown(reason=reason)
    sys.stderr.flush()
    os._exit(0)


def _watch_parent(parent: int) -> None:
    """Leave when the kernel is gone even if the pipe stays open (a process it forked may
    hold it)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    _exit("its kernel has gone")


class _Replies:
    """The worker's side of the reply pipe: answers, and the text models stream (at most
    every ``LIVE_EVERY_S`` a session, and always the end of it)."""

    def __init__(self, out: IO[str]) -> None:
        self._out, self._lock = out, threading.Lock()
        self._sent: dict[str, float] = {}

    def answer(self, reply: dict[str, Any]) -> None:
        self._write(reply)

    def live(self, session_id: str, value: PartialText | None) -> None:
        now = time.monotonic()
        if value is not None and now - self._sent.get(session_id, 0.0) < LIVE_EVERY_S:
            return
        self._sent[session_id] = now
        text = None if value is None else value.text
        step = None if value is None else value.step
        self._write({"live": {"session_id": session_id, "step": step, "text": text}})

    def _write(self, message: dict[str, Any]) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # the kernel has gone
            self._out.write(json.dumps(message) + "\n")


def main() -> None:
    """Serve the kernel's frames until its end of the pipe closes."""
    signal.signal(signal.SIGINT, lambda *_: None)  # controls come through the store
    holds = os.environ.pop(SHARED_HOLDS_ENV, None)  # (not for the processes tools start)
    if holds is not None:
        GIVE_WAY.follow(int(holds))
    frames = os.fdopen(os.dup(0), "rb")  # the frames on a descriptor of our own (not inherited)
    replies = _Replies(os.fdopen(os.dup(1), "w", buffering=1))
    live_text.mirror = replies.live
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # a tool that reads stdin reads nothing, not the kernel's frames
    os.dup2(2, 1)  # what tools print goes to the kernel's log, not into the replies
    sys.stdin = open(os.devnull)  # noqa: SIM115 (for the life of the process)
    sys.stdout = sys.stderr
    threading.Thread(
        target=_watch_parent, args=(os.getppid(),), name="agent-worker-parent", daemon=True
    ).start()
    pokes: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=_take_pokes, args=(pokes,), name="agent-worker-pokes", daemon=True
    ).start()
    while True:
        header = frames.read(_HEADER)
        if len(header) < _HEADER:
            break
        message = pickle.loads(frames.read(int.from_bytes(header, "big")))
        if message["op"] == "poke":
            pokes.put(message["store"])
            continue
        try:
            if message["op"] != "launch":
                raise ValueError(f"unknown request {message['op']!r}")
            reply = {"id": message["id"], "ok": True, "value": _launch(message)}
        except BaseException as exc:  # the kernel gets it as one line; this process goes on
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            reply = {"id": message["id"], "ok": False, "error": error}
        replies.answer(reply)
    _exit("its kernel has gone")
