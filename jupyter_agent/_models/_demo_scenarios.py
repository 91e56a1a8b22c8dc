"""The demo model's scenarios: short agent runs that react to what their tools return.

A scenario is a pure function of the conversation (a ``Transcript``) to the next ``Step``: it keeps
no state of its own, so a session resumed in a new process, with a new model object, goes on
exactly where it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ._base import Message

ToolUse = tuple[str, dict[str, object]]


@dataclass(frozen=True, slots=True)
class Step:
    """What the model says next; no tool calls means a final answer."""

    text: str
    calls: tuple[ToolUse, ...] = ()


def say(text: str, *calls: ToolUse) -> Step:
    return Step(text, calls)


def use(name: str, /, **arguments: object) -> ToolUse:
    return (name, arguments)


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call the model made earlier, with the result the engine sent back."""

    name: str
    args: Mapping[str, object]
    result: str = ""
    is_error: bool = False

    @property
    def failed(self) -> bool:
        # A shell command that ran and exited non-zero is an answer, not a failure of the tool.
        return self.is_error and not (self.name == "shell" and exit_code(self.result) is not None)


class Transcript:
    """The demo model's view of a request: its own past turns and what they got back."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = tuple(messages)
        turns = [i for i, m in enumerate(self.messages) if m.role == "assistant"]
        self.last_assistant = self.messages[turns[-1]] if turns else None
        self.turn = max(len(turns), _turn_after(self.last_assistant))
        results = {m.tool_call_id: m for m in self.messages if m.role == "tool" and m.tool_call_id}
        self.calls: list[Call] = []
        self.last_calls: list[Call] = []
        for i in turns:
            made = [
                _call(c.name, c.arguments, results.get(c.id)) for c in self.messages[i].tool_calls
            ]
            self.calls += made
            self.last_calls = made
        goal = next((i for i, m in enumerate(self.messages) if m.role == "user"), -1)
        since = turns[-1] if turns else -1
        self.steering = tuple(
            m.content.strip()
            for i, m in enumerate(self.messages)
            if m.role == "user" and i > since and i != goal and m.content.strip()
        )

    @property
    def finished(self) -> bool:
        """True once the model has given a final answer (a turn without tool calls)."""
        return self.last_assistant is not None and not self.last_assistant.tool_calls

    def last(self, name: str) -> Call | None:
        """The most recent call of tool ``name``, in any turn."""
        return next((c for c in reversed(self.calls) if c.name == name), None)

    def just_called(self, name: str) -> bool:
        return any(c.name == name for c in self.last_calls)


def _turn_after(last: Message | None) -> int:
    # Our own call ids carry the turn ("call_7_0"): counting on from them keeps a long run on
    # track even if the engine compacted earlier assistant messages out of the context.
    ids = [re.fullmatch(r"call_(\d+)_\d+", c.id) for c in last.tool_calls] if last else []
    return max((int(m.group(1)) + 1 for m in ids if m), default=0)


def _call(name: str, arguments: str, result: Message | None) -> Call:
    try:
        args = json.loads(arguments)
    except ValueError:
        args = {}
    if not isinstance(args, dict):
        args = {}
    if result is None:
        return Call(name, args)
    return Call(name, args, result.content, result.is_error)


def exit_code(shell_result: str) -> int | None:
    """N from a shell result starting ``exit code N``; None when the command did not run."""
    found = re.match(r"\s*exit code (-?\d+)", shell_result)
    return int(found.group(1)) if found else None


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "(no output)")


def tail(text: str, lines: int = 3) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def plan(steps: Sequence[str], done: int) -> list[dict[str, str]]:
    """Plan items: the first ``done`` finished, the next one active, the rest pending."""
    status = [
        "done" if i < done else "active" if i == done else "pending" for i in range(len(steps))
    ]
    return [{"step": s, "status": st} for s, st in zip(steps, status, strict=True)]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named run: how it plays, the tools and files it needs, and what it does on an error."""

    name: str
    play: Callable[[Transcript, int], Step]
    tools: tuple[str, ...]
    files: Mapping[str, str] = field(default_factory=dict)
    uses_steps: bool = False
    stop_on_error: bool = True


