"""Limits checked at every step boundary (the hook point the governance layer builds on)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from ._state import SessionState

Rule = Literal["allow", "ask", "deny"]
RULES: tuple[Rule, ...] = ("allow", "ask", "deny")


def check_policy(
    policy: Mapping[str, str] | None, tools: Collection[str] | None = None
) -> dict[str, str]:
    """``{"shell": "ask", "*": "allow"}``, checked: each tool (or ``*``, any other tool) is
    ``allow``ed to run, must ``ask`` a person first, or is ``deny``ed. Given the agent's
    ``tools``, a name that is none of them is refused (a typo would leave the tool allowed)."""
    checked: dict[str, str] = {}
    for name, rule in (policy or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a policy maps tool names to rules, not {name!r}")
        if rule not in RULES:
            raise ValueError(f"policy for {name!r} is {rule!r}; use one of: {', '.join(RULES)}")
        if tools is not None and name != "*" and name not in tools:
            raise ValueError(
                f"the policy names {name!r}, which is not one of this agent's tools "
                f"({', '.join(sorted(tools)) or 'none'}); use '*' for any other tool"
            )
        checked[name] = rule
    return checked


def rule_for(policy: Mapping[str, str], tool_name: str) -> str:
    """What the policy says about a call to ``tool_name`` (``allow`` when it is silent)."""
    return policy.get(tool_name, policy.get("*", "allow"))


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
