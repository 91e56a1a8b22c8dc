"""Limits checked at every step boundary (the hook point the governance layer builds on)."""

from __future__ import annotations

from dataclasses import dataclass

from ._state import SessionState


@dataclass(frozen=True, slots=True)
class LimitHit:
    kind: str
    limit: float
    used: float


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits: when one is reached the session stops with a ``budget_exceeded`` event."""

    max_steps: int = 500

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")

    def check(self, state: SessionState) -> LimitHit | None:
        """The first limit the next model turn would break, or ``None``."""
        if state.steps >= self.max_steps:
            return LimitHit("steps", self.max_steps, state.steps)
        return None
