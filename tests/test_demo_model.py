"""The offline demo model, driven directly with requests, its tools run for real on ``tmp_path``."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from jupyter_agent._errors import ConfigError
from jupyter_agent._models._base import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
    ToolSpec,
)
from jupyter_agent.testing import DemoModel

pytestmark = pytest.mark.anyio
GOAL = Message("user", "Make the tests pass")


class Bench:
    """Runs the demo's tool calls on a directory, answering as the built-in tools would."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, call: ToolCallRequest) -> Message:
        try:
            out, failed = getattr(self, call.name)(**json.loads(call.arguments)), False
        except Exception as exc:
            out, failed = f"{type(exc).__name__}: {exc}", True
        return Message("tool", out, tool_call_id=call.id, name=call.name, is_error=failed)

    def list_files(self, path: str = ".") -> str:
        found = sorted(p for p in (self.root / path).rglob("*") if p.is_file())
        return "\n".join(str(p.relative_to(self.root)) for p in found)

    def read_file(self, path: str, offset: int = 0, limit: int = 2000) -> str:
        return (self.root / path).read_text()

    def write_file(self, path: str, content: str) -> str:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_text(content)
        return f"wrote {len(content)} characters to {path}"

    def edit_file(self, path: str, old: str, new: str) -> str:
        text = (self.root / path).read_text()
        if text.count(old) != 1:
            raise ValueError(f"old text occurs {text.count(old)} times in {path}")
        (self.root / path).write_text(text.replace(old, new))
        return f"edited {path}"

    def shell(self, command: str, timeout_s: float = 60) -> str:
        argv = [sys.executable if a == "python" else a for a in shlex.split(command)]
        done = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=60)
        return f"exit code {done.returncode}\n{done.stdout}{done.stderr}"

    def python(self, code: str, timeout_s: float = 30) -> str:
        prelude = f"from pathlib import Path\nworkspace = Path({str(self.root)!r})\n"
        done = subprocess.run(
            [sys.executable, "-c", prelude + code], cwd=self.root, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(done.stderr.strip().splitlines()[-1])
        return done.stdout

    def update_plan(self, steps: list[dict[str, str]]) -> str:
        return f"plan: {', '.join(s['status'] for s in steps)}"

    def sleep(self, seconds: float, reason: str = "") -> str:
        return f"slept {seconds:g} s"


class BrokenEdit(Bench):
    def edit_file(self, path: str, old: str, new: str) -> str:
        raise PermissionError("stats.py is read-only")


async def drive(
    model: DemoModel,
    bench: Bench,
    *,
    messages: list[Message] | None = None,
    tell: dict[int, str] | None = None,
    turns: int = 200,
) -> tuple[list[Message], list[ModelResponse]]:
    """Play the model against the bench until it answers without tool calls (or ``turns``)."""
    messages = [GOAL] if messages is None else list(messages)
    responses = []
    for _ in range(turns):
        turn = sum(m.role == "assistant" for m in messages)
        if tell and turn in tell:
            messages.append(Message("user", tell[turn], name="ada"))
        response = await model.complete(ModelRequest(list(messages)))
        responses.append(response)
        messages.append(Message("assistant", response.text, tool_calls=response.tool_calls))
        if not response.tool_calls:
            break
        messages += [bench.run(c) for c in response.tool_calls]
    return messages, responses


def names(responses: list[ModelResponse]) -> list[list[str]]:
    return [[c.name for c in r.tool_calls] for r in responses]


def seeded(tmp_path: Path, scenario: str = "fix", **options: int) -> DemoModel:
    model = DemoModel(scenario, **options)
    model.prepare_workspace(tmp_path)
    return model


def run_tests(workspace: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "test_stats.py"]
    return subprocess.run(argv, cwd=workspace, capture_output=True, text=True)


async def test_fix_repairs_the_seeded_bug(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path), Bench(tmp_path))
    assert "all tests passed" in responses[-1].text
    assert run_tests(tmp_path).stdout == "all tests passed\n"