# --- fix: find and fix a bug, proving it with the tests -----------------------------------------

_STATS_PY = '''\
"""Small statistics helpers."""


def mean(xs):
    """Arithmetic mean of a non-empty list of numbers."""
    return sum(xs) / (len(xs) - 1)


def median(xs):
    """Middle value of a non-empty list of numbers."""
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
'''

_TEST_STATS_PY = """\
from stats import mean, median

got = mean([1, 2, 3, 4])
assert got == 2.5, f"mean([1, 2, 3, 4]) returned {got}, expected 2.5"
assert mean([5]) == 5
assert median([3, 1, 2]) == 2
assert median([4, 1, 3, 2]) == 2.5
print("all tests passed")
"""

BUG_LINE = "return sum(xs) / (len(xs) - 1)"
FIXED_LINE = "return sum(xs) / len(xs)"
TEST_COMMAND = "python test_stats.py"
_FIX_PLAN = (
    "Look around the workspace",
    "Find the bug in stats.py",
    "Fix the bug",
    "Run the tests to confirm the fix",
)


def play_fix(t: Transcript, steps: int) -> Step:
    shell = t.last("shell")
    if t.turn == 0:
        return say(
            "I'll make a plan, then look around.", use("update_plan", steps=plan(_FIX_PLAN, 0))
        )
    if t.turn == 1:
        return say("First, what is in the workspace?", use("list_files", path="."))
    if t.turn == 2:
        listing = t.last_calls[0].result if t.last_calls else ""
        if "stats.py" not in listing or "test_stats.py" not in listing:
            return say(
                "I can't find stats.py and test_stats.py in the workspace, so there is nothing for "
                "me to fix. DemoModel('fix').prepare_workspace(path) seeds them."
            )
        return say(
            "A small module and its tests. Reading stats.py.",
            use("update_plan", steps=plan(_FIX_PLAN, 1)),
            use("read_file", path="stats.py"),
        )
    if t.turn == 3:
        if _bug_seen(t):
            text = (
                "mean() divides by len(xs) - 1, but a mean divides by len(xs). Running the tests."
            )
        else:
            text = "stats.py looks reasonable at first glance. Running the tests."
        return say(text, use("shell", command=TEST_COMMAND))
    if t.turn == 4 and shell is not None:
        code = exit_code(shell.result)
        if code is None:
            return say(f"The tests did not run: {first_line(shell.result)}. Stopping here.")
        if code == 0:
            return say("The tests already pass, so there is nothing to fix.")
        if not _bug_seen(t):
            return say(
                f"The tests fail:\n{tail(shell.result)}\nbut stats.py does not contain the line I "
                "expected, so I'll leave this one to you rather than guess."
            )
        return say(
            f"The test fails as expected:\n{tail(shell.result, 1)}\nFixing the divisor in mean().",
            use("update_plan", steps=plan(_FIX_PLAN, 2)),
            use("edit_file", path="stats.py", old=BUG_LINE, new=FIXED_LINE),
        )
    if t.turn == 5:
        return say(
            "Edited stats.py. Running the tests again.",
            use("update_plan", steps=plan(_FIX_PLAN, 3)),
            use("shell", command=TEST_COMMAND),
        )
    if t.turn == 6 and shell is not None:
        if exit_code(shell.result) != 0:
            return say(
                f"The tests still fail after my edit:\n{tail(shell.result)}\nStopping here so you "
                "can take a look; restoring the session to before the edit puts stats.py back."
            )
        return say("All tests pass now.", use("update_plan", steps=plan(_FIX_PLAN, 4)))
    return say(
        "Fixed the bug in stats.py: mean() divided by len(xs) - 1 instead of len(xs), so every "
        "mean came out too large (mean([1, 2, 3, 4]) gave 3.33 instead of 2.5). "
        f"`{TEST_COMMAND}` failed before the one-line change and now prints "
        '"all tests passed".'
    )


