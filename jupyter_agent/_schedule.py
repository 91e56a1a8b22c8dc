"""Schedules: a session that wakes every N seconds, for monitoring agents.

After each final answer the session sleeps on a durable timer until its next tick, then takes
a scheduled check message and runs again. Ticks are counted from the session's start, so a
restart neither loses nor repeats one; a tick that fell due while no process ran the session
fires once on resume (the missed ones are skipped, and the message says how many) unless the
schedule asks to ``catch_up``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Schedule:
    """Wake every ``every_s`` seconds after the first run, ``times`` times at most, and not
    past ``until`` (Unix time). ``catch_up`` fires every missed tick instead of the last one.

    Example:
        >>> Schedule(every_s=3600, times=24)   # hourly checks for a day
        Schedule(every_s=3600, times=24, until=None, catch_up=False)
    """

    every_s: float
    times: int | None = None
    until: float | None = None
    catch_up: bool = False

    def __post_init__(self) -> None:
        if not (self.every_s > 0 and math.isfinite(self.every_s)):
            raise ValueError(f"every_s must be a positive number of seconds, got {self.every_s}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1, got {self.times}")

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, data: dict[str, Any] | None) -> Schedule | None:
        return cls(**data) if data else None

    def wake_at(self, anchor: float, tick: int) -> float:
        return anchor + tick * self.every_s

    def has_tick(self, anchor: float, tick: int) -> bool:
        """Whether tick number ``tick`` (1, 2, ...) is part of the schedule."""
        if self.times is not None and tick > self.times:
            return False
        return self.until is None or self.wake_at(anchor, tick) <= self.until

    def tick_to_fire(self, anchor: float, next_tick: int, now: float) -> int:
        """The tick to fire at ``now``, waiting for ``next_tick``: the latest one due, unless
        catching up (then ``next_tick`` itself)."""
        if self.catch_up:
            return next_tick
        due = max(next_tick, math.floor((now - anchor) / self.every_s))
        while due > next_tick and not self.has_tick(anchor, due):
            due -= 1
        return due