async def test_fix_timeline_plans_reads_fails_edits_and_passes(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path), Bench(tmp_path))
    assert names(responses) == [
        ["update_plan"],
        ["list_files"],
        ["update_plan", "read_file"],
        ["shell"],
        ["update_plan", "edit_file"],
        ["update_plan", "shell"],
        ["update_plan"],
        [],
    ]
    last_plan = json.loads(responses[6].tool_calls[0].arguments)["steps"]
    assert {item["status"] for item in last_plan} == {"done"}


async def test_fix_reaches_an_answer_on_plausible_hand_written_results() -> None:
    results = {
        "list_files": "stats.py\ntest_stats.py",
        "read_file": "def mean(xs):\n    return sum(xs) / (len(xs) - 1)\n",
        "update_plan": "plan updated",
        "edit_file": "edited stats.py",
    }
    shell_runs = iter(
        ["exit code 1\nAssertionError: mean() returned 3.33", "exit code 0\nall tests passed"]
    )
    messages = [GOAL]
    model = DemoModel()
    for _ in range(10):
        response = await model.complete(ModelRequest(list(messages)))
        messages.append(Message("assistant", response.text, tool_calls=response.tool_calls))
        if not response.tool_calls:
            break
        for c in response.tool_calls:
            out = next(shell_runs) if c.name == "shell" else results[c.name]
            messages.append(Message("tool", out, tool_call_id=c.id, name=c.name))
    assert not response.tool_calls
    assert "Fixed the bug in stats.py" in response.text


async def test_fix_stops_with_a_clear_answer_when_the_edit_fails(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path), BrokenEdit(tmp_path))
    assert len(responses) == 6
    assert "edit_file call failed: PermissionError: stats.py is read-only" in responses[-1].text
    assert run_tests(tmp_path).returncode == 1


async def test_fix_says_so_when_the_tests_already_pass(tmp_path: Path) -> None:
    model = seeded(tmp_path)
    stats = tmp_path / "stats.py"
    stats.write_text(stats.read_text().replace("(len(xs) - 1)", "len(xs)"))
    _, responses = await drive(model, Bench(tmp_path))
    assert responses[-1].text == "The tests already pass, so there is nothing to fix."


async def test_fix_in_an_empty_workspace_answers_instead_of_guessing(tmp_path: Path) -> None:
    _, responses = await drive(DemoModel(), Bench(tmp_path))
    assert len(responses) == 3
    assert "can't find stats.py" in responses[-1].text


async def test_a_fresh_model_gives_the_same_answer_to_the_same_messages(tmp_path: Path) -> None:
    messages, responses = await drive(seeded(tmp_path), Bench(tmp_path))
    for i, message in enumerate(messages):
        if message.role == "assistant":
            again = await DemoModel().complete(ModelRequest(messages[:i]))
            assert again == responses[sum(m.role == "assistant" for m in messages[:i])]


async def test_a_run_resumed_with_a_new_model_continues_identically(tmp_path: Path) -> None:
    _, whole = await drive(seeded(tmp_path / "a"), Bench(tmp_path / "a"))
    first, before = await drive(seeded(tmp_path / "b"), Bench(tmp_path / "b"), turns=4)
    _, after = await drive(DemoModel(), Bench(tmp_path / "b"), messages=first)
    assert before + after == whole


async def test_tool_call_ids_are_numbered_by_turn_and_position(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path), Bench(tmp_path))
    ids = [[c.id for c in r.tool_calls] for r in responses]
    assert ids[:3] == [["call_0_0"], ["call_1_0"], ["call_2_0", "call_2_1"]]


async def test_a_persons_message_is_acknowledged_and_the_run_carries_on(tmp_path: Path) -> None:
    _, plain_responses = await drive(seeded(tmp_path / "a"), Bench(tmp_path / "a"))
    bench = Bench(tmp_path / "b")
    _, responses = await drive(seeded(tmp_path / "b"), bench, tell={3: "keep the fix small"})
    assert responses[3].text.startswith("Noted: keep the fix small\n")
    assert names(responses) == names(plain_responses)
    assert responses[-1].text == plain_responses[-1].text


