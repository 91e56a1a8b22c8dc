"""``DemoModel``: an offline model that plays a short, believable agent run.

It makes real tool calls and reacts to their results, so the quickstart shows a true timeline
with no key, no network and no cost. Like every model here it is stateless: the next turn is a
function of ``request.messages`` alone, so a session resumed in a new process goes on identically.
The fix and explore scenarios live in ``_demo_scenarios``; watch and loop, and the model, here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio

from .._errors import ConfigError
from ._base import ModelRequest, ModelResponse, ToolCallRequest, Usage
from ._demo_scenarios import EXPLORE, FIX, Scenario, Step, Transcript, first_line, plan, say, use

DEFAULT_STEPS = 20
THRESHOLD_MS = 300.0
_MAX_PACE = 60.0  # seconds a turn may be slowed to, for watching; more is surely a typo
INCIDENT = "incidents/INC-1.md"

# --- watch: a monitoring loop on a durable timer ------------------------------------------------

_WATCH_PLAN = ("Check p95 latency every 60 s", "Open an incident if p95 > 300 ms", "Summarise")
_INCIDENT_OPENED = [
    {"step": _WATCH_PLAN[0], "status": "active"},
    {"step": _WATCH_PLAN[1], "status": "done"},
    {"step": _WATCH_PLAN[2], "status": "pending"},
]


def play_watch(t: Transcript, steps: int) -> Step:
    checks = [c for c in t.calls if c.name == "python"]
    readings = [_reading(c.result) for c in checks]
    opened = any(c.name == "write_file" and c.args.get("path") == INCIDENT for c in t.calls)
    if t.turn == 0:
        plan_now = use("update_plan", steps=plan(_WATCH_PLAN, 0))
        return say(f"I'll check p95 latency {steps} times, once a minute.", plan_now)
    if t.just_called("sleep") or not checks:
        return say(
            f"Check {len(checks) + 1} of {steps}.",
            use("python", code=_check_code(len(checks), steps)),
        )
    value = readings[-1]
    if t.just_called("python") and value is not None and value > THRESHOLD_MS and not opened:
        return say(
            f"p95 is {value:.0f} ms, over {THRESHOLD_MS:.0f} ms: opening an incident.",
            use("write_file", path=INCIDENT, content=_incident(len(checks), steps, value)),
            use("update_plan", steps=_INCIDENT_OPENED),
        )
    if t.just_called("python") or t.just_called("write_file"):
        news = _news(value, opened, t.just_called("write_file"), checks[-1].result)
        if len(checks) < steps:
            return say(
                news, use("sleep", seconds=60, reason=f"next check ({len(checks) + 1}/{steps})")
            )
        return say(
            f"{news} That was the last check.", use("update_plan", steps=plan(_WATCH_PLAN, 3))
        )
    return say(_watch_summary(t, readings))


def _check_code(r: int, n: int) -> str:
    return (
        "import math\n\n"
        f"r, n = {r}, {n}\n"
        "f = r / max(n - 1, 1)\n"
        "p95_ms = 180 + 170 * math.exp(-(((f - 0.6) / 0.2) ** 2)) + 6 * math.sin(2.1 * r)\n"
        'print(f"check {r + 1}/{n}: p95_ms={p95_ms:.1f}")\n'
    )


def _reading(result: str) -> float | None:
    found = re.search(r"p95_ms=(\d+(?:\.\d+)?)", result)
    return float(found.group(1)) if found else None


def _news(value: float | None, opened: bool, just_opened: bool, result: str) -> str:
    if just_opened:
        return f"Wrote {INCIDENT}."
    if value is None:
        return f"The check failed ({first_line(result)}); I'll try again next round."
    if value > THRESHOLD_MS:
        return f"p95 is {value:.0f} ms, still over the threshold; INC-1 stays open."
    if opened:
        return f"p95 is {value:.0f} ms, back under the threshold."
    return f"p95 is {value:.0f} ms, fine."


def _incident(check: int, steps: int, value: float) -> str:
    return (
        f"# INC-1: p95 latency above {THRESHOLD_MS:.0f} ms\n\n"
        f"- detected at check {check} of {steps}\n"
        f"- p95: {value:.1f} ms (threshold {THRESHOLD_MS:.0f} ms)\n"
        "- status: open\n"
        "- next: keep checking every 60 s; page the on-call if it stays high\n"
    )


def _watch_summary(t: Transcript, readings: list[float | None]) -> str:
    seen = [(v, i + 1) for i, v in enumerate(readings) if v is not None]
    text = f"Watched p95 latency for {len(readings)} checks, one a minute."
    if seen:
        high, at = max(seen)
        text += f" Highest {high:.0f} ms at check {at}; last {seen[-1][0]:.0f} ms."
    if len(seen) < len(readings):
        text += f" {len(readings) - len(seen)} checks failed."
    checks_before = 0
    for c in t.calls:
        checks_before += c.name == "python"
        if c.name == "write_file" and c.args.get("path") == INCIDENT:
            crossed = f"when p95 crossed {THRESHOLD_MS:.0f} ms"
            return f"{text} Opened {INCIDENT} at check {checks_before}, {crossed}."
    return f"{text} It never crossed {THRESHOLD_MS:.0f} ms, so no incident was opened."


# --- loop: a fixed number of cheap tool turns, for long sessions and tests ----------------------


def play_loop(t: Transcript, steps: int) -> Step:
    n = t.turn
    if n >= steps:
        return say(f"Finished all {steps} steps.")
    cycle = (
        use("python", code=f"x = {n}\nprint(x * x)"),
        use("write_file", path=f"loop/step_{n}.txt", content=f"step {n}\n"),
        use("read_file", path=f"loop/step_{n - 1}.txt"),
        use("list_files", path="loop"),
    )
    return say(f"Step {n + 1} of {steps}.", cycle[n % 4])


WATCH = Scenario(
    "watch",
    play_watch,
    tools=("update_plan", "python", "sleep", "write_file"),
    uses_steps=True,
    stop_on_error=False,
)
LOOP = Scenario(
    "loop",
    play_loop,
    tools=("python", "write_file", "read_file", "list_files"),
    uses_steps=True,
    stop_on_error=False,
)
SCENARIOS = {s.name: s for s in (FIX, EXPLORE, WATCH, LOOP)}


class DemoModel:
    """An offline model playing a scripted but reactive agent run; free, no key, no network.

    Scenarios: ``fix`` (the default: find and fix a bug, proven by the tests), ``explore``,
    ``watch`` (a monitoring loop on a durable timer, ``steps`` checks) and ``loop`` (exactly
    ``steps`` tool turns). A person's message sent mid-run is acknowledged ("Noted: ...") and
    the scenario carries on. ``pace`` slows each turn to that many seconds of real time, so a
    person can watch a session unfold.

    Example:
        >>> model = DemoModel.from_spec("loop?steps=200")
        >>> model.name
        'demo:loop?steps=200'
    """

    def __init__(
        self, scenario: str = "fix", *, steps: int = DEFAULT_STEPS, pace: float = 0.0
    ) -> None:
        if scenario not in SCENARIOS:
            raise ConfigError(f"unknown demo scenario {scenario!r}; choose one of: {_choices()}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, not {steps!r}")
        if (
            isinstance(pace, bool)
            or not isinstance(pace, int | float)
            or not 0 <= pace <= _MAX_PACE
        ):
            raise ValueError(f"pace must be between 0 and {_MAX_PACE:g} seconds, not {pace!r}")
        self._scenario: Scenario = SCENARIOS[scenario]
        self._steps = steps
        self._pace = float(pace)

    @classmethod
    def from_spec(cls, spec: str) -> DemoModel:
        """Parse ``"<scenario>[?steps=N][&pace=S]"``; a leading ``demo:`` is allowed.

        ``pace`` makes each model turn take ``S`` seconds of real time, so a person (or a browser
        test) can watch a session unfold: ``demo:loop?steps=400&pace=0.25``.
        """
        text = spec.strip()
        text = "" if text == "demo" else text.removeprefix("demo:")
        scenario, _, query = text.partition("?")
        steps, pace = DEFAULT_STEPS, 0.0
        for option in filter(None, query.split("&")):
            key, _, value = option.partition("=")
            if key == "steps":
                steps = _parse_steps(value, text)
            elif key == "pace":
                pace = _parse_pace(value, text)
            else:
                raise ConfigError(
                    f"unknown option {key!r} in model 'demo:{text}' (options: steps, pace)"
                )
        if (scenario or "fix") not in SCENARIOS:
            raise ConfigError(f"unknown demo scenario {scenario!r}; choose one of: {_choices()}")
        return cls(scenario or "fix", steps=steps, pace=pace)

    @property
    def name(self) -> str:
        """``demo:<scenario>``, plus the options that matter, so ``from_spec`` round-trips."""
        options = []
        if self._scenario.uses_steps and self._steps != DEFAULT_STEPS:
            options.append(f"steps={self._steps}")
        if self._pace:
            options.append(f"pace={self._pace!r}".removesuffix(".0"))
        query = "&".join(options)
        return f"demo:{self._scenario.name}" + (f"?{query}" if query else "")

    @property
    def scenario(self) -> str:
        return self._scenario.name

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def pace(self) -> float:
        """Seconds of real time each turn takes (0: as fast as possible)."""
        return self._pace

    def prepare_workspace(self, workspace: Path | str) -> None:
        """Seed the files this scenario works on; an existing file is never overwritten."""
        for relative, content in self._scenario.files.items():
            path = Path(workspace, relative)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if self._pace:
            await anyio.sleep(self._pace)
        else:
            await anyio.lowlevel.checkpoint()
        t = Transcript(request.messages)
        step = self._next_step(t, {spec.name for spec in request.tools})
        notes = [f"Noted: {_brief(message)}" for message in t.steering]
        text = "\n".join([*notes, step.text]).strip()
        calls = tuple(
            ToolCallRequest(f"call_{t.turn}_{k}", name, json.dumps(arguments))
            for k, (name, arguments) in enumerate(step.calls)
        )
        out = len(text) + sum(len(c.name) + len(c.arguments) for c in calls)
        usage = Usage(input_tokens=_tokens(request), output_tokens=-(-out // 4), cost_usd=0.0)
        stop = "tool_use" if calls else "end_turn"
        return ModelResponse(text, calls, usage, stop_reason=stop, model=self.name)

    def _next_step(self, t: Transcript, tools: set[str]) -> Step:
        if t.finished:
            return say("This run is finished; fork the session or start a new one to go further.")
        missing = [name for name in self._scenario.tools if tools and name not in tools]
        if missing:
            return say(
                f"The demo scenario {self._scenario.name!r} needs the tools {', '.join(missing)}, "
                "which this agent does not have. Add them to the agent's tools and start again."
            )
        failed = next((c for c in t.last_calls if c.failed), None)
        if failed is not None and self._scenario.stop_on_error:
            return say(
                f"The {failed.name} call failed: {first_line(failed.result)}. "
                "I'll stop here so you can take a look."
            )
        return self._scenario.play(t, self._steps)


def _parse_steps(value: str, text: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"steps must be a positive integer in model 'demo:{text}'")
    return int(value)


def _parse_pace(value: str, text: str) -> float:
    try:
        pace = float(value)
    except ValueError:
        pace = -1.0
    if not 0 <= pace <= _MAX_PACE:  # also refuses nan and inf
        raise ConfigError(
            f"pace must be between 0 and {_MAX_PACE:g} seconds in model 'demo:{text}'"
        )
    return pace


def _choices() -> str:
    return ", ".join(f"demo:{name}" for name in sorted(SCENARIOS))


def _brief(message: str, limit: int = 200) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tokens(request: ModelRequest) -> int:
    chars = sum(
        len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls)
        for m in request.messages
    )
    return -(-chars // 4)