def _bug_seen(t: Transcript) -> bool:
    read = t.last("read_file")
    return read is not None and BUG_LINE in read.result


# --- explore: look around and measure something -------------------------------------------------

_README_MD = """\
# Rooftop weather station

Daily readings from the station on the roof of building B.
`readings.csv` has one row per day: date, temperature (C) and rain (mm).
`station.py` is the script that uploads them every night.
"""

_READINGS_CSV = "date,temp_c,rain_mm\n" + "".join(
    f"2024-05-{d:02d},{t},{r}\n"
    for d, t, r in zip(
        range(1, 15),
        (14.2, 15.1, 13.8, 16.0, 17.3, 18.1, 16.9, 15.5, 14.8, 17.7, 19.2, 20.4, 19.9, 18.6),
        (0.0, 2.4, 5.1, 0.0, 0.0, 0.3, 0.0, 7.8, 1.2, 0.0, 0.0, 0.0, 0.4, 3.3),
        strict=True,
    )
)

_STATION_PY = '''\
"""Upload the day's readings (stub)."""

import csv


def load(path="readings.csv"):
    with open(path) as f:
        return list(csv.DictReader(f))
'''

_EXPLORE_PREFERRED = ("README.md", "readings.csv", "station.py")


def play_explore(t: Transcript, steps: int) -> Step:
    if t.turn == 0:
        return say("Let me see what is here.", use("list_files", path="."))
    if t.turn == 1:
        names = _pick_files(t.last_calls[0].result if t.last_calls else "")
        if not names:
            return say("The workspace is empty, so there is nothing to explore yet.")
        return say(f"Reading {' and '.join(names)}.", *(use("read_file", path=n) for n in names))
    names = [str(c.args.get("path", "")) for c in t.calls if c.name == "read_file"]
    if t.turn == 2:
        return say("Now some numbers.", use("python", code=_explore_code(names)))
    numbers = t.last("python")
    found = numbers.result.strip() if numbers else "(no numbers)"
    return say(f"I looked at {' and '.join(names)}. What the numbers say:\n{found}")


def _pick_files(listing: str) -> list[str]:
    known = [n for n in _EXPLORE_PREFERRED if n in listing]
    if known:
        return known[:2]
    names = re.findall(r"[\w./-]*\w\.[A-Za-z]\w*", listing)
    return list(dict.fromkeys(names))[:2]


def _explore_code(names: Sequence[str]) -> str:
    code = f"for name in {list(names)!r}:\n"
    code += "    text = (workspace / name).read_text()\n"
    code += '    print(f"{name}: {len(text.splitlines())} lines, {len(text.split())} words")\n'
    if "readings.csv" in names:
        code += (
            "\nimport csv\n\n"
            "lines = (workspace / 'readings.csv').read_text().splitlines()\n"
            "rows = list(csv.DictReader(lines))\n"
            "temps = [float(r['temp_c']) for r in rows]\n"
            "rain = sum(float(r['rain_mm']) for r in rows)\n"
            'print(f"{len(rows)} days, mean {sum(temps) / len(temps):.1f} C, '
            'warmest {max(temps)} C, rain {rain:.1f} mm")\n'
        )
    return code


FIX = Scenario(
    "fix",
    play_fix,
    tools=("update_plan", "list_files", "read_file", "shell", "edit_file"),
    files={"stats.py": _STATS_PY, "test_stats.py": _TEST_STATS_PY},
)
EXPLORE = Scenario(
    "explore",
    play_explore,
    tools=("list_files", "read_file", "python"),
    files={"README.md": _README_MD, "readings.csv": _READINGS_CSV, "station.py": _STATION_PY},
)