async def test_a_message_after_the_final_answer_gets_a_final_reply(tmp_path: Path) -> None:
    messages, _ = await drive(seeded(tmp_path), Bench(tmp_path))
    response = await DemoModel().complete(ModelRequest([*messages, Message("user", "thanks!")]))
    assert response.tool_calls == ()
    assert response.text.startswith("Noted: thanks!\nThis run is finished")


async def test_usage_estimates_tokens_and_costs_nothing() -> None:
    response = await DemoModel().complete(ModelRequest([Message("user", "x" * 400)]))
    assert response.usage.input_tokens == 100
    assert response.usage.output_tokens > 0
    assert response.usage.cost_usd == 0.0
    assert response.model == "demo:fix"


async def test_missing_tools_get_a_final_answer_naming_them() -> None:
    tools = [ToolSpec("python", "run code", {}), ToolSpec("read_file", "read", {})]
    response = await DemoModel().complete(ModelRequest([GOAL], tools))
    assert response.tool_calls == ()
    assert "update_plan, list_files, shell, edit_file" in response.text


@pytest.mark.parametrize(
    ("scenario", "first"),
    [
        ("fix", ["update_plan"]),
        ("explore", ["list_files"]),
        ("watch", ["update_plan"]),
        ("loop", ["python"]),
    ],
)
async def test_each_scenario_opens_with_a_tool_call(scenario: str, first: list[str]) -> None:
    response = await DemoModel(scenario).complete(ModelRequest([GOAL]))
    assert names([response]) == [first]
    assert response.stop_reason == "tool_use"


async def test_explore_reads_files_and_measures_them(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path, "explore"), Bench(tmp_path))
    assert names(responses) == [["list_files"], ["read_file", "read_file"], ["python"], []]
    assert "readings.csv: 15 lines" in responses[-1].text
    assert "14 days, mean 17.0 C" in responses[-1].text


async def test_watch_opens_one_incident_when_latency_crosses_the_threshold(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path, "watch"), Bench(tmp_path))
    called = [n for turn in names(responses) for n in turn]
    assert called.count("python") == 20
    assert called.count("sleep") == 19
    assert called.count("write_file") == 1
    incident = (tmp_path / "incidents" / "INC-1.md").read_text()
    assert "status: open" in incident
    assert "Opened incidents/INC-1.md at check 11" in responses[-1].text


async def test_watch_sleeps_a_minute_between_checks(tmp_path: Path) -> None:
    _, responses = await drive(DemoModel("watch", steps=3), Bench(tmp_path))
    sleeps = [json.loads(c.arguments) for r in responses for c in r.tool_calls if c.name == "sleep"]
    assert [s["seconds"] for s in sleeps] == [60, 60]


async def test_watch_without_a_spike_opens_no_incident(tmp_path: Path) -> None:
    _, responses = await drive(DemoModel("watch", steps=2), Bench(tmp_path))
    assert not (tmp_path / "incidents").exists()
    assert "no incident was opened" in responses[-1].text


async def test_loop_makes_exactly_steps_tool_turns_then_answers(tmp_path: Path) -> None:
    _, responses = await drive(DemoModel("loop", steps=7), Bench(tmp_path))
    assert names(responses) == [
        ["python"],
        ["write_file"],
        ["read_file"],
        ["list_files"],
        ["python"],
        ["write_file"],
        ["read_file"],
        [],
    ]
    assert responses[-1].text == "Finished all 7 steps."


async def test_loop_carries_on_past_a_failed_call(tmp_path: Path) -> None:
    class NoPython(Bench):
        def python(self, code: str, timeout_s: float = 30) -> str:
            raise RuntimeError("denied by policy")

    _, responses = await drive(DemoModel("loop", steps=5), NoPython(tmp_path))
    assert len(responses) == 6


