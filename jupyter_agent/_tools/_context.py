"""What a running tool may see and do besides its own arguments.

A tool asks for it by declaring a parameter annotated ``ToolContext``; that parameter is left
out of the JSON schema the model sees, and the engine fills it in.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._clock import Clock, SystemClock

PlanStatus = Literal["pending", "active", "done"]


class Effect(enum.StrEnum):
    """What running a tool does to the world; decides what happens to an in-doubt call.

    A call whose intent is recorded but whose result is not (the process died while it ran) is
    re-run on resume when the tool is ``READ_ONLY`` or ``IDEMPOTENT``, and waits for a person
    when it has a ``SIDE_EFFECT``.
    """

    READ_ONLY = "read_only"
    IDEMPOTENT = "idempotent"
    SIDE_EFFECT = "side_effect"


@dataclass(frozen=True, slots=True)
class PlanItem:
    step: str
    status: PlanStatus = "pending"


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file a tool wrote: its bytes before (``None``: it did not exist) and after.

    The engine keeps both as blobs beside the call's result, so a restore can put files back.
    """

    path: str  # relative to the workspace, with forward slashes
    before: bytes | None
    after: bytes | None


async def _no_plan(items: list[PlanItem]) -> None:
    raise RuntimeError("this tool context has no plan")


async def _plain_sleep(t: float) -> None:
    await SystemClock().sleep_until(t)


@dataclass(slots=True)
class ToolContext:
    """Handed to a tool that declares a ``ToolContext`` parameter.

    ``set_plan`` records a ``plan_updated`` event; ``sleep_until`` records a durable timer and
    waits on the session's clock (a timer set before a crash is honoured on resume; a call may
    wait any number of times, and a call run again meets its timers in the same order).
    """

    session_id: str = ""
    call_id: str = ""
    workspace: Path = field(default_factory=Path.cwd)
    namespace: dict[str, object] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)
    plan: tuple[PlanItem, ...] = ()
    set_plan: Callable[[list[PlanItem]], Awaitable[None]] = _no_plan
    sleep_until: Callable[[float], Awaitable[None]] = _plain_sleep
    file_changes: list[FileChange] = field(default_factory=list)

    def note_file_change(self, target: Path, before: bytes | None, after: bytes | None) -> None:
        """Record that a tool changed ``target`` (a path inside the workspace)."""
        relative = target.relative_to(self.workspace.resolve()).as_posix()
        self.file_changes.append(FileChange(relative, before, after))
