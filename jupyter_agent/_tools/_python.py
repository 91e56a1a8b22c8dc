"""The ``python`` built-in: run code in the agent's persistent namespace, like a notebook cell.

The code runs in a worker thread so the event loop stays free. Its prints are captured for that
thread only (``_capture``), and a trace function in the thread stops it when its time is up, so
``while True: pass`` cannot hold a worker forever. Code blocked inside C (``time.sleep(1e9)``)
cannot be stopped that way: after a short grace the call returns an error and the thread is left
to finish in the background.
"""

from __future__ import annotations

import ast
import itertools
import linecache
import sys
import time
import traceback
from types import FrameType
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ._capture import capture_thread_output
from ._context import Effect, ToolContext
from ._output import OUTPUT_LIMIT
from ._tool import ToolOutput, tool

if TYPE_CHECKING:
    from _typeshed import TraceFunction

GRACE_S = 2.0  # how long past its limit a run blocked in C code is waited for
TRACEBACK_LINES = 30  # the end of a traceback is what says what went wrong
_cell_numbers = itertools.count(1)


class _TimeLimit(BaseException):
    """Raised inside the running code; a BaseException so ``except Exception`` can't eat it."""


class _Run:
    """One execution of ``code`` in ``namespace``, stopped at ``deadline`` or by ``stop()``."""

    def __init__(self, code: str, namespace: dict[str, object], timeout_s: float) -> None:
        self.code, self.namespace, self.timeout_s = code, namespace, timeout_s
        self.filename = f"<agent-cell-{next(_cell_numbers)}>"
        self.deadline = time.monotonic() + timeout_s
        # Tracebacks show the failing source line, as they would in a notebook.
        linecache.cache[self.filename] = (len(code), None, code.splitlines(True), self.filename)

    def stop(self) -> None:
        self.deadline = float("-inf")  # seen at the code's next line or call

    def execute(self) -> ToolOutput:
        """Run the code (in a worker thread) and report what it printed and returned."""
        with capture_thread_output(OUTPUT_LIMIT) as out:
            failed = True
            try:
                shown = self._traced()
                failed = False
            except _TimeLimit:
                shown = f"[stopped: time limit of {self.timeout_s:g}s reached]"
            except BaseException as exc:  # the agent's code may raise anything, SystemExit too
                shown = self._traceback(exc)
            if shown:
                text = out.text()
                out.write(("\n" if text and not text.endswith("\n") else "") + shown)
        return ToolOutput(out.text() or "(no output)", is_error=failed)

    def _traced(self) -> str:
        previous = sys.gettrace()
        sys.settrace(self._trace)
        try:
            return self._exec()
        finally:
            sys.settrace(previous)

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

    def _trace(self, frame: FrameType, event: str, arg: object) -> TraceFunction:
        if event in ("call", "line") and time.monotonic() > self.deadline:
            raise _TimeLimit
        return self._trace

    def _traceback(self, exc: BaseException) -> str:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != self.filename:
            tb = tb.tb_next  # drop this module's frames: the agent did not write them
        lines = "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
        if len(lines) > TRACEBACK_LINES:
            cut = f"[... {len(lines) - TRACEBACK_LINES} traceback lines cut ...]"
            lines = [cut, *lines[-TRACEBACK_LINES:]]
        return "\n".join(lines)


@tool(effect=Effect.SIDE_EFFECT)
async def python(ctx: ToolContext, code: str, timeout_s: float = 30) -> ToolOutput:
    """Run Python code in a persistent namespace, like a notebook cell.

    Variables, imports and functions stay defined for later calls. Returns what the code printed
    and the value of a final expression; an exception comes back as its traceback.

    Args:
        code: Python statements to run.
        timeout_s: Seconds after which the code is stopped.
    """
    if timeout_s <= 0:
        return ToolOutput(f"timeout_s must be more than 0, got {timeout_s:g}", is_error=True)
    run = _Run(code, ctx.namespace, timeout_s)
    with anyio.move_on_after(timeout_s + GRACE_S):
        try:
            return await anyio.to_thread.run_sync(run.execute, abandon_on_cancel=True)
        finally:
            run.stop()  # when the caller cancels, Python code still stops at its next line
    return ToolOutput(
        f"[stopped waiting: the code ran past its time limit of {timeout_s:g}s inside a call that"
        " cannot be interrupted (a blocking C call?); it may still finish in the background]",
        is_error=True,
    )
