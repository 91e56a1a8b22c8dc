"""The benchmark workload in this project: a scripted model making one tool call per turn, an
instant tool returning ~300 bytes, every event durable in a file store.

Shared by the per-step child (``bench.project``), the resume probe and the widget benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from jupyter_agent import Agent, ToolContext, tool
from jupyter_agent._runtime import get_runtime
from jupyter_agent._store import SqliteStore
from jupyter_agent._store._sqlite import Synchronous
from jupyter_agent.testing import ScriptedModel, call, reply

from ._common import TOOL_OUTPUT


def make_model(steps: int) -> ScriptedModel:
    """``steps`` tool calls, then an answer. Stateless (the turn is the request's step), so a
    fresh process continues the same script."""

    def turn(request: Any) -> Any:
        return reply("done") if request.step > steps else call("instant", n=request.step)

    return ScriptedModel(turn)


def make_tool(marks: list[float], pause_at: int | None = None, effect: str = "read_only") -> Any:
    """The instant tool; it notes the time of each call in ``marks``. With ``pause_at``, the
    session pauses after that many calls (to leave it resumable). ``effect`` is the effect it
    declares: a side-effect tool's intent is durable before it runs (two commits a step)."""

    @tool(effect=effect)
    async def instant(n: int, ctx: ToolContext) -> str:
        """Returns at once."""
        marks.append(time.perf_counter())
        if pause_at is not None and n >= pause_at:
            get_runtime().inbox(ctx.session_id).pause_requested = "bench"
        return TOOL_OUTPUT

    return instant


def run_session(
    db: str,
    steps: int,
    *,
    synchronous: Synchronous = "NORMAL",
    pause_at: int | None = None,
    on_store: Callable[[SqliteStore], None] | None = None,
    effect: str = "read_only",
    store: SqliteStore | None = None,
) -> tuple[str, list[float]]:
    """Run ``steps`` tool-calling turns; return the session id and one time mark per step.

    With ``pause_at``, the session is left paused (and released) after that many steps. A
    ``store`` given (open on ``db``) is used instead of opening one.
    """
    marks: list[float] = []
    store = store or SqliteStore(db, synchronous=synchronous)
    if on_store is not None:
        on_store(store)
    agent = Agent(
        "bench",
        model=make_model(steps),
        tools=[make_tool(marks, pause_at, effect)],
        store=store,
        max_steps=steps + 10,
    )
    session = agent.start("benchmark")
    session.wait()
    session.release()  # a fresh process may resume it
    return session.id, marks
