"""``%agent`` and ``%%agent`` through IPython's own test shell, on a real store on tmp_path.

Cells run as a person types them (``run_cell``); effects are checked in the store. Sessions use
the offline demo model; ``pace`` makes each turn take real time, so a session is still running
when the next cell steers it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import get_ipython
from logs import cut_log

from jupyter_agent import (
    Agent,
    Event,
    EventKind,
    InvalidSessionState,
    Session,
    open_session,
    open_store,
    sessions,
)
from jupyter_agent._identity import current_identity
from jupyter_agent._magics import VERBS
from jupyter_agent._worker import close_worker, current_worker
from jupyter_agent.testing import ScriptedModel, reply

Run = Callable[[str], tuple[str, str]]  # runs a cell as typed; returns (stdout, stderr)
SLOW = "demo:loop?steps=200&pace=0.1"  # ~20 s unless steered: running when the next cell runs
READ_METRIC_CELL = """
from jupyter_agent import tool

@tool(effect="read_only")
def read_metric(name: str) -> float:
    '''Reads a metric.'''
    return 1.0
"""


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = get_ipython()
    assert shell is not None
    shell.run_line_magic("load_ext", "jupyter_agent")
    return shell


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The default store for the test (``$JUPYTER_AGENT_DB``); sessions left running stop."""
    path = tmp_path / "agent.db"
    monkeypatch.setenv("JUPYTER_AGENT_DB", str(path))
    monkeypatch.delenv("JUPYTER_AGENT_MODEL", raising=False)
    yield path
    for s in sessions(store=path) if path.exists() else ():
        if s.running_here:
            with contextlib.suppress(InvalidSessionState):  # it stopped since the check
                s.stop()
            s.wait(10)


@pytest.fixture
def shown(ip: InteractiveShell) -> Iterator[list[str]]:
    """Ids of the sessions the magics displayed, whatever a Session looks like when shown."""
    ids: list[str] = []

    def record(session: Session) -> None:
        ids.append(session.id)
        print(f"[shown {session.id}]")

    formatter = ip.display_formatter.ipython_display_formatter
    formatter.for_type(Session, record)
    yield ids
    formatter.pop(Session)


