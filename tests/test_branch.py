"""Fork and restore: a branch reads its parent's log without copying it; a restore rewinds the
state and the files, keeps the abandoned branch in the log, and both survive snapshots."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from jupyter_agent import (
    Agent,
    EventKind,
    InvalidSessionState,
    SessionLeased,
    StoreError,
    open_session,
)
from jupyter_agent._branch import restore_session
from jupyter_agent._clock import SystemClock
from jupyter_agent._events import verify_chain
from jupyter_agent._state import SessionState, load_state
from jupyter_agent._store._leases import this_process
from jupyter_agent.testing import FakeClock, ScriptedModel, call, reply


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def own_event_count(db: Path, session_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT count(*) FROM events WHERE session_id = ?", (session_id,)
        ).fetchone()[0]


def seq_of(session, kind: EventKind, nth: int = 1) -> int:
    return [e.seq for e in session.events if e.kind is kind][nth - 1]


def same_but_identity(a: SessionState, b: SessionState) -> None:
    skip = {"id", "name", "owner", "status", "last_seq", "last_hash", "result", "workspace"}
    da, db_ = a.comparable(), b.comparable()
    assert {k: v for k, v in da.items() if k not in skip} == {
        k: v for k, v in db_.items() if k not in skip
    }


def writer_script() -> ScriptedModel:
    return ScriptedModel(
        [
            call("write_file", path="a.txt", content="one"),
            call("write_file", path="a.txt", content="two"),
            call("write_file", path="b/c.txt", content="new file"),
            call("edit_file", path="a.txt", old="two", new="three"),
            reply("written"),
        ]
    )


def test_a_fork_of_a_session_whose_clock_runs_ahead_keeps_its_log_in_time_order(
    db: Path,
) -> None:
    ahead = FakeClock(start=time.time() + 86_400)  # a session clock a day ahead of this one
    model = ScriptedModel([call("sleep", seconds=3600), call("sleep", seconds=3600), reply("ok")])
    s = Agent("a", model=model, store=db, clock=ahead).run("nap")
    fork = s.fork(at=seq_of(s, EventKind.TOOL_RESULT, 1))
    stamps = [e.ts for e in fork.events]
    assert stamps == sorted(stamps) and fork.events[-1].kind is EventKind.FORK


def test_a_fork_copies_no_event_and_starts_from_the_parents_state(db: Path) -> None:
    parent = Agent("p", model="demo:fix", store=db).run("make the tests pass")
    before = [e.hash for e in parent.events]
    at = seq_of(parent, EventKind.TOOL_RESULT, 3)

    fork = parent.fork(at=at, name="other idea")

    assert own_event_count(db, fork.id) == 1  # only its fork event
    assert [e.hash for e in fork.events][:at] == before[:at]
    assert fork.events[at].kind is EventKind.FORK and fork.events[at].seq == at + 1
    assert verify_chain(fork.events) is None
    row = fork.row
    assert (row.parent_id, row.fork_seq, row.status, row.name) == (
        parent.id,
        at,
        "paused",
        "other idea",
    )
    same_but_identity(fork.state, load_state(parent.store, parent.id, at=at))
    assert fork.state.id == fork.id and row.steps == fork.state.steps
    assert [e.hash for e in parent.events] == before and parent.status == "done"


def test_a_fork_runs_on_by_itself_and_the_parent_is_untouched(db: Path) -> None:
    parent = Agent("p", model=writer_script(), store=db, workspace=db.parent / "ws").run("go")
    before = [e.hash for e in parent.events]
    fork = parent.fork(at=seq_of(parent, EventKind.TOOL_RESULT, 1))
    fork.tell("take another road")
    fork.resume().wait(timeout=30)

    assert fork.status == "done"
    assert [e.hash for e in parent.events] == before
    assert verify_chain(fork.events) is None
    texts = [e.payload["text"] for e in fork.events if e.kind is EventKind.MESSAGE]
    assert texts == ["take another road"]
    assert SessionState.fold(fork.id, fork.events).comparable() == fork.state.comparable()


def test_restore_rewinds_the_state_and_keeps_the_abandoned_branch_in_the_log(db: Path) -> None:
    s = Agent("r", model="demo:loop?steps=12", store=db).run("loop")
    last = s.row.last_seq
    at = seq_of(s, EventKind.TOOL_RESULT, 5)
    then = load_state(s.store, s.id, at=at)

    s.restore(at=at)

    assert s.status == "paused" and s.row.last_seq == last + 1
    assert len(s.events) == last + 1  # nothing deleted
    restore = s.events[-1]
    assert restore.kind is EventKind.RESTORE and restore.payload["to_seq"] == at
    now = s.state
    assert (now.steps, now.tool_calls, now.plan, now.messages) == (
        then.steps,
        then.tool_calls,
        then.plan,
        then.messages,
    )
    assert s.row.steps == then.steps and s.result is None
    assert any(r.kind == "restore" for r in s.timeline())
    assert verify_chain(s.events) is None


def test_a_restored_session_runs_on_to_the_end_again(db: Path) -> None:
    s = Agent("r", model="demo:loop?steps=12", store=db).run("loop")
    s.restore(at=seq_of(s, EventKind.TOOL_RESULT, 5))
    s.resume().wait(timeout=30)
    assert s.status == "done"
    assert SessionState.fold(s.id, s.events).comparable() == s.state.comparable()
    assert s.state.steps == 13


def test_a_session_restored_to_its_final_answer_ends_with_it_when_resumed(db: Path) -> None:
    model = ScriptedModel([call("list_files"), reply("the answer"), reply("a second answer")])
    s = Agent("r", model=model, store=db).run("answer")
    answered = seq_of(s, EventKind.MODEL_RESPONSE, 2)
    assert s.result == "the answer" and len(model.requests) == 2
    s.restore(at=answered)
    s.resume().wait(timeout=30)
    assert s.status == "done" and s.result == "the answer"
    assert len(model.requests) == 2, "the model was asked again for an answer it had given"

    s.restore(at=answered)  # a person's word after the answer: the model answers it
    s.tell("one more thing")
    s.resume().wait(timeout=30)
    assert s.status == "done" and s.result == "a second answer" and len(model.requests) == 3


def test_restore_puts_files_back(db: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    assert (ws / "a.txt").read_text() == "three" and (ws / "b/c.txt").exists()

    s.restore(at=seq_of(s, EventKind.TOOL_RESULT, 1))

    assert (ws / "a.txt").read_text() == "one"
    assert not (ws / "b/c.txt").exists()
    files = {f["path"] for f in s.events[-1].payload["files"]}
    assert files == {"a.txt", "b/c.txt"}


def test_restoring_to_before_a_restore_undoes_it(db: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    end = s.row.last_seq
    (ws / "a.txt").write_text("edited by hand")  # not the agent's, but kept in the store
    s.restore(at=seq_of(s, EventKind.TOOL_RESULT, 2))
    assert (ws / "a.txt").read_text() == "two"
    replaced = {f["path"]: f["before"] for f in s.events[-1].payload["files"]}
    assert s.store.get_blob(replaced["a.txt"]) == b"edited by hand"

    s.restore(at=end)  # where the agent had left things before the first restore
    assert (ws / "a.txt").read_text() == "three"
    assert (ws / "b/c.txt").read_text() == "new file"


def test_tokens_and_cost_spent_stay_counted_after_a_restore(db: Path) -> None:
    s = Agent("r", model="demo:loop?steps=8", store=db).run("loop")
    spent = (s.row.input_tokens, s.row.output_tokens)
    s.restore(at=seq_of(s, EventKind.TOOL_RESULT, 1))  # before the second answer
    assert (s.state.input_tokens, s.state.output_tokens) == spent
    assert (s.row.input_tokens, s.row.output_tokens) == spent


def test_snapshots_on_both_sides_of_restores_give_the_same_state_as_a_fold(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=150", store=db, max_steps=1000).run("loop")
    assert s.store.latest_snapshot(s.id) is not None
    s.restore(at=251)  # behind the newest snapshot: its branch is abandoned
    s.resume().wait(timeout=60)
    s.restore(at=121)
    s.restore(at=s.row.last_seq - 1)  # forward again, to before that last restore
    folded = SessionState.fold(s.id, s.events)
    assert load_state(s.store, s.id).comparable() == folded.comparable()
    for at in (50, 120, 260, s.row.last_seq - 3):
        events = list(s.store.iter_events(s.id, until=at))
        assert load_state(s.store, s.id, at=at).comparable() == (
            SessionState.fold(s.id, events).comparable()
        )


def test_a_fork_of_a_fork_at_an_earlier_point_sees_only_what_it_branched_from(db: Path) -> None:
    parent = Agent("p", model="demo:loop?steps=10", store=db).run("loop")
    child = parent.fork(at=27)
    child.resume().wait(timeout=30)
    grandchild = child.fork(at=11)
    events = grandchild.events
    assert [e.seq for e in events] == list(range(1, 13))
    assert {e.session_id for e in events[:11]} == {parent.id}
    assert verify_chain(events) is None
    same_but_identity(grandchild.state, load_state(parent.store, parent.id, at=11))


def test_a_fork_given_its_own_workspace_gets_the_files_as_they_were(
    db: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    fork = s.fork(at=seq_of(s, EventKind.TOOL_RESULT, 2), workspace=tmp_path / "fork-ws")
    assert (tmp_path / "fork-ws/a.txt").read_text() == "two"
    assert not (tmp_path / "fork-ws/b/c.txt").exists()
    assert (ws / "a.txt").read_text() == "three"  # the parent's files are untouched
    assert fork.state.workspace == str(tmp_path / "fork-ws")


def test_a_fork_of_a_fork_at_a_point_it_inherited_starts_from_its_parents_workspace(
    db: Path, tmp_path: Path
) -> None:
    """The point is in the grandparent's history, but the folder is the parent's own: the
    grandparent's files have moved on since."""
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    at = seq_of(s, EventKind.TOOL_RESULT, 2)
    fork = s.fork(at=at, workspace=tmp_path / "fork-ws")
    shared = fork.fork(at=at)
    assert shared.state.workspace == fork.state.workspace == str(tmp_path / "fork-ws")
    assert load_state(s.store, shared.id).comparable() == (
        SessionState.fold(shared.id, shared.events).comparable()
    )
    copied = fork.fork(at=at, workspace=tmp_path / "copy-ws")
    assert (tmp_path / "copy-ws/a.txt").read_text() == "two"  # not the grandparent's "three"
    assert not (tmp_path / "copy-ws/b/c.txt").exists()  # written by the grandparent later
    assert copied.state.workspace == str(tmp_path / "copy-ws")
    earlier = fork.fork(at=seq_of(s, EventKind.TOOL_RESULT, 1), workspace=tmp_path / "w1")
    assert (tmp_path / "w1/a.txt").read_text() == "one"
    assert not (tmp_path / "w1/b/c.txt").exists() and earlier.state.workspace == str(
        tmp_path / "w1"
    )
    assert (ws / "a.txt").read_text() == "three"  # the grandparent's files are untouched


