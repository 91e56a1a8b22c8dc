"""Policy: per tool, a call runs, waits for a person, or is refused; decisions come from any
handle or process, and a pause while a call waits keeps it waiting across a resume."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_agent import (
    Agent,
    ApprovalRequest,
    ConfigError,
    EventKind,
    Session,
    open_session,
    tool,
)
from jupyter_agent.testing import ScriptedModel, call, calls, reply


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def writer() -> ScriptedModel:
    return ScriptedModel([call("write_file", path="a.txt", content="hi"), reply("done")])


def wait_for(session, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while session.status != status:
        assert time.monotonic() < deadline, f"still {session.status}"
        time.sleep(0.02)


def left_waiting(s: Session) -> tuple[ApprovalRequest, dict[str, object]]:
    """Pause a session waiting for a person and release it (no process runs it): return the
    request it waits on and the arguments of a decision on it, as the REST API queues them."""
    wait_for(s, "awaiting_approval")
    (waiting,) = s.pending_approvals
    s.pause()
    wait_for(s, "paused")
    s.release()
    return waiting, {"call_id": waiting.call_id, "reason": "", "asked": waiting.seq}


def test_an_ask_rule_waits_for_approval_then_runs_the_call(db: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    s = Agent("a", model=writer(), store=db, workspace=ws, policy={"write_file": "ask"}).start(
        "write"
    )
    wait_for(s, "awaiting_approval")
    [waiting] = s.pending_approvals
    assert (waiting.name, waiting.reason) == ("write_file", "policy")
    assert not (ws / "a.txt").exists()
    s.approve(waiting.call_id)
    assert s.wait(timeout=10) == "done"
    assert (ws / "a.txt").read_text() == "hi"
    decided = next(e for e in s.events if e.kind is EventKind.APPROVAL_DECIDED)
    result = next(e for e in s.events if e.kind is EventKind.TOOL_RESULT)
    assert decided.payload["decision"] == "approve" and "rerun" not in result.payload


def test_a_second_decision_on_a_call_before_the_first_is_recorded_says_so(
    db: Path, tmp_path: Path
) -> None:
    """Approve twice in quick succession (a double click, a repeated magic): the second says
    the call is decided already, rather than "approved" again for a decision never recorded
    (the first is what runs, once)."""
    import sqlite3

    s = Agent("a", model=writer(), store=db, workspace=tmp_path / "ws", policy={"*": "ask"}).start(
        "write"
    )
    wait_for(s, "awaiting_approval")
    call_id = s.pending_approvals[0].call_id
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the engine cannot record the decision for now
    try:
        s.approve(call_id)
        time.sleep(0.2)  # the engine has taken it (it looks every 50 ms) and waits to write
        assert [a.call_id for a in s.pending_approvals] == [call_id]
        for again in (s.approve, s.deny):
            with pytest.raises(ValueError) as caught:
                again(call_id)
            assert str(caught.value) == (
                f"call {call_id!r} of session {s.id} is approved already; the session acts on "
                "it at its next step"
            )
    finally:
        other.execute("COMMIT")
        other.close()
    assert s.wait(timeout=10) == "done"
    decided = [e for e in s.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert [e.payload["decision"] for e in decided] == ["approve"]
    assert (tmp_path / "ws/a.txt").read_text() == "hi"


def test_a_call_asked_about_again_after_a_restore_takes_a_new_decision(
    db: Path, tmp_path: Path
) -> None:
    """Approved and recorded, then restored to the request itself: the call waits again under
    the same request, and a person decides afresh (here: denies)."""
    model = ScriptedModel([call("write_file", path="a.txt", content="hi"), reply("done")] * 2)
    s = Agent("a", model=model, store=db, workspace=tmp_path / "ws", policy={"*": "ask"}).start(
        "write"
    )
    wait_for(s, "awaiting_approval")
    call_id = s.pending_approvals[0].call_id
    s.approve(call_id)
    assert s.wait(timeout=10) == "done"
    asked = next(e for e in s.events if e.kind is EventKind.APPROVAL_REQUESTED)
    s.restore(at=asked.seq)
    assert [(a.call_id, a.seq) for a in s.pending_approvals] == [(call_id, asked.seq)]
    s.deny(call_id, reason="changed my mind")
    assert s.wait(timeout=10) == "done"
    decided = [e.payload["decision"] for e in s.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert decided == ["approve", "deny"]


def test_of_two_decisions_queued_for_a_session_nobody_runs_the_first_is_the_one(
    db: Path, tmp_path: Path
) -> None:
    """Commands left in the store (as another client leaves them) for a call waiting in a
    session no process runs: the run that resumes it acts on the first, not the last."""
    ws = tmp_path / "ws"
    s = Agent("a", model=writer(), store=db, workspace=ws, policy={"*": "ask"}).start("write")
    waiting, args = left_waiting(s)
    s.store.send_command(s.id, "approve", args, actor="alice")
    s.store.send_command(s.id, "deny", {**args, "reason": "no"}, actor="bob")
    with pytest.raises(ValueError, match=r"is approved already \(by alice\)"):
        s.deny(waiting.call_id)  # here too (the notebook, `jupyter-agent resume --deny`)
    s.resume()
    assert s.wait(timeout=10) == "done"
    (decided,) = [e for e in s.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert (decided.payload["decision"], decided.actor) == ("approve", "alice")
    assert (ws / "a.txt").read_text() == "hi"


def test_a_decision_given_in_a_process_that_ends_at_once_is_kept(db: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    s = Agent("a", model=writer(), store=db, workspace=ws, policy={"*": "ask"}).start("write")
    waiting, _ = left_waiting(s)
    script = f"""
