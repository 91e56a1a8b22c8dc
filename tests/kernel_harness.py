"""Real IPython kernels for tests: start them on one store, run cells, kill and restart them.

Not collected by pytest (no ``test_`` prefix); ``test_kernel_runtime.py`` builds its fixture on
``Kernels``. The recipe is the one measured in notes/kernel-runtime.md (Q6): a kernel per test,
``PYTEST_CURRENT_TEST`` removed from its environment (else ipykernel skips fd capture), always
shut down. Kernels report back by printing one JSON line (``CellResult.json()``).
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel


class KernelCellFailed(AssertionError):
    """A cell that had to succeed raised; the message carries the kernel's traceback."""


@dataclass(frozen=True, slots=True)
class CellResult:
    """What one executed cell gave back: its reply status, its output and how long it took."""

    status: str  # "ok", "error" or "aborted"
    stdout: str
    stderr: str
    ename: str | None
    evalue: str | None
    traceback: str
    seconds: float  # from sending the cell to its reply

    def json(self) -> Any:
        """The last line the cell printed, read as JSON."""
        lines = self.stdout.strip().splitlines()
        if not lines:
            raise AssertionError(f"the cell printed nothing (stderr: {self.stderr!r})")
        return json.loads(lines[-1])


class Kernel:
    """One running kernel and a blocking client connected to it."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient) -> None:
        self.km, self.kc = km, kc
        self._sent: dict[str, float] = {}

    @property
    def pid(self) -> int:
        process = self.km.provisioner.process  # type: ignore[union-attr]
        return int(process.pid)

    def submit(self, code: str) -> str:
        """Send a cell without waiting for it; ``result(msg_id)`` collects it later."""
        msg_id = str(self.kc.execute(textwrap.dedent(code), store_history=False))
        self._sent[msg_id] = time.monotonic()
        return msg_id

    def result(self, msg_id: str, *, timeout: float = 60.0) -> CellResult:
        """Wait for a submitted cell's reply, then for its output up to ``status: idle``."""
        deadline = time.monotonic() + timeout
        reply = self._reply(msg_id, deadline)
        seconds = time.monotonic() - self._sent.pop(msg_id)
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        while True:
            msg = self._next(self.kc.get_iopub_msg, deadline, f"output of cell {msg_id}")
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]].append(content["text"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        content = reply["content"]
        return CellResult(
            status=content["status"],
            stdout="".join(out["stdout"]),
            stderr="".join(out["stderr"]),
            ename=content.get("ename"),
            evalue=content.get("evalue"),
            traceback="\n".join(content.get("traceback", [])),
            seconds=seconds,
        )

    def execute(self, code: str, *, timeout: float = 60.0) -> CellResult:
        """Run a cell and return what it gave, whether it raised or not."""
        return self.result(self.submit(code), timeout=timeout)

    def run(self, code: str, *, timeout: float = 60.0) -> CellResult:
        """Run a cell that must succeed; a raising cell fails the test with its traceback."""
        result = self.execute(code, timeout=timeout)
        if result.status != "ok":
            raise KernelCellFailed(
                f"cell raised {result.ename}: {result.evalue}\n{result.traceback}\n"
                f"--- code ---\n{textwrap.dedent(code)}"
            )
        return result

    def interrupt(self) -> None:
        """SIGINT, as the notebook's stop button sends it."""
        self.km.interrupt_kernel()

    def kill(self) -> None:
        """kill -9: no atexit, no clean-up; the process stays a zombie until it is reaped."""
        os.kill(self.pid, signal.SIGKILL)

    def restart(self, *, now: bool) -> None:
        """Restart in place (same ports, same client); ``now=True`` is a SIGKILL restart."""
        self.km.restart_kernel(now=now)
        self.kc.wait_for_ready(timeout=60)

    def shutdown(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)

    def _reply(self, msg_id: str, deadline: float) -> dict[str, Any]:
        while True:
            msg = self._next(self.kc.get_shell_msg, deadline, f"reply to cell {msg_id}")
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    @staticmethod
    def _next(get: Callable[..., dict[str, Any]], deadline: float, what: str) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} in time")
        try:
            return get(timeout=left)
        except queue.Empty:
            raise TimeoutError(f"no {what} in time") from None


class Kernels:
    """Starts kernels whose default store is ``store`` and shuts every one of them down."""

    def __init__(self, workdir: Path, store: Path) -> None:
        self.workdir, self.store = workdir, store
        self._started: list[Kernel] = []

    def env(self) -> dict[str, str]:
        env = {**os.environ, "JUPYTER_AGENT_DB": str(self.store)}
        env.pop("PYTEST_CURRENT_TEST", None)  # else ipykernel skips fd capture in the kernel
        return env

    def start(self, **env: str) -> Kernel:
        """A new kernel; ``env``: variables to set in its environment besides the store's."""
        km, kc = start_new_kernel(
            kernel_name="python3",
            env={**self.env(), **env},
            cwd=str(self.workdir),
            startup_timeout=60,
        )
        kernel = Kernel(km, kc)
        self._started.append(kernel)
        return kernel

    def close(self) -> None:
        """Shut every kernel down, even if one of them fails to; then raise the first error."""
        errors: list[Exception] = []
        for kernel in self._started:
            try:
                kernel.shutdown()
            except Exception as exc:
                errors.append(exc)
        self._started.clear()
        if errors:
            raise errors[0]


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll ``check`` every 5 ms; return the seconds it took, fail after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
