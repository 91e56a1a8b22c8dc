"""The ``python`` built-in: run code in the agent's persistent namespace, like a notebook cell.

The code runs in a worker thread so the event loop stays free; its prints are captured for that
thread only (``_capture``). At the time limit an exception is raised *inside* that thread
(``PyThreadState_SetAsyncExc``): the interpreter delivers it at its next bytecode check, which
stops even ``while True: pass`` (a trace function would not: a one-line loop emits no events).
It is fired at most once, and only while the agent's code runs, so it can never land in a pool
thread that has moved on. Code blocked inside C (``time.sleep(1e9)``) or that swallows the
exception cannot be stopped: after a short grace the call returns an error and the thread is
left to finish in the background.
"""

from __future__ import annotations

import ast
import ctypes
import itertools
import linecache
import threading
import traceback

import anyio
import anyio.to_thread

from ._capture import capture_thread_output
from ._context import Effect, ToolContext
from ._output import OUTPUT_LIMIT
from ._tool import ToolOutput, tool

GRACE_S = 2.0  # how long past its limit a run that ignores the interruption is waited for
TRACEBACK_LINES = 30  # the end of a traceback is what says what went wrong
_cell_numbers = itertools.count(1)


class _TimeLimit(BaseException):
    """Raised inside the running code; a BaseException so ``except Exception`` can't eat it."""


def _raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Make ``thread_id`` raise ``exc_type`` at its next bytecode check; ``None`` cancels it."""
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None)


class _Run:
    """One execution of ``code`` in ``namespace``, which ``interrupt()`` stops."""

    def __init__(self, code: str, namespace: dict[str, object], timeout_s: float) -> None:
        self.code, self.namespace, self.timeout_s = code, namespace, timeout_s
        self.filename = f"<agent-cell-{next(_cell_numbers)}>"
        self._lock = threading.Lock()
        self._thread_id: int | None = None  # set while the agent's code runs
        self._fired = False
        # Tracebacks show the failing source line, as they would in a notebook.
        linecache.cache[self.filename] = (len(code), None, code.splitlines(True), self.filename)

    def interrupt(self) -> None:
        """Stop the code if it is still running (called from the event loop's thread)."""
        with self._lock:
            if self._thread_id is not None and not self._fired:
                self._fired = True
                _raise_in_thread(self._thread_id, _TimeLimit)

    def execute(self) -> ToolOutput:
        """Run the code (in a worker thread) and report what it printed and returned."""
        with capture_thread_output(OUTPUT_LIMIT) as out:
            failed = True
            try:
                shown = self._interruptible()
                failed = False
            except _TimeLimit:
                shown = f"[stopped: time limit of {self.timeout_s:g}s reached]"
            except BaseException as exc:  # the agent's code may raise anything, SystemExit too
                shown = self._traceback(exc)
            if shown:
                text = out.text()
                out.write(("\n" if text and not text.endswith("\n") else "") + shown)
        return ToolOutput(out.text() or "(no output)", is_error=failed)

    def _interruptible(self) -> str:
        with self._lock:
            self._thread_id = threading.get_ident()
        try:
            return self._exec()
        finally:
            # If the interruption was delivered on the way here it surfaces as _TimeLimit in
            # execute(); one fired but not yet delivered is cancelled before we leave.
            with self._lock:
                thread_id, self._thread_id = self._thread_id, None
                if self._fired and thread_id is not None:
                    _raise_in_thread(thread_id, None)

    def _exec(self) -> str:
        """Execute all statements; the repr of a final expression, as a REPL shows it."""
        tree = ast.parse(self.code, self.filename)
        last = tree.body[-1] if tree.body else None
        if not isinstance(last, ast.Expr):
            exec(compile(tree, self.filename, "exec"), self.namespace)
            return ""
        tree.body.pop()
        exec(compile(tree, self.filename, "exec"), self.namespace)
        value = eval(compile(ast.Expression(last.value), self.filename, "eval"), self.namespace)
        return "" if value is None else repr(value)

    def _traceback(self, exc: BaseException) -> str:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != self.filename:
            tb = tb.tb_next  # drop this module's frames: the agent did not write them
        lines = "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
        if len(lines) > TRACEBACK_LINES:
            cut = f"[... {len(lines) - TRACEBACK_LINES} traceback lines cut ...]"
            lines = [cut, *lines[-TRACEBACK_LINES:]]
        return "\n".join(lines)


async def _interrupt_after(run: _Run, seconds: float) -> None:
    await anyio.sleep(seconds)
    run.interrupt()


@tool(effect=Effect.SIDE_EFFECT)
async def python(ctx: ToolContext, code: str, timeout_s: float = 30) -> ToolOutput:
    """Run Python code in a persistent namespace, like a notebook cell.

    Variables, imports and functions stay defined for later calls. Returns what the code printed
    and the value of a final expression; an exception comes back as its traceback. The variable
    ``workspace`` is the agent's workspace folder (a ``pathlib.Path``); the working directory is
    not changed, so open files as ``workspace / "name"``.

    Args:
        code: Python statements to run.
        timeout_s: Seconds after which the code is stopped.
    """
    if timeout_s <= 0:
        return ToolOutput(f"timeout_s must be more than 0, got {timeout_s:g}", is_error=True)
    ctx.namespace["workspace"] = ctx.workspace
    run = _Run(code, ctx.namespace, timeout_s)
    with anyio.move_on_after(timeout_s + GRACE_S):
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_interrupt_after, run, timeout_s)
                output = await anyio.to_thread.run_sync(run.execute, abandon_on_cancel=True)
                tg.cancel_scope.cancel()
            return output
        finally:
            run.interrupt()  # when the caller cancels, the code stops too; else a no-op
    return ToolOutput(
        f"[stopped waiting: the code ran {GRACE_S:g}s past its time limit of {timeout_s:g}s"
        " without stopping (blocked in a C call, or it caught the interruption); it may still"
        " be running in the background]",
        is_error=True,
    )