import os
from jupyter_agent import open_session
import time
from jupyter_agent.testing import ScriptedModel
never = ScriptedModel(lambda r: time.sleep(60))  # (the process ends while the model thinks)
s = open_session({s.id!r}, store={str(db)!r}, model=never)
s.deny({waiting.call_id!r}, reason="not today")
os._exit(0)  # (no clean exit: the run it started here dies with it)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    s.resume()
    assert s.wait(timeout=10) == "done"
    decided = [e for e in s.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert [(e.payload["decision"], e.payload["reason"]) for e in decided] == [
        ("deny", "not today")
    ]
    assert not (ws / "a.txt").exists()


def test_a_decision_through_a_handle_that_cannot_run_the_session_is_kept(
    db: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    s = Agent("a", model=writer(), store=db, workspace=ws, policy={"*": "ask"}).start("write")
    waiting, _ = left_waiting(s)
    bare = open_session(s.id, store=db)  # (its model was an object: this handle cannot run it)
    with pytest.raises(ConfigError, match="the decision is kept in the store"):
        bare.deny(waiting.call_id, reason="later")
    s.resume()  # a handle that can: it acts on the decision given
    assert s.wait(timeout=10) == "done"
    decided = [e for e in s.events if e.kind is EventKind.APPROVAL_DECIDED]
    assert [e.payload["reason"] for e in decided] == ["later"]


def test_a_decision_the_engine_could_not_record_can_be_given_again(tmp_path: Path) -> None:
    """The engine took the approval but the store stayed locked past its timeout: the run
    stops with the call still waiting, and the same approval goes through again."""
    import sqlite3

    from jupyter_agent import SqliteStore

    db = tmp_path / "agent.db"
    store = SqliteStore(db, busy_timeout_s=0.3)
    s = Agent(
        "a", model=writer(), store=store, workspace=tmp_path / "ws", policy={"*": "ask"}
    ).start("write")
    wait_for(s, "awaiting_approval")
    call_id = s.pending_approvals[0].call_id
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # longer than the store waits: recording the decision fails
    try:
        s.approve(call_id)
        deadline = time.monotonic() + 10
        while s.running_here:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        other.execute("COMMIT")
        other.close()
    assert [a.call_id for a in s.pending_approvals] == [call_id]
    s.approve(call_id)
    assert s.wait(timeout=10) == "done"
    assert (tmp_path / "ws/a.txt").read_text() == "hi"


def test_wait_after_an_approval_does_not_return_before_the_engine_takes_it() -> None:
    """``Session.wait`` stops at a call waiting for a person, but not once a decision on it
    is posted: the engine polls for it, and until it takes it the session's status still
    says ``awaiting_approval`` (a wait right after ``approve`` returned that, now and then)."""
    from jupyter_agent._inbox import Decision, Inbox

    box = Inbox()
    assert not box.rests_on_a_person()
    assert box.take_decision("c1", awaiting=True) is None  # the engine waits on c1
    assert box.rests_on_a_person()
    box.post_decision("c2", Decision(True, "ann"))  # another call's decision: still waits
    assert box.rests_on_a_person()
    box.post_decision("c1", Decision(True, "ann"))  # posted, not taken yet
    assert not box.rests_on_a_person()
    assert box.take_decision("c1", awaiting=True) == Decision(True, "ann")
    assert not box.rests_on_a_person()
    box.take_decision("c3", awaiting=True)
    box.stop_awaiting()  # the wait was cut short (a pause)
    assert not box.rests_on_a_person()


def test_a_decision_taken_as_a_pause_cut_the_wait_short_is_kept_for_the_next_run() -> None:
    """The engine took a decision just as a pause ended its wait: it gives it back, and the
    next run takes it, unless a newer one came meanwhile."""
    from jupyter_agent._inbox import Decision, Inbox

    box = Inbox()
    box.activate()
    box.post_decision("c1", Decision(True, "ann"))
    taken = box.take_decision("c1", awaiting=True)
    assert taken is not None and box.in_flight("c1", None) == taken
    box.give_back("c1", taken)
    box.deactivate()
    box.activate()  # the next run (it forgets decisions taken and not recorded)
    assert box.take_decision("c1") == Decision(True, "ann")
    box.post_decision("c2", Decision(True, "ann"))
    old = box.take_decision("c2")
    assert old is not None
    box.post_decision("c2", Decision(False, "bob"))  # came while the old one was held
    box.give_back("c2", old)
    assert box.take_decision("c2") == Decision(False, "bob")


def test_a_denied_call_is_skipped_and_the_model_is_told_who_and_why(
    db: Path, tmp_path: Path
) -> None:
    s = Agent("a", model=writer(), store=db, workspace=tmp_path / "ws", policy={"*": "ask"}).start(
        "write"
    )
    wait_for(s, "awaiting_approval")
    s.deny(s.pending_approvals[0].call_id, reason="not today")
    assert s.wait(timeout=10) == "done"
    result = next(e for e in s.events if e.kind is EventKind.TOOL_RESULT)
    assert result.payload["skipped"] and "denied it (not today)" in result.payload["output"]
    assert not (tmp_path / "ws/a.txt").exists()


def test_a_deny_rule_refuses_the_call_without_asking(db: Path, tmp_path: Path) -> None:
    s = Agent(
        "a", model=writer(), store=db, workspace=tmp_path / "ws", policy={"write_file": "deny"}
    ).run("write")
    assert s.status == "done"
    result = next(e for e in s.events if e.kind is EventKind.TOOL_RESULT)
    assert result.payload["is_error"] and "policy does not allow" in result.payload["output"]
    assert not any(e.kind is EventKind.APPROVAL_REQUESTED for e in s.events)


def test_a_call_waiting_through_a_pause_still_waits_and_runs_once_approved(
    db: Path, tmp_path: Path
) -> None:
    s = Agent(
        "a", model=writer(), store=db, workspace=tmp_path / "ws", policy={"write_file": "ask"}
    ).start("write")
    wait_for(s, "awaiting_approval")
    s.pause()
    wait_for(s, "paused")
    s.resume()
    wait_for(s, "awaiting_approval")
    again = open_session(s.id, store=db)  # another handle, as the widget or a magic has
    again.approve(again.pending_approvals[0].call_id)
    assert s.wait(timeout=10) == "done"
    assert (tmp_path / "ws/a.txt").read_text() == "hi"
    asked = [e for e in s.events if e.kind is EventKind.APPROVAL_REQUESTED]
    assert len(asked) == 1


def test_the_policy_is_recorded_with_the_session_so_a_resume_keeps_it(db: Path) -> None:
    s = Agent("a", model="demo:fix", store=db, policy={"shell": "ask"}).start("go")
    wait_for(s, "awaiting_approval")
    assert s.state.policy == {"shell": "ask"}


@pytest.mark.parametrize("policy", [{"shell": "maybe"}, {"": "ask"}])
def test_a_bad_policy_is_a_clear_error(db: Path, policy: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="polic"):
        Agent("a", model="demo:fix", store=db, policy=policy)


def test_a_policy_naming_a_tool_the_agent_has_not_is_refused(db: Path) -> None:
    """A typo ('write_files') would otherwise leave the tool it meant allowed."""
    with pytest.raises(ValueError) as caught:
        Agent(
            "a",
            model="demo:fix",
            tools=["shell", "write_file"],
            store=db,
            policy={"write_files": "deny"},
        )
    assert str(caught.value) == (
        "the policy names 'write_files', which is not one of this agent's tools "
        "(shell, write_file); use '*' for any other tool"
    )
    Agent("a", model="demo:fix", tools=["shell"], store=db, policy={"*": "ask"})  # any other


def test_run_returns_when_a_call_waits_for_a_person(db: Path) -> None:
    s = Agent("a", model="demo:fix", store=db, policy={"shell": "ask"}).run("go", timeout=10)
    assert s.status == "awaiting_approval" and s.running_here
    s.stop()
    assert s.wait(timeout=10) == "stopped"


def test_calls_after_one_that_waits_are_neither_in_doubt_nor_run_before_it(
    db: Path, tmp_path: Path
) -> None:
    both = calls(
        call("shell", command="echo first"),
        call("write_file", path="x.txt", content="second"),
    )
    ws = tmp_path / "ws"
    s = Agent(
        "a",
        model=ScriptedModel([both, reply("done")]),
        store=db,
        workspace=ws,
        policy={"shell": "ask"},
    ).start("two calls")
    wait_for(s, "awaiting_approval")
    s.pause()
    wait_for(s, "paused")
    s.resume()
    wait_for(s, "awaiting_approval")
    assert [(a.name, a.reason) for a in s.pending_approvals] == [("shell", "policy")]
    assert not (ws / "x.txt").exists()  # the second call waits behind the first
    s.approve(s.pending_approvals[0].call_id)
    assert s.wait(timeout=10) == "done"
    results = [e.payload for e in s.events if e.kind is EventKind.TOOL_RESULT]
    assert [r["name"] for r in results] == ["shell", "write_file"]
    assert not any(r.get("rerun") for r in results)


def test_a_decision_left_for_a_request_that_a_restore_undid_decides_nothing_after_it(
    db: Path,
) -> None:
    """Bob approves pay(1) while no process runs the session; Ann restores to before the
    model asked, resumes, and the model asks pay(1000) under the same call id: Bob's
    approval answered the other request, so this one waits for a person."""
    paid: list[int] = []
    asked: list[int] = []

    @tool(effect="side_effect")
    def pay(amount: int) -> str:
        """Pays."""
        paid.append(amount)
        return f"paid {amount}"

    def turn(request):
        if request.step > 1:
            return reply("done")
        asked.append(1 if not asked else 1000)
        return call("pay", amount=asked[-1])

    s = Agent("p", model=ScriptedModel(turn), store=db, tools=[pay], policy={"pay": "ask"})
    s = s.start("pay")
    waiting, args = left_waiting(s)
    s.store.send_command(s.id, "approve", args, actor="bob")  # as the REST API leaves it
    answer = next(e.seq for e in s.events if e.kind is EventKind.MODEL_RESPONSE)
    s.restore(at=answer - 1)  # before the model's answer
    s.resume()
    wait_for(s, "awaiting_approval")
    time.sleep(1.0)  # the process has taken Bob's command by now (every half second)
    assert s.store.take_commands(s.id, taken_by="test") == []
    assert asked == [1, 1000] and paid == [] and s.status == "awaiting_approval"
    (again,) = s.pending_approvals
    assert again.call_id == waiting.call_id and again.seq > waiting.seq
    s.approve(again.call_id)
    assert s.wait(10) == "done" and paid == [1000]
