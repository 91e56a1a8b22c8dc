"""The ``shell`` built-in: run a command in the workspace, with a time limit and bounded output.

The command gets its own process group (session), so a timeout kills everything it started, not
just the shell; so does this process dying first (``_reaper``). Output is read as it comes and
kept to its head and tail, so a command that prints gigabytes costs no more memory than one that
prints a page.
"""

from __future__ import annotations

import codecs
import os
import signal
import subprocess

import anyio
from anyio.abc import ByteReceiveStream, Process

from ._context import Effect, ToolContext
from ._output import OUTPUT_LIMIT, CappedText
from ._reaper import REAPER
from ._tool import ToolOutput, tool

DRAIN_GRACE_S = 0.5  # after the shell exits, how long to wait for output a background job holds


@tool(effect=Effect.SIDE_EFFECT)
async def shell(ctx: ToolContext, command: str, timeout_s: float = 60) -> ToolOutput:
    """Run a shell command in the workspace; returns its exit code and combined output.

    Args:
        command: The command line, run by the system shell (sh -c) in the workspace.
        timeout_s: Seconds after which the command and everything it started are killed.
    """
    if not command.strip():
        return ToolOutput("command is empty", is_error=True)
    output = CappedText(OUTPUT_LIMIT)
    REAPER.start()
    process = await anyio.open_process(
        command,
        cwd=ctx.workspace,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    REAPER.watch(process.pid)  # killed with its group should this process die first
    try:
        timed_out = await _collect(process, output, timeout_s)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                _kill_group(process)
            await process.aclose()
        REAPER.done(process.pid)
    status = f"exit code {process.returncode}"
    if timed_out:
        status += f" (timed out after {timeout_s:g}s; the command was killed)"
    failed = timed_out or process.returncode != 0
    return ToolOutput(f"{status}\n{output.text()}", is_error=failed)


async def _collect(process: Process, output: CappedText, timeout_s: float) -> bool:
    """Read the output until the shell exits (plus a short drain); True when time ran out."""
    assert process.stdout is not None
    drained = anyio.Event()
    exited = False
    with anyio.move_on_after(timeout_s) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stdout, output, drained)
            await process.wait()
            exited = True
            with anyio.move_on_after(DRAIN_GRACE_S):
                await drained.wait()
            tg.cancel_scope.cancel()  # a background job may keep the pipe open for ever
    return scope.cancelled_caught and not exited


async def _drain(stream: ByteReceiveStream, output: CappedText, drained: anyio.Event) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in stream:
        output.write(decoder.decode(chunk))
    output.write(decoder.decode(b"", final=True))
    drained.set()


def _kill_group(process: Process) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:  # Windows: no process groups to kill
            process.kill()
    except ProcessLookupError:
        pass