@pytest.fixture
def run(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run a cell as typed; returns what it printed on stdout and stderr."""

    def run_cell(text: str) -> tuple[str, str]:
        capsys.readouterr()
        ip.run_cell(text)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return out, err

    return run_cell


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def only_session(store: Path) -> Session:
    (s,) = sessions(store=store)
    return s


def finished(db: Path) -> Session:
    s = Agent("done-one", model="demo:loop?steps=2", store=db).run("run the loop")
    assert s.status == "done"
    return s


def running(db: Path) -> Session:
    return Agent("slow", model=SLOW, store=db).start("run the loop slowly")


def awaiting_approval(db: Path) -> tuple[Session, str, Path]:
    """A demo:fix session whose process 'died' inside a shell call, resumed: the call is in
    doubt and waits for a person. Returns the session, the call and its store."""
    s = Agent("fixer", model="demo:fix", store=db).run("fix the tests")
    intents = [e for e in s.events if e.kind is EventKind.TOOL_CALL]
    nth = next(i for i, e in enumerate(intents, 1) if e.payload["effect"] == "side_effect")
    crashed = cut_log(s, after=EventKind.TOOL_CALL, nth=nth, path=db.parent / "crashed.db")
    waiting = open_session(s.id, store=crashed).resume()
    assert waiting.wait(10) == "awaiting_approval"
    return waiting, waiting.pending_approvals[0].call_id, crashed


def kinds(s: Session) -> list[str]:
    return [e.kind.value for e in s.events]


# -- loading -------------------------------------------------------------------------------


def test_load_ext_registers_the_line_and_cell_magics(ip: InteractiveShell) -> None:
    magics = ip.magics_manager.magics
    assert "agent" in magics["line"] and "agent" in magics["cell"]


def test_unload_ext_removes_the_magics_and_load_ext_brings_them_back(
    ip: InteractiveShell,
) -> None:
    ip.run_line_magic("unload_ext", "jupyter_agent")
    magics = ip.magics_manager.magics
    assert "agent" not in magics["line"] and "agent" not in magics["cell"]
    ip.run_line_magic("load_ext", "jupyter_agent")
    assert "agent" in magics["line"] and "agent" in magics["cell"]


# -- %%agent -------------------------------------------------------------------------------


def test_cell_magic_starts_a_session_and_returns_at_once(
    db: Path, run: Run, shown: list[str]
) -> None:
    began = time.monotonic()
    out, err = run(f"%%agent --name looper --model {SLOW}\nRun the loop, slowly.")
    assert time.monotonic() - began < 3 and err == ""
    s = only_session(db)
    assert s.running_here and s.status in ("running", "sleeping")
    assert (s.name, s.row.model, s.row.goal) == ("looper", SLOW, "Run the loop, slowly.")
    assert shown == [s.id] and f"[shown {s.id}]" in out


@pytest.mark.parametrize(
    ("goal", "name"),
    [
        ("Fix the tests in this folder.", "fix-the-tests"),
        ("Überprüfe die Logs", "überprüfe-die-logs"),
        ("!!!", "agent"),
    ],
)
def test_a_session_started_without_a_name_is_named_after_its_goal(
    db: Path, run: Run, goal: str, name: str
) -> None:
    """So that a list of sessions (the sidebar, a toast, `%agent list`) tells them apart."""
    _, err = run(f"%%agent --model demo:loop?steps=1\n{goal}")
    assert err == ""
    s = only_session(db)
    s.wait(10)
    assert s.name == name


def test_cell_magic_passes_tools_budget_and_workspace_to_the_agent(
    db: Path, tmp_path: Path, run: Run, shown: list[str]
) -> None:
    run(READ_METRIC_CELL)
    workspace = tmp_path / "ws"
    _, err = run(
        "%%agent --model demo:loop?steps=1 --tools read_metric,list_files "
        f"--budget steps=7 --workspace {workspace}\ngo"
    )
    assert err == ""
    s = only_session(db)
    s.wait(10)
    started = s.events[0].payload
    assert started["tools"] == ["read_metric", "list_files"]
    assert started["max_steps"] == 7 and started["workspace"] == str(workspace)


def test_cell_magic_worker_option_runs_the_session_in_the_kernels_worker(
    db: Path, run: Run, shown: list[str]
) -> None:
    try:
        _, err = run(f"%%agent --worker --model {SLOW} --tools python\nRun the loop, slowly.")
        s = only_session(db)
        assert err == "" and shown == [s.id] and not s.running_here
        worker = current_worker()
        assert worker is not None and s.status in ("running", "sleeping")
        holder = s.store.get_runtime(s.row.runtime_id or "")
        assert holder is not None and holder.pid == worker.pid
        run(f"%agent stop {s.id}")
        assert s.wait(10) == "stopped"
    finally:
        close_worker()


def test_cell_magic_policy_makes_a_tool_wait_for_approval(
    db: Path, run: Run, shown: list[str]
) -> None:
    _, err = run("%%agent --model demo:fix --policy shell=ask,*=allow\nfix the tests")
    assert err == ""
    s = only_session(db)
    s.wait(10)
    assert s.status == "awaiting_approval"
    assert [a.name for a in s.pending_approvals] == ["shell"]
    assert s.events[0].payload["policy"] == {"shell": "ask", "*": "allow"}
    s.stop()


@pytest.mark.parametrize("spec", ["shell", "shell=maybe", "=ask"])
def test_a_bad_policy_is_one_line(db: Path, run: Run, spec: str) -> None:
    _, err = run(f"%%agent --model demo:fix --policy {spec}\ngo")
    assert err.count("\n") == 1 and "polic" in err and "Traceback" not in err


def test_cell_magic_without_a_model_uses_the_agents_default(
    db: Path, monkeypatch: pytest.MonkeyPatch, run: Run, shown: list[str]
) -> None:
    monkeypatch.setenv("JUPYTER_AGENT_MODEL", "demo:loop?steps=1")
    run("%%agent\nrun one step")
    s = only_session(db)
    s.wait(10)
    assert s.row.model == "demo:loop?steps=1" and s.status == "done"


def test_cell_magic_store_option_puts_the_session_in_that_store(
    db: Path, tmp_path: Path, run: Run, shown: list[str]
) -> None:
    other = tmp_path / "other.db"
    run(f"%%agent --model demo:loop?steps=1 --store {other}\ngo")
    s = only_session(other)
    s.wait(10)
    assert s.id == shown[0] and not db.exists()  # (nothing made in the default store)


def test_unsupported_budget_key_is_one_line_naming_the_supported_keys(
    db: Path, run: Run, shown: list[str]
) -> None:
    _, err = run("%%agent --model demo --budget steps=5,cost_usd=2\ngo")
    assert err.splitlines() == [
        "%%agent: budget 'cost_usd' is not supported yet; supported: steps=N, max_steps=N"
    ]
    assert shown == [] and not db.exists()  # nothing made


def test_cell_magic_with_an_empty_body_prints_one_usage_line(
    db: Path, run: Run, shown: list[str]
) -> None:
    _, err = run("%%agent --model demo\n   \n")
    (line,) = err.splitlines()
    assert line.startswith("%%agent: the cell's body is the goal") and "usage: %%agent" in line
    assert not db.exists()  # nothing made


def test_cell_magic_unknown_tool_prints_one_line_naming_the_built_ins(db: Path, run: Run) -> None:
    _, err = run("%%agent --tools no_such_tool\ngo")
    (line,) = err.splitlines()
    assert line.startswith("%%agent: unknown tool 'no_such_tool'") and "shell" in line


@pytest.mark.parametrize(
    ("defined", "says"),
    [
        ('def plain(x):\n    "Has no type on x."\n    return x', "no type annotation"),
        (
            "class Thing:\n    def __call__(self, x: int) -> int:\n        return x\n"
            "plain = Thing()",
            "",
        ),
    ],
)
def test_a_notebook_callable_that_cannot_be_a_tool_is_one_line(
    db: Path, run: Run, defined: str, says: str
) -> None:
    run(defined)
    _, err = run("%%agent --tools plain\ngo")
    (line,) = err.splitlines()
    assert line.startswith("%%agent: --tools plain: ") and says in line
    assert not db.exists()  # nothing made


def test_cell_magic_unknown_model_prints_one_project_error_line(db: Path, run: Run) -> None:
    _, err = run("%%agent --model nosuch:thing\ngo")
    (line,) = err.splitlines()
    assert line.startswith("jupyter-agent: unknown model 'nosuch:thing'")


# -- %agent list and show ------------------------------------------------------------------


def test_list_prints_a_table_of_every_session(db: Path, run: Run) -> None:
    a, b = finished(db), finished(db)
    out, _ = run("%agent list")
    header, *rows = out.splitlines()
    assert header.split() == [
        "id", "name", "status", "model", "owner", "steps", "tool", "calls", "cost", "updated"
    ]  # fmt: skip
    assert sorted(r.split()[0] for r in rows) == sorted([a.id, b.id])
    assert all("done-one" in r and "done" in r for r in rows)


def test_list_status_option_filters_the_table(db: Path, run: Run) -> None:
    done = finished(db)
    slow = running(db)
    out, _ = run("%agent list --status done")
    assert done.id in out and slow.id not in out


def test_sessions_render_as_an_html_table_with_names_escaped(db: Path) -> None:
    s = Agent("<b>bold</b>", model="demo:loop?steps=1", store=db).run("go")
    page = sessions(store=db)._repr_html_()
    assert page.startswith("<table") and f"<td>{s.id}</td>" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "<th>tool calls</th>" in page and "<th>cost</th>" in page


def test_a_session_that_has_not_spent_anything_costs_nothing_in_the_list(db: Path) -> None:
    gate = threading.Event()

    def first_turn(request):  # the model has not answered yet
        assert gate.wait(30)
        return reply("done")

    s = Agent("new", model=ScriptedModel([first_turn]), store=db).start("go")
    try:
        assert ">$0.0000</td>" in sessions(store=db)._repr_html_()  # as the widget says
    finally:
        gate.set()
    assert s.wait(10) == "done"


def test_an_empty_store_lists_no_sessions(db: Path, run: Run) -> None:
    open_store(db)
    out, _ = run("%agent list")
    assert out.strip() == "(no sessions)"


def test_a_look_at_a_missing_default_store_does_not_make_it(db: Path, run: Run) -> None:
    for line in ("%agent list", "%agent show abc", "%agent export abc"):
        out, err = run(line)
        assert err.strip() == (
            f"%agent: no store at {db} ($JUPYTER_AGENT_DB) yet: %%agent makes one (or give "
            "--store PATH)"
        ), line
        assert out == ""
    assert not db.exists()


def test_show_displays_the_session_named_by_a_unique_prefix(
    db: Path, run: Run, shown: list[str]
) -> None:
    s = finished(db)
    run(f"%agent show {s.id[:5]}")
    assert shown == [s.id]


# -- steering ------------------------------------------------------------------------------


def test_tell_records_a_message_as_written(db: Path, run: Run) -> None:
    s = running(db)
    out, _ = run(f'%agent tell {s.id} don\'t forget the docs, "please"')
    assert out.strip() == f"{s.id}: message sent"

    def told() -> list[Event]:
        return [e for e in s.events if e.kind is EventKind.MESSAGE]

    eventually(lambda: bool(told()))
    (message,) = told()
    assert message.payload["text"] == 'don\'t forget the docs, "please"'
    assert message.actor == current_identity()


def test_tell_takes_the_store_before_or_after_the_id(db: Path, tmp_path: Path, run: Run) -> None:
    other = tmp_path / "other.db"
    s = Agent("elsewhere", model=SLOW, store=other).start("loop")
    s.pause()
    assert s.wait(10) == "paused"  # a message to it is recorded at once
    finished(db)  # the default store holds another session
    run(f"%agent tell --store {other} {s.id[:6]} first")
    out, err = run(f"%agent tell {s.id[:6]} --store {other} second, after the id")
    assert out.strip() == f"{s.id}: message sent" and err == ""
    out, err = run(f"%agent tell {s.id[:6]} third, --store at the end --store {other}")
    assert out.strip() == f"{s.id}: message sent" and err == ""
    texts = [e.payload["text"] for e in s.events if e.kind is EventKind.MESSAGE]
    assert texts == ["first", "second, after the id", "third, --store at the end"]
    _, err = run(f"%agent tell --store {other} {s.id[:6]} fourth --store {other}")
    assert "give --store once" in err
    run(f'%agent tell --store {other} {s.id[:6]} "quoted, it ends with --store x"')
    texts = [e.payload["text"] for e in s.events if e.kind is EventKind.MESSAGE]
    assert texts[-1] == "quoted, it ends with --store x"
    assert not any(e.kind is EventKind.MESSAGE for x in sessions(store=db) for e in x.events)


def test_tell_takes_a_quoted_store_path_with_a_space(db: Path, tmp_path: Path, run: Run) -> None:
    (tmp_path / "my stores").mkdir()
    other = tmp_path / "my stores" / "agent.db"
    s = Agent("spaced", model=SLOW, store=other).start("loop")
    s.pause()
    assert s.wait(10) == "paused"
    lines = [
        f'%agent tell --store "{other}" {s.id} one',
        f"%agent tell {s.id} --store '{other}' two",
    ]
    for line in lines:
        out, err = run(line)
        assert out.strip() == f"{s.id}: message sent" and err == ""
    assert [e.payload["text"] for e in s.events if e.kind is EventKind.MESSAGE] == ["one", "two"]


def test_a_store_named_for_reading_must_exist(db: Path, tmp_path: Path, run: Run) -> None:
    typo = tmp_path / "agnet.db"
    for line in (f"%agent list --store {typo}", f"%agent show abc --store {typo}"):
        out, err = run(line)
        assert (
            err.strip() == f"%agent: no store at {typo}: check the path (%%agent --store makes one)"
        )
        assert out == ""
    assert not typo.exists()  # not made by reading it


def test_list_refuses_an_unknown_status(db: Path, run: Run) -> None:
    open_store(db)
    _, err = run("%agent list --status finished")
    (line,) = err.splitlines()
    assert line.startswith("jupyter-agent: unknown status 'finished': one of running, ")


def test_help_options_show_the_help(db: Path, run: Run) -> None:
    for line in ("%agent --help", "%agent -h", "%%agent --help\nthe goal"):
        out, err = run(line)
        assert "%agent fork ID [--at N]" in out and err == "", line
    out, err = run("%agent pause --help")
    assert out.strip() == f"usage: {VERBS['pause']}" and err == ""
    s = running(db)
    run(f"%agent tell {s.id} say what --help does")  # in a message it is just a word
    eventually(lambda: any(e.kind is EventKind.MESSAGE for e in s.events))


def test_tell_drops_one_pair_of_enclosing_quotes(db: Path, run: Run) -> None:
    s = running(db)
    s.pause()
    assert s.wait(10) == "paused"
    run(f"%agent tell {s.id} 'check the error rate too'")
    texts = [e.payload["text"] for e in s.events if e.kind is EventKind.MESSAGE]
    assert texts == ["check the error rate too"]


def test_pause_pauses_a_running_session(db: Path, run: Run) -> None:
    s = running(db)
    out, err = run(f"%agent pause {s.id}")
    assert err == "" and s.id in out
    assert s.wait(10) == "paused"


def test_resume_runs_a_paused_session_again(db: Path, run: Run) -> None:
    s = Agent("a", model="demo:loop?steps=30&pace=0.02", store=db).start("loop")
    s.pause()
    assert s.wait(10) == "paused"
    run(f"%agent resume {s.id}")
    assert s.wait(20) == "done" and s.row.tool_calls == 30


def test_resume_finds_the_sessions_own_tools_in_the_notebook(
    db: Path, ip: InteractiveShell, run: Run
) -> None:
    run(READ_METRIC_CELL)
    tools = [ip.user_ns["read_metric"], "python", "write_file", "read_file", "list_files"]
    s = Agent("a", model="demo:loop?steps=30&pace=0.02", tools=tools, store=db).start("loop")
    s.pause()
    assert s.wait(10) == "paused"
    _, err = run(f"%agent resume {s.id}")
    assert err == "" and s.wait(20) == "done"


def test_stop_stops_a_session_for_good(db: Path, run: Run) -> None:
    s = running(db)
    run(f"%agent stop {s.id}")
    assert s.wait(10) == "stopped"


def test_approve_lets_a_waiting_call_run_again(db: Path, run: Run) -> None:
    waiting, call, store = awaiting_approval(db)
    out, err = run(f"%agent approve {waiting.id} {call} --store {store}")
    assert err == "" and out.strip() == f"{waiting.id}: approved {call}"
    assert waiting.wait(10) == "done"
    decided = [e for e in waiting.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert [(e.payload["call_id"], e.payload["decision"]) for e in decided] == [(call, "approve")]
    assert decided[0].actor == current_identity()


def test_deny_skips_a_waiting_call_with_the_reason(db: Path, run: Run) -> None:
    waiting, call, store = awaiting_approval(db)
    run(f"%agent deny {waiting.id} {call} --store {store} --reason ran it by hand")
    assert waiting.wait(10) == "done"
    (decided,) = [e for e in waiting.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert decided.payload["decision"] == "deny"
    assert decided.payload["reason"] == "ran it by hand"


def test_a_deny_reason_is_free_text_as_typed(db: Path, run: Run) -> None:
    waiting, call, store = awaiting_approval(db)
    _, err = run(f"%agent deny {waiting.id} {call} --reason it's not safe --store {store}")
    assert err == "" and waiting.wait(10) == "done"
    (decided,) = [e for e in waiting.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert decided.payload["reason"] == "it's not safe"


def test_resume_finds_a_plain_function_the_cell_magic_made_a_tool(
    db: Path, ip: InteractiveShell, run: Run
) -> None:
    run('def probe(name: str) -> str:\n    "Probes."\n    return name')
    tools = [ip.user_ns["probe"], "python", "write_file", "read_file", "list_files"]
    s = Agent("a", model="demo:loop?steps=30&pace=0.02", tools=tools, store=db).start("loop")
    s.pause()
    assert s.wait(10) == "paused"
    s.release()
    _, err = run(f"%agent resume {s.id}")
    assert err == "" and s.wait(20) == "done"


def test_approving_a_call_that_does_not_wait_is_one_error_line(db: Path, run: Run) -> None:
    s = finished(db)
    _, err = run(f"%agent approve {s.id} call_9_9")
    (line,) = err.splitlines()
    assert line.startswith("jupyter-agent: no call 'call_9_9' waits for approval")


def test_steering_a_finished_session_is_one_error_line(db: Path, run: Run) -> None:
    s = finished(db)
    _, err = run(f"%agent pause {s.id}")
    assert err.splitlines() == [f"jupyter-agent: cannot pause session {s.id}: it is done"]


# -- fork, restore, export -----------------------------------------------------------------


def test_fork_at_prints_the_new_session_and_displays_it(
    db: Path, run: Run, shown: list[str]
) -> None:
    s = finished(db)
    out, err = run(f"%agent fork {s.id} --at 4 --name branch")
    assert err == ""
    child = next(x for x in sessions(store=db) if x.id != s.id)
    assert out.splitlines()[:2] == [
        f"forked {s.id} after event 4: new session {child.id}",
        f"  it is paused: %agent tell {child.id} ... then %agent resume {child.id}",
    ]
    assert (child.row.parent_id, child.row.fork_seq, child.name) == (s.id, 4, "branch")
    assert shown == [child.id]
    assert f"it shares the folder {s.state.workspace} with {s.id}" in out


def test_fork_without_at_branches_after_the_latest_event(
    db: Path, run: Run, shown: list[str]
) -> None:
    s = finished(db)
    out, _ = run(f"%agent fork {s.id[:6]}")
    (child_id,) = shown
    assert f"after its latest event: new session {child_id}" in out
    assert open_session(child_id).row.fork_seq == s.row.last_seq


def test_fork_into_a_new_workspace_works_there(
    db: Path, tmp_path: Path, run: Run, shown: list[str]
) -> None:
    s = finished(db)
    workspace = tmp_path / "branch"
    out, _ = run(f"%agent fork {s.id} --at 1 --workspace {workspace}")
    (child_id,) = shown
    assert open_session(child_id).state.workspace == str(workspace)
    assert "shares" not in out


def test_restore_rewinds_the_session_to_an_event(db: Path, run: Run) -> None:
    s = finished(db)
    out, err = run(f"%agent restore {s.id} --at 4")
    assert err == "" and out.strip() == f"{s.id}: restored to event 4; now paused"
    assert "restore" in kinds(s) and s.status == "paused"


@pytest.mark.parametrize("option", ["--out", "-o", "--output"])  # (the CLI's spellings too)
def test_export_writes_markdown_to_a_file(db: Path, tmp_path: Path, run: Run, option: str) -> None:
    s = finished(db)
    target = tmp_path / "report.md"
    out, _ = run(f"%agent export {s.id} {option} {target}")
    assert out.strip() == f"wrote {target}"
    assert target.read_text().startswith(f"# Session `{s.id}`: done-one")


def test_export_json_holds_the_session_and_every_event(db: Path, tmp_path: Path, run: Run) -> None:
    s = finished(db)
    target = tmp_path / "s.json"
    run(f"%agent export {s.id} --format json --out {target}")
    doc = json.loads(target.read_text())
    assert doc["session"]["id"] == s.id and len(doc["events"]) == len(s.events)


def test_export_jsonl_is_the_session_then_one_event_a_line(db: Path, run: Run) -> None:
    s = finished(db)
    out, _ = run(f"%agent export {s.id} --format jsonl")
    head, *events = (json.loads(line) for line in out.splitlines())
    assert head["session"]["id"] == s.id
    assert [e["seq"] for e in events] == [e.seq for e in s.events]


def test_export_to_a_missing_folder_is_one_error_line(db: Path, tmp_path: Path, run: Run) -> None:
    s = finished(db)
    _, err = run(f"%agent export {s.id} --out {tmp_path}/no/such/dir/x.md")
    (line,) = err.splitlines()
    assert line.startswith("jupyter-agent: ") and "No such file or directory" in line


def test_an_export_over_the_store_itself_is_refused(db: Path, run: Run) -> None:
    s = finished(db)
    _, err = run(f"%agent export {s.id} --out {db}")
    (line,) = err.splitlines()
    assert "is the store the session is read from" in line
    assert open_store(db).get_session(s.id).status == "done"


# -- help and bad input --------------------------------------------------------------------


def test_help_documents_every_verb_and_the_cell_magic(db: Path, run: Run) -> None:
    out, _ = run("%agent help")
    for usage in VERBS.values():
        assert usage.split(" [")[0] in out
    assert "%%agent [--name N] [--model M] [--tools a,b] [--budget k=v,...]" in out


def test_question_mark_shows_the_same_help(db: Path, run: Run) -> None:
    out, _ = run("%agent?")
    assert "%agent fork ID [--at N]" in out and "%%agent [--name N]" in out


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("%agent frobnicate x", "unknown verb 'frobnicate'; one of: list, show, tell,"),
        ("%agent show", "the following arguments are required: id"),
        ("%agent pause", "the following arguments are required: id"),
        ("%agent tell", "tell needs a session id and a message"),
        ("%agent tell abc123", "tell needs a message"),
        ("%agent approve abc123", "the following arguments are required: call"),
        ("%agent fork abc123 --at five", "argument --at: invalid int value: 'five'"),
        ("%agent restore abc123", "the following arguments are required: --at"),
        ("%agent restore abc123 --at 2.5", "argument --at: invalid int value: '2.5'"),
        ("%agent list --colour", "unrecognized arguments: --colour"),
        ("%agent export abc123 --format pdf", "argument --format: invalid choice: 'pdf'"),
        ('%agent deny "abc123 call_1 --reason it is free text', "No closing quotation"),
    ],
    ids=[
        "unknown-verb",
        "show-without-id",
        "pause-without-id",
        "tell-without-id",
        "tell-without-message",
        "approve-without-call",
        "fork-at-not-a-number",
        "restore-without-at",
        "restore-at-not-an-integer",
        "unknown-option",
        "unknown-export-format",
        "unbalanced-quote",
    ],
)
def test_bad_arguments_print_one_usage_line(db: Path, run: Run, line: str, says: str) -> None:
    out, err = run(line)
    (printed,) = err.splitlines()
    assert printed.startswith(f"%agent: {says}") and out == ""
    verb = line.split()[1]
    if verb in VERBS:
        assert printed.endswith(f"usage: {VERBS[verb]}")


def test_bad_budget_value_prints_one_usage_line(db: Path, run: Run) -> None:
    _, err = run("%%agent --budget steps=many\ngo")
    assert err.splitlines() == ["%%agent: budget steps must be a whole number, not 'many'"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ("--budget steps=3,steps=4", "--budget gives steps twice; give it once"),
        ("--policy shell=ask,shell=deny", "--policy gives shell twice; give it once"),
        ("--tools ,,,", "--tools names no tool (',,,'): give names, e.g. shell,python"),
    ],
)
def test_an_option_given_twice_or_empty_is_one_line(
    db: Path, run: Run, options: str, says: str
) -> None:
    _, err = run(f"%%agent {options}\ngo")
    assert err.splitlines() == [f"%%agent: {says}"]
    assert not db.exists()  # nothing made


def test_unknown_session_id_prints_one_error_line(db: Path, run: Run) -> None:
    finished(db)
    out, err = run("%agent show zzzz")
    (line,) = err.splitlines()
    assert line.startswith("jupyter-agent: no session 'zzzz'") and out == ""
