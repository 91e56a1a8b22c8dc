"""The built-in tools, run the way the engine runs them: validate the JSON, then invoke."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from logs import gone

from jupyter_agent._clock import FakeClock
from jupyter_agent._errors import WorkspaceEscape
from jupyter_agent._tools import BUILTIN_TOOLS, PlanItem, ToolContext, ToolOutput

pytestmark = pytest.mark.anyio


async def call(name: str, ctx: ToolContext, **arguments: object) -> ToolOutput:
    tool = BUILTIN_TOOLS[name]
    return await tool.invoke(tool.validate(json.dumps(arguments)), ctx)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return ToolContext(session_id="s1", call_id="c1", workspace=workspace)


# -- python --------------------------------------------------------------------------------


async def test_python_keeps_its_namespace_across_calls(ctx: ToolContext) -> None:
    await call("python", ctx, code="import math\nradius = 2")
    output = await call("python", ctx, code="round(math.pi * radius**2, 2)")
    assert output == ToolOutput("12.57")


async def test_python_returns_printed_output_and_the_last_expression(ctx: ToolContext) -> None:
    output = await call("python", ctx, code="print('hello')\nx = [1, 2]\nx")
    assert output == ToolOutput("hello\n[1, 2]")


async def test_python_does_not_show_a_final_none(ctx: ToolContext) -> None:
    output = await call("python", ctx, code="print('side effect only')")
    assert output == ToolOutput("side effect only\n")


async def test_python_says_when_there_is_no_output(ctx: ToolContext) -> None:
    assert await call("python", ctx, code="x = 1") == ToolOutput("(no output)")


async def test_python_exception_is_an_error_result_with_the_traceback(ctx: ToolContext) -> None:
    output = await call("python", ctx, code="print('before')\ndef f():\n    1 / 0\nf()")
    assert output.is_error
    assert output.text.startswith("before\nTraceback (most recent call last):")
    assert "    1 / 0" in output.text  # the agent's own source line, as in a notebook
    assert output.text.endswith("ZeroDivisionError: division by zero")
    assert "_python.py" not in output.text


async def test_python_syntax_error_is_an_error_result(ctx: ToolContext) -> None:
    output = await call("python", ctx, code="x = (")
    assert output.is_error and "SyntaxError" in output.text


async def test_python_time_limit_stops_an_endless_loop(ctx: ToolContext) -> None:
    started = time.monotonic()
    output = await call("python", ctx, code="while True: pass", timeout_s=0.3)
    assert output == ToolOutput("[stopped: time limit of 0.3s reached]", is_error=True)
    assert time.monotonic() - started < 2


async def test_python_still_works_after_a_time_limit(ctx: ToolContext) -> None:
    await call("python", ctx, code="n = 0\nwhile True: n += 1", timeout_s=0.2)
    output = await call("python", ctx, code="n > 0")
    assert output == ToolOutput("True")


async def test_python_caps_long_output_and_says_what_was_cut(ctx: ToolContext) -> None:
    output = await call("python", ctx, code="for i in range(50_000): print(i)")
    assert len(output.text) < 21_000
    assert output.text.startswith("0\n1\n2\n")
    assert output.text.endswith("49998\n49999\n")
    assert "characters cut ...]" in output.text


async def test_python_captures_only_its_own_thread(ctx: ToolContext) -> None:
    outside = _Recorder()
    sys.stdout, original = outside, sys.stdout
    try:
        async with anyio.create_task_group() as tg:
            code = "import time\nfor _ in range(20): time.sleep(0.01)"
            tg.start_soon(functools.partial(call, "python", ctx, code=code))
            await anyio.sleep(0.05)
            print("from the notebook")  # the main thread, while the agent's code runs
        output = await call("python", ctx, code="print('from the agent')")
    finally:
        sys.stdout = original
    assert outside.text == "from the notebook\n"
    assert output == ToolOutput("from the agent\n")


async def test_python_leaves_sys_stdout_as_it_found_it(ctx: ToolContext) -> None:
    before = (sys.stdout, sys.stderr)
    await call("python", ctx, code="import sys\nprint('x', file=sys.stderr)")
    assert (sys.stdout, sys.stderr) == before


class _Recorder:
    def __init__(self) -> None:
        self.text = ""
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.text += text
        return len(text)

    def flush(self) -> None:
        pass


# -- shell ---------------------------------------------------------------------------------


async def test_shell_reports_exit_code_and_combined_output(ctx: ToolContext) -> None:
    output = await call("shell", ctx, command="echo out; echo err >&2")
    assert output == ToolOutput("exit code 0\nout\nerr\n")


async def test_shell_nonzero_exit_is_an_error(ctx: ToolContext) -> None:
    output = await call("shell", ctx, command="echo failing; exit 3")
    assert output == ToolOutput("exit code 3\nfailing\n", is_error=True)


async def test_shell_runs_in_the_workspace(ctx: ToolContext) -> None:
    (ctx.workspace / "marker.txt").write_text("")
    output = await call("shell", ctx, command="ls")
    assert output == ToolOutput("exit code 0\nmarker.txt\n")


async def test_shell_timeout_kills_the_command_and_its_children(ctx: ToolContext) -> None:
    started = time.monotonic()
    output = await call("shell", ctx, command="echo start; sleep 30 | cat", timeout_s=0.3)
    assert output.is_error
    assert output.text.startswith("exit code -9 (timed out after 0.3s")
    assert output.text.endswith("start\n")
    assert time.monotonic() - started < 5


async def test_shell_keeps_head_and_tail_of_long_output(ctx: ToolContext) -> None:
    output = await call("shell", ctx, command="seq 1 100000")
    assert len(output.text) < 21_000
    assert output.text.startswith("exit code 0\n1\n2\n3\n")
    assert output.text.endswith("99999\n100000\n")
    assert "characters cut ...]" in output.text


async def test_shell_does_not_wait_for_a_background_job(ctx: ToolContext) -> None:
    started = time.monotonic()
    output = await call("shell", ctx, command="sleep 5 & echo started", timeout_s=10)
    assert output == ToolOutput("exit code 0\nstarted\n")
    assert time.monotonic() - started < 3


# -- files ---------------------------------------------------------------------------------


async def test_read_file_returns_the_requested_lines(ctx: ToolContext) -> None:
    (ctx.workspace / "log.txt").write_text("".join(f"line {i}\n" for i in range(10)))
    output = await call("read_file", ctx, path="log.txt", offset=2, limit=3)
    assert output.text == (
        "line 2\nline 3\nline 4\n\n[lines 2-4 shown; 5 more: read again with offset=5]"
    )


async def test_read_file_returns_a_short_file_whole(ctx: ToolContext) -> None:
    (ctx.workspace / "a.txt").write_text("one\ntwo")
    assert await call("read_file", ctx, path="a.txt") == ToolOutput("one\ntwo")


async def test_read_file_of_a_missing_file_is_an_error(ctx: ToolContext) -> None:
    output = await call("read_file", ctx, path="nope.txt")
    assert output.is_error and "no file 'nope.txt'" in output.text


async def test_write_file_creates_parent_directories(ctx: ToolContext) -> None:
    output = await call("write_file", ctx, path="src/pkg/mod.py", content="x = 1\r\n")
    assert output == ToolOutput("wrote 7 characters to src/pkg/mod.py")
    assert (ctx.workspace / "src" / "pkg" / "mod.py").read_bytes() == b"x = 1\r\n"


async def test_write_file_overwrites(ctx: ToolContext) -> None:
    (ctx.workspace / "a.txt").write_text("old")
    await call("write_file", ctx, path="a.txt", content="new")
    assert (ctx.workspace / "a.txt").read_text() == "new"


async def test_edit_file_replaces_text_that_occurs_once(ctx: ToolContext) -> None:
    (ctx.workspace / "a.py").write_text("a = 1\nb = 2\n")
    output = await call("edit_file", ctx, path="a.py", old="b = 2", new="b = 3")
    assert output == ToolOutput("replaced 1 occurrence in a.py")
    assert (ctx.workspace / "a.py").read_text() == "a = 1\nb = 3\n"


async def test_edit_file_refuses_text_that_is_not_there(ctx: ToolContext) -> None:
    (ctx.workspace / "a.py").write_text("a = 1\n")
    output = await call("edit_file", ctx, path="a.py", old="b = 2", new="b = 3")
    assert output.is_error and "not found" in output.text
    assert (ctx.workspace / "a.py").read_text() == "a = 1\n"


async def test_edit_file_refuses_text_that_occurs_more_than_once(ctx: ToolContext) -> None:
    (ctx.workspace / "a.py").write_text("x = 0\nx = 0\n")
    output = await call("edit_file", ctx, path="a.py", old="x = 0", new="x = 1")
    assert output.is_error and "occurs 2 times" in output.text
    assert (ctx.workspace / "a.py").read_text() == "x = 0\nx = 0\n"


async def test_list_files_lists_recursively_and_skips_caches(ctx: ToolContext) -> None:
    for name in ["README.md", "src/app.py", "src/__pycache__/app.pyc", ".git/HEAD"]:
        (ctx.workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx.workspace / name).write_text("")
    output = await call("list_files", ctx)
    assert output == ToolOutput("README.md\nsrc/\nsrc/app.py")


async def test_list_files_of_a_subdirectory_gives_workspace_paths(ctx: ToolContext) -> None:
    (ctx.workspace / "src" / "lib").mkdir(parents=True)
    (ctx.workspace / "src" / "lib" / "x.py").write_text("")
    output = await call("list_files", ctx, path="src")
    assert output == ToolOutput("src/lib/\nsrc/lib/x.py")


async def test_list_files_stops_at_500_entries_and_says_so(ctx: ToolContext) -> None:
    for i in range(600):
        (ctx.workspace / f"f{i:03}.txt").write_text("")
    lines = (await call("list_files", ctx)).text.splitlines()
    assert len(lines) == 501
    assert lines[499] == "f499.txt"
    assert lines[500] == "[stopped at 500 entries; list a subdirectory to see more]"


@pytest.fixture(params=["absolute", "dotdot", "symlink"])
def escape_path(request: pytest.FixtureRequest, ctx: ToolContext) -> str:
    """A path that tries to reach ``outside/secret.txt``, next to the workspace."""
    outside = ctx.workspace.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret once")
    (ctx.workspace / "link").symlink_to(outside)
    return {
        "absolute": str(outside / "secret.txt"),
        "dotdot": "../outside/secret.txt",
        "symlink": "link/secret.txt",
    }[str(request.param)]


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("read_file", {}),
        ("write_file", {"content": "pwned"}),
        ("edit_file", {"old": "once", "new": "pwned"}),
        ("list_files", {}),
    ],
)
async def test_file_tools_refuse_to_leave_the_workspace(
    ctx: ToolContext, escape_path: str, name: str, arguments: dict[str, object]
) -> None:
    with pytest.raises(WorkspaceEscape):
        await call(name, ctx, path=escape_path, **arguments)
    assert (ctx.workspace.parent / "outside" / "secret.txt").read_text() == "secret once"


# -- plan and sleep ------------------------------------------------------------------------


async def test_update_plan_sets_the_plan(ctx: ToolContext) -> None:
    recorded: list[list[PlanItem]] = []

    async def set_plan(items: list[PlanItem]) -> None:
        recorded.append(items)

    ctx.set_plan = set_plan
    steps = [{"step": "read logs", "status": "done"}, {"step": "find cause", "status": "active"}]
    output = await call("update_plan", ctx, steps=[*steps, {"step": "write report"}])
    assert recorded == [
        [
            PlanItem("read logs", "done"),
            PlanItem("find cause", "active"),
            PlanItem("write report", "pending"),
        ]
    ]
    assert output == ToolOutput("plan updated: 3 steps (1 done, 1 active, 1 pending)")


async def test_sleep_waits_on_the_context_clock(ctx: ToolContext) -> None:
    clock = FakeClock(start=1_000.0)
    wake_times: list[float] = []

    async def sleep_until(t: float) -> None:
        wake_times.append(t)
        await clock.sleep_until(t)

    ctx.clock, ctx.sleep_until = clock, sleep_until
    output = await call("sleep", ctx, seconds=3600, reason="next check")
    assert wake_times == [4_600.0]
    assert clock.now() == 4_600.0
    assert output == ToolOutput("slept 3600s (next check)")


async def test_sleep_refuses_negative_seconds(ctx: ToolContext) -> None:
    ctx.clock = FakeClock()
    output = await call("sleep", ctx, seconds=-1)
    assert output == ToolOutput("seconds must be a finite number >= 0, got -1", is_error=True)


async def test_sleep_refuses_an_endless_wait(ctx: ToolContext) -> None:
    ctx.clock = FakeClock()
    output = await call("sleep", ctx, seconds=float("inf"))
    assert output.is_error and "finite" in output.text


async def test_wait_until_waits_for_an_iso_time_on_the_context_clock(ctx: ToolContext) -> None:
    clock = FakeClock(start=0.0)
    ctx.clock = clock
    woke: list[float] = []

    async def sleep_until(t: float) -> None:
        woke.append(t)
        await clock.sleep_until(t)

    ctx.sleep_until = sleep_until
    output = await call("wait_until", ctx, time="1970-01-02T00:00:00Z", reason="window")
    assert woke == [86_400.0] and not output.is_error and "window" in output.text


async def test_wait_until_refuses_a_time_it_cannot_read(ctx: ToolContext) -> None:
    output = await call("wait_until", ctx, time="tomorrow-ish")
    assert output.is_error and "ISO 8601" in output.text


# A process running an agent whose shell call starts a child and waits on it.
IN_A_SHELL_CALL = """
import sys
from jupyter_agent import Agent
from jupyter_agent.testing import ScriptedModel, call

# (the pid is written a moment after the start: the runtime has told its reaper by then)
command = "sleep 60 & sleep 0.2; echo $! > child.pid; wait"
model = ScriptedModel([call("shell", command=command, timeout_s=120)])
s = Agent("a", model=model, tools=["shell"], store=sys.argv[1], workspace=sys.argv[2])
s.start("go").wait()
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_a_shell_command_dies_with_the_process_that_ran_it_when_that_is_killed(
    tmp_path: Path,
) -> None:
    """kill -9 leaves no time to kill the command's group: the reaper does it."""
    workspace = tmp_path / "ws"
    agent = subprocess.Popen(
        [sys.executable, "-c", IN_A_SHELL_CALL, str(tmp_path / "a.db"), str(workspace)]
    )
    pid_file = workspace / "child.pid"
    child = 0
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline and agent.poll() is None, "no shell call ran"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not gone(child)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 5
        while not gone(child):
            assert time.monotonic() < deadline, "the command outlived the killed process"
            time.sleep(0.05)
    finally:
        if agent.poll() is None:
            agent.kill()
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)