def test_a_fork_that_fails_making_its_copy_leaves_no_folder_behind(
    db: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    with sqlite3.connect(db) as conn:  # the version a.txt must go back to is gone
        conn.execute("DELETE FROM blobs")
    with pytest.raises(StoreError, match="no blob"):
        s.fork(at=seq_of(s, EventKind.TOOL_RESULT, 1), workspace=tmp_path / "fork-ws")
    assert not [p.name for p in tmp_path.iterdir() if "fork-ws" in p.name]  # nor a half copy
    assert [r.id for r in s.store.list_sessions()] == [s.id]


def test_a_restore_that_finishes_one_cut_short_records_every_file_it_moves_back(
    db: Path, tmp_path: Path
) -> None:
    """A restore puts files back before it writes its event: killed in between, it leaves
    some files back and the log as it was. The next restore must record those files too
    (from what the log says they were), or undoing it would leave them behind."""
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    last = s.row.last_seq
    (ws / "a.txt").write_text("one")  # the cut-short restore got this far
    s.restore(at=seq_of(s, EventKind.TOOL_RESULT, 1))
    moved = {f["path"] for f in s.events[-1].payload["files"]}
    assert moved == {"a.txt", "b/c.txt"}
    assert (ws / "a.txt").read_text() == "one" and not (ws / "b/c.txt").exists()
    s.restore(at=last)  # undo it
    assert (ws / "a.txt").read_text() == "three" and (ws / "b/c.txt").read_text() == "new file"


def test_restoring_a_session_that_runs_here_pauses_it_first(db: Path) -> None:
    s = Agent("slow", model="demo:loop?steps=100000", store=db).start("loop")
    deadline = time.monotonic() + 10
    while s.row.last_seq < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.restore(at=11)
    assert s.status == "paused" and s.state.last_seq == s.row.last_seq
    assert s.events[-1].kind is EventKind.RESTORE
    s.stop()


def test_a_restore_command_reaches_the_process_holding_the_session(db: Path) -> None:
    s = Agent("p", model="demo:loop?steps=100000", store=db).start("loop")
    time.sleep(0.2)
    s.pause()
    s.wait(timeout=10)
    last = s.row.last_seq
    s.store.send_command(s.id, "restore", {"at": 4}, actor="someone-else")
    deadline = time.monotonic() + 5
    while s.row.last_seq == last and time.monotonic() < deadline:
        time.sleep(0.05)
    restore = s.events[-1]
    assert restore.kind is EventKind.RESTORE and restore.actor == "someone-else"
    assert s.state.last_seq == last + 1 and s.status == "paused"
    s.stop()


@pytest.mark.parametrize("at", [0, -1, 10_000, "3", 2.5, True])
def test_a_point_outside_the_log_is_a_clear_error(db: Path, at: object) -> None:
    s = Agent("p", model="demo:fix", store=db).run("go")
    with pytest.raises(ValueError, match=r"give an event 1\.\.\d+"):
        s.fork(at=at)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"give an event 1\.\.\d+"):
        s.restore(at=at)  # type: ignore[arg-type]


