"""The ``jupyter-agent`` command, run as a user would: a real process on a real store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_agent import Agent, Session, SqliteStore
from jupyter_agent._cli import main
from jupyter_agent.testing import ScriptedModel, call, reply


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("jupyter-agent", path=str(Path(sys.executable).parent))
    assert exe, "the jupyter-agent entry point is installed with the package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("cli") / "agent.db"
    out = cli("--db", str(db), "demo")
    assert out.returncode == 0, out.stderr
    session_id = out.stdout.split("session:")[1].split()[0]
    return db, session_id


def test_demo_prints_its_store_and_a_timeline_that_fixes_the_tests(demo_db, tmp_path) -> None:
    db, session_id = demo_db
    out = cli("--db", str(db), "show", session_id)
    assert out.returncode == 0
    text = out.stdout
    assert f"session {session_id}" in text and "[done]" in text
    for expected in (
        "list_files",
        "read_file",
        "edit_file",
        "exit code 1",
        "exit code 0",
        "plan",
        "result",
    ):
        assert expected in text, expected
    assert len(text.splitlines()) > 10


def test_demo_output_names_the_store_and_the_workspace(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    out = cli("--db", str(db), "demo")
    assert out.returncode == 0, out.stderr
    assert f"store:     {db}" in out.stdout and "workspace:" in out.stdout
    assert "status: done" in out.stdout and "✓ tool     edit_file" in out.stdout


def test_the_demo_runs_as_many_turns_as_it_is_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    out = cli("--db", str(db), "demo", "--scenario", "loop", "--steps", "600")
    assert out.returncode == 0, out.stderr
    assert "status: done  (601 steps" in out.stdout  # past the agents' default limit of 500


def test_sessions_lists_the_demo_session(demo_db) -> None:
    db, session_id = demo_db
    out = cli("--db", str(db), "sessions")
    assert out.returncode == 0
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["id", "name", "status", "owner"]
    assert any(r.startswith(session_id) and " done " in r for r in rows)


def test_events_json_is_one_event_per_line(demo_db) -> None:
    db, session_id = demo_db
    out = cli("--db", str(db), "events", session_id, "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "session_started"
    assert events[-1]["kind"] == "session_finished"


def test_export_json_and_markdown(demo_db, tmp_path: Path) -> None:
    db, session_id = demo_db
    out = cli(
        "--db", str(db), "export", session_id, "--format", "json", "-o", str(tmp_path / "s.json")
    )
    assert out.returncode == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["session"]["id"] == session_id and len(doc["events"]) > 10
    md = cli("--db", str(db), "export", session_id, "--format", "markdown").stdout
    assert md.startswith(f"# Session `{session_id}`") and "| seq | kind |" in md
    assert "## Result" in md
    # the same format names as %agent export
    assert cli("--db", str(db), "export", session_id, "--format", "md").stdout == md
    lines = cli("--db", str(db), "export", session_id, "--format", "jsonl").stdout.splitlines()
    assert json.loads(lines[0])["session"]["id"] == session_id
    assert len(lines) == 1 + len(doc["events"])


def test_export_json_holds_the_whole_text_of_an_output_kept_in_a_blob(tmp_path: Path) -> None:
    from jupyter_agent import Agent, tool
    from jupyter_agent.testing import ScriptedModel, call, reply

    long = "".join(f"line {i}\n" for i in range(10_000))  # past the event's inline limit

    @tool(effect="read_only")
    def dump() -> str:
        """Dumps a lot."""
        return long

    db = tmp_path / "a.db"
    model = ScriptedModel([call("dump"), call("dump"), reply("ok")])
    s = Agent("d", model=model, tools=[dump], store=db).run("dump it")
    out = cli("--db", str(db), "export", s.id, "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    results = [e["payload"] for e in doc["events"] if e["kind"] == "tool_result"]
    assert len(results) == 2 and all(len(r["output"]) < len(long) for r in results)
    assert doc["outputs"] == {results[0]["output_blob"]: long}  # once for both
    plain = Agent("p", model=ScriptedModel([reply("hi")]), store=db).run("hi")
    plain_doc = cli("--db", str(db), "export", plain.id, "--format", "json").stdout
    assert json.loads(plain_doc)["outputs"] == {}


def test_the_choices_offered_are_the_ones_that_exist() -> None:
    from jupyter_agent._cli import DEMO_SCENARIOS, EXPORT_FORMATS
    from jupyter_agent._export import EXPORTERS
    from jupyter_agent._models._demo import SCENARIOS

    assert set(EXPORT_FORMATS) == set(EXPORTERS) and set(DEMO_SCENARIOS) == set(SCENARIOS)
    bad = cli("demo", "--scenario", "fixx")
    assert bad.returncode == 2 and "invalid choice: 'fixx' (choose from 'fix'," in bad.stderr


def test_verify_passes_then_catches_tampering(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    assert cli("--db", str(db), "demo").returncode == 0
    assert "ok" in cli("--db", str(db), "verify").stdout
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_update")  # on the log's table (events is its view)
    conn.execute("UPDATE event_log SET payload = replace(payload, 'exit code 1', 'exit code 0')")
    conn.commit()
    conn.close()
    out = cli("--db", str(db), "verify")
    assert out.returncode == 2 and "TAMPERED" in out.stdout


def test_unknown_id_is_one_line_and_exit_2(demo_db) -> None:
    db, _ = demo_db
    for verb in ("show", "events", "export", "resume"):
        out = cli("--db", str(db), verb, "no-such-session")
        assert out.returncode == 2, verb
        assert out.stderr.count("\n") == 1 and "no session 'no-such-session'" in out.stderr
        assert f"in the store {db} (list its sessions:" in out.stderr  # which store was read
        assert "Traceback" not in out.stderr


def test_missing_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = cli("--db", str(tmp_path / "nothing.db"), "sessions")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no store at" in out.stderr
    assert not (tmp_path / "nothing.db").exists(), "reading never creates a store"
    (tmp_path / "empty.db").touch()
    out = cli("--db", str(tmp_path / "empty.db"), "sessions")
    assert out.returncode == 2 and "is an empty file, not a store" in out.stderr
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_corrupt_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    db.write_bytes(b"garbage" * 1000)
    out = cli("--db", str(db), "sessions")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "not a readable jupyter-agent store" in out.stderr


def test_a_store_this_user_cannot_write_is_one_line_saying_so(demo_db) -> None:
    """Not "corrupt": the file is fine, but opening a store writes to it and its folder."""
    src, _ = demo_db
    folder = Path(tempfile.mkdtemp())
    db = folder / "agent.db"
    with sqlite3.connect(src) as conn:  # a copy with no write-ahead log beside it
        conn.execute(f"VACUUM INTO '{db}'")
    as_other: list[str] = []
    if os.geteuid() == 0:  # root writes anything: read it as nobody
        as_other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*as_other, sys.executable, "-c", "import jupyter_agent"])
        if shutil.which("setpriv") is None or probe.returncode != 0:
            pytest.skip("running as root, and nobody cannot run this Python")
    folder.chmod(0o555)
    db.chmod(0o444)
    try:
        exe = str(Path(sys.executable).parent / "jupyter-agent")
        out = subprocess.run(
            [*as_other, exe, "--db", str(db), "sessions"], capture_output=True, text=True
        )
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "cannot be written by this user" in out.stderr and "copy it" in out.stderr
    assert "not a readable" not in out.stderr


def test_resume_of_a_finished_session_says_so(demo_db) -> None:
    db, session_id = demo_db
    out = cli("--db", str(db), "resume", session_id)
    assert out.returncode == 2 and "it is done" in out.stderr
    assert "a fork of it goes on from its end" in out.stderr  # what does go on


def test_store_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUPYTER_AGENT_DB", str(tmp_path / "env.db"))
    assert main(["sessions"]) == 2
    assert "no store at" in capsys.readouterr().err


def test_no_command_prints_help_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "sessions" in capsys.readouterr().out


def test_jupyter_agent_is_also_a_jupyter_subcommand(demo_db) -> None:
    db, session_id = demo_db
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    assert jupyter, "jupyter_core is installed with the dev extras"
    out = subprocess.run(
        [jupyter, "agent", "--db", str(db), "sessions"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and session_id in out.stdout


def test_approving_an_unknown_call_is_one_line_and_exit_2(demo_db) -> None:
    db, session_id = demo_db
    out = cli("--db", str(db), "resume", session_id, "--approve", "bogus")
    assert out.returncode == 2 and out.stderr.count("\n") == 1


def test_export_to_a_missing_folder_is_one_line_and_exit_2(demo_db, tmp_path: Path) -> None:
    db, session_id = demo_db
    out = cli("--db", str(db), "export", session_id, "-o", str(tmp_path / "no" / "x.md"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "No such file or directory" in out.stderr


def test_an_export_over_the_store_itself_is_refused(demo_db) -> None:
    db, session_id = demo_db
    alias = db.parent / "alias.db"
    os.link(db, alias)  # the same file under another name
    for target in (str(db), f"{db}-wal", str(alias)):
        out = cli("--db", str(db), "export", session_id, "--format", "json", "-o", target)
        assert out.returncode == 2 and out.stderr.count("\n") == 1
        assert "is the store the session is read from" in out.stderr
    assert cli("--db", str(db), "show", session_id).returncode == 0  # the store is whole


def test_output_piped_into_head_ends_quietly(demo_db) -> None:
    db, session_id = demo_db
    exe = shutil.which("jupyter-agent", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        f"'{exe}' --db '{db}' events {session_id} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.count("\n") == 1 and out.stderr == ""


def run_elsewhere(db: Path, spec: str, then: str) -> tuple[subprocess.Popen[str], str]:
    """A process that starts a session of model ``spec`` in ``db`` and then runs ``then``
    (``s`` is the session); return it and the session's id once started."""
    script = (
        "import sys, time\nfrom jupyter_agent import Agent\n"
        f"s = Agent('w', model={spec!r}, store=sys.argv[1], max_steps=10**6).start('loop')\n"
        f"print(s.id, flush=True)\n{then}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_sessions_of_a_killed_process_are_listed_as_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    proc, session_id = run_elsewhere(db, "demo:loop?steps=100000", "time.sleep(60)")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    out = cli("--db", str(db), "sessions")
    (row,) = [r for r in out.stdout.splitlines() if r.startswith(session_id)]
    assert " interrupted " in row


def test_resuming_a_session_another_process_runs_follows_it_there(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    proc, session_id = run_elsewhere(db, "demo:loop?steps=8&pace=0.2", "s.wait(60)")
    try:
        out = cli("--db", str(db), "resume", session_id, timeout=60)
        assert out.returncode == 0, out.stderr
        first = out.stdout.splitlines()[0]
        assert first.startswith(f"{session_id} runs in another process (pid {proc.pid} ")
        assert first.endswith("): following it")
        assert "status: done" in out.stdout and "Finished all 8 steps" in out.stdout
    finally:
        proc.communicate(timeout=60)


def test_a_run_stopped_with_ctrl_c_is_interrupted_because_its_process_ended(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agent.db"
    exe = shutil.which("jupyter-agent", path=str(Path(sys.executable).parent))
    assert exe
    proc = subprocess.Popen(
        [exe, "--db", str(db), "demo", "--scenario", "loop", "--steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = iter(proc.stdout.readline, "")
    session_id = next(line for line in lines if line.startswith("session:")).split()[1]
    next(line for line in lines if "list_files" in line or "python" in line)  # it runs
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    out = cli("--db", str(db), "show", session_id)
    assert "[interrupted]" in out.stdout and "its process ended" in out.stdout


def test_the_watch_demo_runs_its_minutes_on_a_fast_clock(tmp_path: Path) -> None:
    out = cli("--db", str(tmp_path / "a.db"), "demo", "--scenario", "watch", "--steps", "3")
    assert out.returncode == 0, out.stderr
    assert "clock 600x real time" in out.stdout and "status: done" in out.stdout
    assert "sleep until" in out.stdout


@pytest.mark.parametrize(
    ("option", "said"),
    [(("--speed", "0"), "--speed must be more than 0"), (("--steps", "0"), "--steps must be 1")],
)
def test_a_demo_option_out_of_range_is_one_line_and_exit_2(
    tmp_path: Path, option: tuple[str, str], said: str
) -> None:
    out = cli("--db", str(tmp_path / "a.db"), "demo", *option)
    assert out.returncode == 2 and said in out.stderr and len(out.stderr.splitlines()) == 1
    assert not (tmp_path / "a.db").exists()  # nothing made


def test_fork_and_restore_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    out = cli("--db", str(db), "demo", "--scenario", "loop", "--steps", "5")
    assert out.returncode == 0, out.stderr
    sid = out.stdout.split("session:")[1].split()[0]

    forked = cli("--db", str(db), "fork", sid, "--at", "4", "--name", "other")
    assert forked.returncode == 0, forked.stderr
    fork_id = forked.stdout.split()[0]
    assert f"it shares the folder {db.parent / 'workspaces' / sid} with {sid}" in forked.stdout
    own = cli("--db", str(db), "fork", sid, "--workspace", str(tmp_path / "own"))
    assert own.returncode == 0 and "shares" not in own.stdout, own.stderr
    restored = cli("--db", str(db), "restore", sid[:6], "--at", "4")
    assert restored.returncode == 0, restored.stderr
    assert "restored to event 4; now paused" in restored.stdout
    assert "back to event 4" in restored.stdout

    with SqliteStore(db) as store:
        assert store.get_session(fork_id).parent_id == sid
        assert store.get_session(sid).status == "paused"
    bad = cli("--db", str(db), "restore", sid, "--at", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "give an event" in bad.stderr
    # event 2 is the model's answer, event 3 the call it asked for: a branch between them
    # would hold a call that never gets a result
    inside = cli("--db", str(db), "fork", sid, "--at", "2")
    assert inside.returncode == 2 and inside.stderr.count("\n") == 1
    assert "inside a step" in inside.stderr and "give 1 (before the answer) or 3" in inside.stderr
    assert "tool calls recorded in event 3)" in inside.stderr


def test_the_branch_a_restore_left_is_marked_where_the_timeline_is_shown(tmp_path: Path) -> None:
    from jupyter_agent._snapshot import snapshot_html

    db = tmp_path / "agent.db"
    out = cli("--db", str(db), "demo", "--scenario", "loop", "--steps", "3")
    sid = out.stdout.split("session:")[1].split()[0]
    assert cli("--db", str(db), "restore", sid, "--at", "4").returncode == 0
    with SqliteStore(db) as store:
        restore_seq = store.get_session(sid).last_seq
    mark = f"(left by the restore at event {restore_seq})"

    def marked(lines: list[str]) -> list[int]:
        return [int(line.split()[0].strip("|")) for line in lines if mark in line]

    shown = cli("--db", str(db), "show", sid).stdout.splitlines()
    assert "  1 step, 1 tool call, " in "\n".join(shown)  # (back to after the first)
    rows = [line for line in shown if line[:6].strip().isdigit()]
    branch = [int(line.split()[0]) for line in rows if 4 < int(line.split()[0]) < restore_seq]
    assert branch and marked(rows) == branch
    md = cli("--db", str(db), "export", sid, "--format", "markdown").stdout.splitlines()
    assert marked([line.replace("| ", "", 1) for line in md if line.startswith("| ")]) == branch
    assert "## Result" not in md  # the answer was on the branch left
    with SqliteStore(db) as store:
        html = snapshot_html(store, sid)
    assert html.count('class="ja-s-left"') == len(branch)

    # a restore of the restore takes the branch back; the first restore is left instead
    assert cli("--db", str(db), "restore", sid, "--at", str(restore_seq - 1)).returncode == 0
    shown = cli("--db", str(db), "show", sid).stdout.splitlines()
    assert mark not in "\n".join(shown)
    assert f"(left by the restore at event {restore_seq + 1})" in "\n".join(shown)


def test_resume_returns_when_the_session_it_runs_waits_for_a_person(tmp_path: Path) -> None:
    from jupyter_agent import Agent

    db = tmp_path / "agent.db"
    agent = Agent("a", model="demo:loop?steps=2&pace=0.2", store=db, policy={"write_file": "ask"})
    s = agent.start("loop")
    s.pause()  # in its first model call, before the write it will ask about
    assert s.wait(10) == "paused" and not s.pending_approvals
    s.release()  # nobody holds it: the command line runs it, up to the call that waits

    out = cli("--db", str(db), "resume", s.id, timeout=30)
    assert out.returncode == 0, out.stderr
    (waiting,) = s.pending_approvals
    assert "status: awaiting_approval" in out.stdout
    assert f"resume {s.id} --approve {waiting.call_id}" in out.stdout

    both = cli("--db", str(db), "resume", s.id, "--approve", "x", "--deny", "x")
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    assert "call x is given to both --approve and --deny" in both.stderr

    done = cli("resume", s.id, "--approve", waiting.call_id, "--db", str(db), timeout=30)
    assert done.returncode == 0, done.stderr
    assert "status: done" in done.stdout


def test_sessions_refuses_an_unknown_status(demo_db) -> None:
    db, _ = demo_db
    out = cli("sessions", "--status", "finished", "--db", str(db))
    assert out.returncode == 2 and "invalid choice: 'finished'" in out.stderr


def test_text_from_a_session_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """Control characters a tool printed, a model said or a goal held are shown as escapes:
    they may not clear the screen or retitle the window of whoever reads them."""
    db = tmp_path / "agent.db"
    trap = "\x1b[2J\x1b]0;TITLE\x07\x9b31m"
    model = ScriptedModel([call("shell", command="printf '\\033[2J red'"), reply(f"ok {trap}")])
    s = Agent(f"n{trap}", model=model, tools=["shell"], store=db).run(f"go {trap}")
    json_outputs = (("events", s.id, "--json"), ("export", s.id, "--format", "json"))
    for args in (("show", s.id), ("events", s.id), ("sessions",), ("fork", s.id), *json_outputs):
        out = cli("--db", str(db), *args)
        assert out.returncode == 0, out.stderr
        assert not {"\x1b", "\x07", "\x9b"} & set(out.stdout), args
        assert "\\x1b" in out.stdout or "\\u001b" in out.stdout, args  # (events: JSON)
    lines = cli("--db", str(db), "events", s.id, "--json").stdout.splitlines()
    assert json.loads(lines[0])["payload"]["goal"] == f"go {trap}"  # still JSON, read back
    doc = json.loads(cli("--db", str(db), "export", s.id, "--format", "json").stdout)
    assert doc["session"]["goal"] == f"go {trap}"  # the escapes read back as the text
    out = cli("--db", str(db), "show", f"n{trap}")  # (an unknown id, said back)
    assert not {"\x1b", "\x07", "\x9b"} & set(out.stderr)


HOLDER = """
import sys, time
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call, reply

@tool(effect="read_only")
def slow(seconds: float) -> str:
    '''Waits.'''
    time.sleep(seconds)
    return "ok"

@tool(effect="side_effect")
def deploy() -> str:
    '''Deploys.'''
    return "deployed"

steps = [call("slow", seconds=6), call("deploy"), reply("done")]
s = Agent("held", model=ScriptedModel(steps), tools=[slow, deploy], store=sys.argv[1],
          policy={"deploy": "ask"}).start("work")
print(s.id, flush=True)
time.sleep(120)
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[str, Session, subprocess.Popen[str]]]:
    """A session another process runs (HOLDER): the store, a handle on it, the process."""
    from jupyter_agent import open_session

    db = str(tmp_path / "agent.db")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        yield db, open_session(holder.stdout.readline().strip(), store=db), holder
    finally:
        holder.kill()
        holder.communicate()


def test_pause_tell_approve_and_stop_reach_the_process_that_runs_the_session(held) -> None:
    from jupyter_agent import EventKind

    db, s, holder = held
    out = cli("pause", s.id, "--store", db)  # (the magics' spelling of --db)
    assert out.returncode == 0, out.stderr
    assert f"{s.id}: pause sent to the process that runs it (pid {holder.pid} " in out.stdout
    assert "after the tool call in progress" in out.stdout
    shown = cli("show", s.id, "--db", db).stdout
    assert "[running]" in shown and "asked, not yet acted on: pause (" in shown
    assert s.wait(30) == "paused"
    assert cli("pause", s.id, "--db", db).stdout == f"{s.id}: already paused\n"

    told = cli("tell", s.id, "also check the logs", "--db", db)
    assert told.stdout.startswith(f"{s.id}: sent to the process that runs it")
    assert cli("resume", s.id, "--db", db, timeout=60).returncode == 0
    (waiting,) = s.pending_approvals
    unknown = cli("approve", s.id, "call_x", "--db", db)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "no call 'call_x' waits for approval" in unknown.stderr
    approved = cli("approve", s.id, waiting.call_id, "--db", db)
    assert approved.stdout.startswith(f"{s.id}: call {waiting.call_id} approved; sent to")
    wait_for_status(s, "done")
    said = [(e.kind, e.payload) for e in s.events if e.actor == approved_by()]
    assert (EventKind.MESSAGE, {"text": "also check the logs"}) in said
    assert any(k is EventKind.APPROVAL_DECIDED and p["decision"] == "approve" for k, p in said)

    gone = cli("stop", s.id, "--db", db)
    assert gone.returncode == 2 and gone.stderr == (
        f"jupyter-agent: error: cannot stop session {s.id}: it is done\n"
    )


def test_stop_of_a_session_paused_in_another_process_waits_to_see_it_stopped(held) -> None:
    db, s, _holder = held
    s.pause()
    assert s.wait(30) == "paused"
    assert cli("stop", s.id, "--db", db).stdout == f"{s.id}: stopped\n"
    assert s.status == "stopped"


def test_controls_of_a_session_nobody_runs_act_here_or_wait_in_the_store(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    agent = Agent("a", model="demo:loop?steps=2&pace=0.2", store=db, policy={"write_file": "ask"})
    s = agent.start("loop")
    s.pause()
    assert s.wait(10) == "paused"
    s.release()  # nobody holds it now
    out = cli("pause", s.id, "--db", str(db))
    assert out.returncode == 2 and out.stderr == (
        f"jupyter-agent: error: session {s.id} is not running (it is paused): "
        "there is nothing to pause\n"
    )
    told = cli("tell", s.id, "use the cache", "--db", str(db))
    assert told.stdout == f"{s.id}: recorded; the agent reads it when the session runs again\n"
    assert cli("resume", s.id, "--db", str(db), timeout=30).returncode == 0
    (waiting,) = s.pending_approvals  # the command line ran it, up to the call that asks
    denied = cli("deny", s.id, waiting.call_id, "--reason", "not now", "--db", str(db))
    assert denied.stdout.startswith(
        f"{s.id}: call {waiting.call_id} denied; the decision waits for the process that "
        "resumes the session (`"
    )
    assert denied.stdout.endswith(f"jupyter-agent resume {s.id}` runs it here)\n")
    assert s.status == "awaiting_approval"  # not run by the command that decided
    assert cli("resume", s.id, "--db", str(db), timeout=30).returncode == 0
    skipped = [e.payload for e in s.events if e.payload.get("call_id") == waiting.call_id]
    assert any(p.get("skipped") and "not now" in p["output"] for p in skipped)
    t = agent.start("loop again")
    t.pause()
    assert t.wait(10) == "paused"
    t.release()
    assert cli("stop", t.id, "--db", str(db)).stdout == f"{t.id}: stopped\n"
    assert t.status == "stopped"
    assert cli("list", "--db", str(db)).stdout.count(t.id) == 1  # `list`, as the magics say


def wait_for_status(s, status: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while s.status != status:
        assert time.monotonic() < deadline, f"{s.id} is {s.status}, not {status}"
        time.sleep(0.05)


def approved_by() -> str:
    from jupyter_agent._identity import current_identity

    return current_identity()