async def test_loop_counts_on_from_its_call_ids_after_compaction() -> None:
    summary = Message("user", "(earlier steps summarised)")
    last = Message("assistant", "", tool_calls=(ToolCallRequest("call_9_0", "list_files", "{}"),))
    answer = Message("tool", "loop/step_8.txt", tool_call_id="call_9_0", name="list_files")
    response = await DemoModel("loop", steps=12).complete(
        ModelRequest([GOAL, summary, last, answer])
    )
    assert response.text == "Step 11 of 12."
    assert response.tool_calls[0].id == "call_10_0"


@pytest.mark.parametrize(
    ("spec", "name", "steps"),
    [
        ("", "demo:fix", 20),
        ("demo", "demo:fix", 20),
        ("fix", "demo:fix", 20),
        ("demo:watch", "demo:watch", 20),
        ("explore", "demo:explore", 20),
        ("loop?steps=200", "demo:loop?steps=200", 200),
        ("watch?steps=20", "demo:watch", 20),
        ("loop?steps=400&pace=0.25", "demo:loop?steps=400&pace=0.25", 400),
        ("demo:loop?pace=0.1&steps=3", "demo:loop?steps=3&pace=0.1", 3),
        ("fix?pace=2", "demo:fix?pace=2", 20),
        ("loop?pace=0", "demo:loop", 20),
    ],
)
def test_from_spec_parses_scenario_and_steps(spec: str, name: str, steps: int) -> None:
    model = DemoModel.from_spec(spec)
    assert (model.name, model.steps) == (name, steps)
    assert DemoModel.from_spec(model.name).name == name


@pytest.mark.parametrize(
    "spec",
    [
        "nope",
        "loop?steps=0",
        "loop?steps=x",
        "loop?speed=3",
        "loop?pace=-1",
        "loop?pace=x",
        "loop?pace=nan",
        "loop?pace=inf",
        "loop?pace=3600",
    ],
)
def test_from_spec_rejects_what_it_cannot_play(spec: str) -> None:
    with pytest.raises(ConfigError):
        DemoModel.from_spec(spec)


def test_unknown_scenario_error_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="demo:explore, demo:fix, demo:loop, demo:watch"):
        DemoModel("nope")


def test_pace_must_be_a_sensible_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="pace"):
        DemoModel("loop", pace=-0.5)


async def test_pace_makes_each_turn_take_that_long_in_real_time() -> None:
    model = DemoModel.from_spec("loop?steps=3&pace=0.2")
    started = time.monotonic()
    response = await model.complete(ModelRequest([GOAL]))
    assert 0.2 <= time.monotonic() - started < 1.0
    assert response.model == "demo:loop?steps=3&pace=0.2"
    assert names([response]) == [["python"]]


async def test_a_paced_turn_can_be_cancelled_while_it_waits() -> None:
    model = DemoModel("loop", pace=30)
    started = time.monotonic()
    with anyio.move_on_after(0.1):
        await model.complete(ModelRequest([GOAL]))
    assert time.monotonic() - started < 1.0


def test_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DemoModel("loop", steps=0)


async def test_seeded_tests_fail_before_the_demo_edit_and_pass_after(tmp_path: Path) -> None:
    _, responses = await drive(seeded(tmp_path / "run"), Bench(tmp_path / "run"))
    edit = json.loads(responses[4].tool_calls[1].arguments)
    seeded(tmp_path)
    assert run_tests(tmp_path).returncode == 1
    stats = tmp_path / edit["path"]
    assert stats.read_text().count(edit["old"]) == 1
    stats.write_text(stats.read_text().replace(edit["old"], edit["new"]))
    assert run_tests(tmp_path).stdout == "all tests passed\n"


def test_prepare_workspace_never_overwrites_a_file(tmp_path: Path) -> None:
    (tmp_path / "stats.py").write_text("# mine\n")
    DemoModel().prepare_workspace(tmp_path)
    DemoModel().prepare_workspace(tmp_path)
    assert (tmp_path / "stats.py").read_text() == "# mine\n"
    assert (tmp_path / "test_stats.py").exists()