def test_a_fork_resumes_from_another_handle_like_any_session(db: Path) -> None:
    parent = Agent("p", model="demo:loop?steps=6", store=db).run("loop")
    fork_id = parent.fork(at=9).id
    again = open_session(fork_id[:8], store=db)
    again.resume().wait(timeout=30)
    assert again.status == "done" and again.row.parent_id == parent.id


def test_a_restore_to_the_newest_event_is_refused(db: Path) -> None:
    s = Agent("p", model="demo:fix", store=db).run("go")
    with pytest.raises(ValueError, match="nothing to restore"):
        s.restore(at=s.row.last_seq)
    with pytest.raises(InvalidSessionState):
        Agent("q", model="demo:fix", store=db).run("go").stop()


def test_a_restore_command_for_a_running_session_pauses_it_then_rewinds(db: Path) -> None:
    s = Agent("p", model="demo:loop?steps=100000&pace=0.01", store=db).start("loop")
    deadline = time.monotonic() + 10
    while s.row.last_seq < 12 and time.monotonic() < deadline:
        time.sleep(0.02)
    s.store.send_command(s.id, "restore", {"at": 4}, actor="from-the-sidebar")
    deadline = time.monotonic() + 10
    while s.events[-1].kind is not EventKind.RESTORE and time.monotonic() < deadline:
        time.sleep(0.05)
    restore = s.events[-1]
    assert restore.kind is EventKind.RESTORE and restore.actor == "from-the-sidebar"
    assert restore.payload["to_seq"] == 4 and s.status == "paused"
    paused = s.events[-2]
    assert paused.payload == {"status": "paused", "reason": "paused by from-the-sidebar"}
    s.stop()


