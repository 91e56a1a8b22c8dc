"""The built-in tools by name, the plan and sleep tools, and ``resolve_tools``.

An agent names built-ins as strings (``tools=["shell", read_metric]``); ``resolve_tools`` turns
such a list into the name -> ``Tool`` map the engine runs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .._errors import UnknownTool
from ._context import Effect, PlanItem, PlanStatus, ToolContext
from ._files import edit_file, list_files, read_file, write_file
from ._python import python
from ._shell import shell
from ._tool import Tool, ToolOutput, tool


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One step of the plan.

    Attributes:
        step: What this step does, in a short sentence.
        status: Where the step stands.
    """

    step: str
    status: PlanStatus = "pending"


@tool(effect=Effect.IDEMPOTENT)
async def update_plan(ctx: ToolContext, steps: list[PlanStep]) -> str:
    """Replace the plan shown to the people watching with these steps.

    Keep one step active while you work on it and mark steps done as you finish them.

    Args:
        steps: The whole plan, in order.
    """
    await ctx.set_plan([PlanItem(s.step, s.status) for s in steps])
    counts = Counter(s.status for s in steps)
    parts = [f"{counts[k]} {k}" for k in ("done", "active", "pending") if counts[k]]
    return f"plan updated: {len(steps)} steps" + (f" ({', '.join(parts)})" if parts else "")


@tool(effect=Effect.IDEMPOTENT)
async def sleep(ctx: ToolContext, seconds: float, reason: str = "") -> ToolOutput:
    """Wait before going on, e.g. until it is time to check again; the wait survives restarts.

    Args:
        seconds: How long to wait, in seconds.
        reason: What you are waiting for, shown to the people watching.
    """
    if not 0 <= seconds < math.inf:
        return ToolOutput(f"seconds must be a finite number >= 0, got {seconds:g}", is_error=True)
    await ctx.sleep_until(ctx.clock.now() + seconds)
    return ToolOutput(f"slept {seconds:g}s" + (f" ({reason})" if reason else ""))


@tool(effect=Effect.IDEMPOTENT)
async def wait_until(ctx: ToolContext, time: str, reason: str = "") -> ToolOutput:
    """Wait until a moment, e.g. the start of a maintenance window; the wait survives restarts.

    Args:
        time: When to go on: ISO 8601 ("2026-11-27T09:00:00Z"; UTC when no zone is given).
        reason: What you are waiting for, shown to the people watching.
    """
    try:
        when = datetime.fromisoformat(time.strip().replace("Z", "+00:00"))
    except ValueError:
        return ToolOutput(
            f"time must be ISO 8601 like 2026-11-27T09:00:00Z, got {time!r}", is_error=True
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    await ctx.sleep_until(when.timestamp())
    return ToolOutput(f"waited until {when.isoformat()}" + (f" ({reason})" if reason else ""))


BUILTIN_TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        python,
        shell,
        read_file,
        write_file,
        edit_file,
        list_files,
        update_plan,
        sleep,
        wait_until,
    )
}


def resolve_tools(items: Sequence[Tool | str | Callable[..., object]]) -> dict[str, Tool]:
    """The tools an agent may call, by name: built-ins named as strings, functions wrapped.

    Example:
        >>> sorted(resolve_tools(["shell", "read_file"]))
        ['read_file', 'shell']
    """
    resolved: dict[str, Tool] = {}
    for item in items:
        found = _resolve_one(item)
        if found.name in resolved:
            raise ValueError(f"two tools are named {found.name!r}; give one another name")
        resolved[found.name] = found
    return resolved


def _resolve_one(item: Tool | str | Callable[..., object]) -> Tool:
    if isinstance(item, Tool):
        return item
    if isinstance(item, str):
        if item not in BUILTIN_TOOLS:
            names = ", ".join(BUILTIN_TOOLS)
            raise UnknownTool(f"unknown tool {item!r}; built-ins are: {names}")
        return BUILTIN_TOOLS[item]
    if callable(item):
        return tool(item)
    raise TypeError(f"a tool must be a function, a Tool or a built-in's name, not {item!r}")
