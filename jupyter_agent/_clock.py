"""Time as a seam: the engine asks a ``Clock``; tests plug in a ``FakeClock``."""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall time in seconds since the epoch, and a way to wait until a moment."""

    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        await anyio.sleep(max(0.0, t - time.time()))


class FakeClock:
    """A clock that jumps: ``sleep_until`` advances time at once, so days pass in milliseconds.

    Example:
        >>> clock = FakeClock(start=1_000.0)
        >>> clock.advance(60); clock.now()
        1060.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep_until(self, t: float) -> None:
        self._now = max(self._now, t)
        await anyio.lowlevel.checkpoint()
