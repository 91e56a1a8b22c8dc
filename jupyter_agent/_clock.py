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


class ScaledClock:
    """A clock running ``speed`` times faster than real time, from ``start``.

    Sleeps really wait (scaled down), so other processes and threads see time pass in order:
    with ``speed=36_000`` an hour goes by in 0.1 s. A new process continuing a session passes
    the time it left off at as ``start``.

    Example:
        >>> clock = ScaledClock(speed=3600, start=0.0)   # an hour a second
    """

    def __init__(self, *, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._start = time.time() if start is None else start
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._t0) * self.speed

    async def sleep_until(self, t: float) -> None:
        await anyio.sleep(max(0.0, (t - self.now()) / self.speed))