def test_a_fork_runs_in_a_python_namespace_of_its_own(db: Path) -> None:
    model = ScriptedModel(
        [call("python", code="x = 41"), call("python", code="print(x + 1)"), reply("ok")]
    )
    parent = Agent("p", model=model, store=db, tools=["python"]).run("count")
    outputs = [e.payload["output"] for e in parent.events if e.kind is EventKind.TOOL_RESULT]
    assert "42" in outputs[1]
    fork = parent.fork(at=seq_of(parent, EventKind.TOOL_RESULT, 1))
    fork.resume().wait(timeout=30)
    forked = [e.payload["output"] for e in fork.events if e.kind is EventKind.TOOL_RESULT]
    assert "NameError" in forked[-1]  # nothing leaks between the two sessions' namespaces


def test_undoing_a_restore_keeps_the_whole_conversation_after_later_snapshots(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=200", store=db, max_steps=1000).run("loop")
    s.restore(at=21)
    s.restore(at=251)  # forward again, into the branch the first restore left
    s.resume().wait(timeout=60)
    assert s.status == "done"
    newest = s.store.latest_snapshot(s.id)
    assert newest is not None and newest[0] > s.events[-1].seq - 100  # taken after the undo
    folded = SessionState.fold(s.id, s.events)
    loaded = load_state(s.store, s.id)
    assert len(loaded.messages) == len(folded.messages)
    assert loaded.comparable() == folded.comparable()


def test_many_restores_load_in_time_linear_in_the_log(db: Path) -> None:
    s = Agent("p", model="demo:loop?steps=10", store=db).run("loop")
    for _ in range(30):
        s.restore(at=s.row.last_seq - 1)  # each one undoes the one before
    started = time.monotonic()
    loaded = load_state(s.store, s.id)
    folded = SessionState.fold(s.id, s.events)
    assert time.monotonic() - started < 2
    assert loaded.comparable() == folded.comparable()


def test_restoring_a_fork_to_before_its_fork_point_keeps_it_in_its_own_workspace(
    db: Path, tmp_path: Path
) -> None:
    s = Agent("w", model=writer_script(), store=db, workspace=tmp_path / "ws").run("write")
    fork = s.fork(at=seq_of(s, EventKind.TOOL_RESULT, 2), workspace=tmp_path / "fork-ws")
    fork.restore(at=seq_of(s, EventKind.TOOL_RESULT, 1))
    state = fork.state
    assert (state.id, state.workspace) == (fork.id, str(tmp_path / "fork-ws"))
    assert state.name == fork.name and (tmp_path / "fork-ws/a.txt").read_text() == "one"
    assert (tmp_path / "ws/a.txt").read_text() == "three"  # the parent's files are untouched
    assert load_state(s.store, fork.id).comparable() == (
        SessionState.fold(fork.id, fork.events).comparable()
    )


def test_a_restore_refused_for_a_session_another_process_holds_touches_no_file(
    db: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    s = Agent("w", model=writer_script(), store=db, workspace=ws).run("write")
    s.release()
    other = this_process("rt-someone-else", "someone", time.time())
    s.store.register_runtime(other)
    s.store.acquire_lease(s.id, other.id, now=time.time())
    with pytest.raises(SessionLeased):
        restore_session(
            s.store, s.id, 1, actor="me", clock=SystemClock(), runtime_id="rt-not-the-holder"
        )
    assert (ws / "a.txt").read_text() == "three" and (ws / "b/c.txt").exists()
    assert s.events[-1].kind is not EventKind.RESTORE
