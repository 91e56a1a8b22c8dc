"""The agent loop through the public API, on a real store file and scripted models."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from logs import cut_log, gated_tool, paused_after_a_call

from jupyter_agent import (
    Agent,
    EventKind,
    InvalidSessionState,
    SqliteStore,
    ToolContext,
    open_session,
    tool,
)
from jupyter_agent._clock import SystemClock
from jupyter_agent._engine import (
    BLOB_THRESHOLD,
    RECORD_RUNNING_AFTER_S,
    SESSION_ROW_EVERY_S,
    SNAPSHOT_EVERY,
    record_outside,
)
from jupyter_agent._events import Event
from jupyter_agent._runtime import get_runtime
from jupyter_agent._state import SessionState, load_state
from jupyter_agent.testing import FakeClock, ScriptedModel, call, call_raw, calls, reply


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def kinds(session) -> list[str]:
    return [e.kind.value for e in session.events]


def results(session) -> list[dict]:
    return [e.payload for e in session.events if e.kind is EventKind.TOOL_RESULT]


def live_state(session) -> SessionState:
    task = get_runtime().task(session.id)
    assert task is not None
    state = task.result(timeout=60)
    assert isinstance(state, SessionState)
    return state


def test_200_step_demo_session_events_rebuild_the_live_state(db: Path) -> None:
    agent = Agent("long", model="demo:loop?steps=200", store=db, max_steps=1000)
    s = agent.start("run the loop")
    live = live_state(s)
    assert s.status == "done" and live.steps == 201 and live.tool_calls == 200
    from_scratch = SessionState.fold(s.id, agent.store.iter_events(s.id))
    from_snapshot = load_state(agent.store, s.id)
    assert agent.store.latest_snapshot(s.id) is not None  # the snapshot path is exercised
    assert from_scratch.comparable() == live.comparable()
    assert from_snapshot.comparable() == live.comparable()
    assert s.result and s.row.steps == 201 and s.row.last_seq == live.last_seq


def test_a_finished_session_records_its_answers_and_results_in_order(db: Path) -> None:
    model = ScriptedModel([call("list_files"), reply("nothing much here")])
    s = Agent("a", model=model, store=db).run("look around")
    assert kinds(s) == [
        "session_started",
        "model_response",
        "tool_result",  # a quick read-only call's result is its own intent (no tool_call)
        "model_response",
        "session_finished",
    ]
    assert s.status == "done" and s.result == "nothing much here"
    (result,) = results(s)
    assert result["arguments"] == "{}" and result["effect"] == "read_only"
    assert s.state.tool_calls == s.row.tool_calls == 1
    # what the model was sent: the goal, then also its call and the call's result
    sent = [e.payload["messages"] for e in s.events if e.kind is EventKind.MODEL_RESPONSE]
    assert sent == [len(model.requests[0].messages), len(model.requests[1].messages)] == [1, 3]


def test_invalid_json_arguments_reach_the_model_as_an_error_result(db: Path) -> None:
    model = ScriptedModel([call_raw("write_file", "{not json"), reply("ok")])
    s = Agent("a", model=model, store=db).run("write")
    (res,) = results(s)
    assert res["is_error"] and "invalid arguments for write_file" in res["output"]
    tool_msgs = [m for m in model.requests[-1].messages if m.role == "tool"]
    assert tool_msgs[0].is_error and "invalid arguments" in tool_msgs[0].content
    assert s.status == "done"


def test_arguments_of_the_wrong_type_reach_the_model_as_an_error_result(db: Path) -> None:
    model = ScriptedModel([call("read_file", path=12), reply("ok")])
    s = Agent("a", model=model, store=db).run("read")
    (res,) = results(s)
    assert res["is_error"] and "path" in res["output"]


def test_an_unknown_tool_is_an_error_result_not_a_crash(db: Path) -> None:
    model = ScriptedModel([call("launch_rockets"), reply("ok")])
    s = Agent("a", model=model, store=db, tools=["read_file"]).run("go")
    (res,) = results(s)
    assert res["is_error"] and "unknown tool 'launch_rockets'" in res["output"]
    assert s.status == "done"


def test_a_tool_that_raises_is_an_error_result_and_the_session_goes_on(db: Path) -> None:
    @tool
    def flaky() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    model = ScriptedModel([call("flaky"), reply("recovered")])
    s = Agent("a", model=model, store=db, tools=[flaky]).run("go")
    (res,) = results(s)
    assert res["is_error"] and "RuntimeError: disk on fire" in res["output"]
    assert "disk on fire" in res["error"]
    assert s.result == "recovered"


def test_parallel_tool_calls_run_in_order_and_each_gets_a_result(db: Path) -> None:
    model = ScriptedModel(
        [
            calls(call("write_file", path="a.txt", content="A"), call("read_file", path="a.txt")),
            reply("done"),
        ]
    )
    s = Agent("a", model=model, store=db, workspace=db.parent / "ws").run("go")
    assert [r["name"] for r in results(s)] == ["write_file", "read_file"]
    assert "A" in results(s)[1]["output"]


def test_calls_sharing_an_id_in_one_answer_each_run_and_get_their_own_result(db: Path) -> None:
    """Some servers give several calls of one answer the same id: each still waits for its
    approval, runs and gets a result under an id of its own."""
    from jupyter_agent._models._base import ModelResponse, ToolCallRequest

    twice = ModelResponse(
        tool_calls=(
            ToolCallRequest("call_0", "write_file", json.dumps({"path": "a.txt", "content": "A"})),
            ToolCallRequest("call_0", "write_file", json.dumps({"path": "b.txt", "content": "B"})),
        ),
        stop_reason="tool_use",
    )
    ws = db.parent / "ws"
    model = ScriptedModel([twice, reply("done")])
    s = Agent("a", model=model, store=db, workspace=ws, policy={"write_file": "ask"}).start("go")
    for expected in ("call_0", "call_0-2"):
        assert s.wait(10) == "awaiting_approval"
        (waiting,) = s.pending_approvals
        assert waiting.call_id == expected
        s.approve(expected)
    assert s.wait(10) == "done"
    assert [r["call_id"] for r in results(s)] == ["call_0", "call_0-2"]
    assert (ws / "a.txt").read_text() == "A" and (ws / "b.txt").read_text() == "B"
    answer = next(e for e in s.events if e.kind is EventKind.MODEL_RESPONSE)
    assert [c["id"] for c in answer.payload["tool_calls"]] == ["call_0", "call_0-2"]


def test_max_steps_stops_the_session_with_a_budget_event(db: Path) -> None:
    model = ScriptedModel(lambda req: call("list_files"))
    s = Agent("a", model=model, store=db, max_steps=3).run("loop forever")
    assert s.status == "stopped"
    (hit,) = [e.payload for e in s.events if e.kind is EventKind.BUDGET_EXCEEDED]
    assert hit == {"kind": "steps", "limit": 3, "used": 3}
    assert s.row.steps == 3


def test_a_model_that_fails_ends_the_session_failed_with_the_cause(db: Path) -> None:
    def broken(req):
        raise ConnectionError("provider unreachable")

    s = Agent("a", model=ScriptedModel(broken), store=db).run("go")
    assert s.status == "failed"
    err = next(e.payload for e in s.events if e.kind is EventKind.ERROR)
    assert err["where"] == "model" and "provider unreachable" in err["message"]


def test_large_tool_output_is_kept_whole_in_a_blob(db: Path) -> None:
    @tool(effect="read_only")
    def big() -> str:
        """Lots of text."""
        return "y" * 100_000

    s = Agent("a", model=ScriptedModel([call("big"), reply("ok")]), store=db, tools=[big]).run("go")
    (res,) = results(s)
    assert len(res["output"]) < 20_000 and "output cut" in res["output"]
    assert s.store.get_blob(res["output_blob"]).decode() == "y" * 100_000


def test_update_plan_is_part_of_the_session_state(db: Path) -> None:
    model = ScriptedModel(
        [
            call(
                "update_plan",
                steps=[{"step": "look", "status": "done"}, {"step": "fix", "status": "active"}],
            ),
            reply("ok"),
        ]
    )
    s = Agent("a", model=model, store=db).run("plan")
    assert [(p.step, p.status) for p in s.plan] == [("look", "done"), ("fix", "active")]


# -- people in the loop ----------------------------------------------------------------------


def test_tell_is_recorded_with_its_author_and_reaches_the_model(db: Path) -> None:
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), reply("done")])
    s = Agent("a", model=model, store=db, tools=[wait_gate]).start("go")
    assert entered.wait(10)
    s.tell("also check the error rate")
    gate.set()
    assert s.wait(10) == "done"
    (msg,) = [e for e in s.events if e.kind is EventKind.MESSAGE]
    assert msg.payload["text"] == "also check the error rate" and msg.actor != "agent"
    last = model.requests[-1].messages[-1]
    assert last.role == "user" and last.content == "also check the error rate"


def test_pause_stops_at_the_boundary_and_resume_continues(db: Path) -> None:
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), call("list_files"), reply("done")])
    s = Agent("a", model=model, store=db, tools=[wait_gate, "list_files"]).start("go")
    assert entered.wait(10)
    s.pause()
    gate.set()
    assert s.wait(10) == "paused"
    assert kinds(s)[-1] == "status_changed" and s.row.steps == 1
    s.resume()
    assert s.wait(10) == "done" and s.row.steps == 3


def test_stop_ends_the_session_and_it_cannot_be_resumed(db: Path) -> None:
    wait_gate, gate, entered = gated_tool()
    s = Agent(
        "a", model=ScriptedModel([call("wait_gate"), reply("x")]), store=db, tools=[wait_gate]
    ).start("go")
    assert entered.wait(10)
    s.stop()
    gate.set()
    assert s.wait(10) == "stopped"
    with pytest.raises(InvalidSessionState, match="it is stopped"):
        s.resume()


# -- in-doubt calls (the crash itself is in test_crash.py; here the log is cut by hand) -------


def crashed_session(db: Path, tool_obj, *, effect_name: str) -> str:
    """A session whose process 'died' after recording a tool call's intent."""
    model = ScriptedModel([call(effect_name), reply("finished")])
    s = Agent("a", model=model, store=db, tools=[tool_obj], max_steps=5).run("go")
    cut_log(s, after=EventKind.TOOL_CALL)
    return s.id


def test_in_doubt_side_effect_call_waits_for_a_person_and_deny_skips_it(db: Path) -> None:
    ran: list[str] = []

    @tool(effect="side_effect")
    def charge_card() -> str:
        """Charges the card."""
        ran.append("charged")
        return "charged"

    sid = crashed_session(db, charge_card, effect_name="charge_card")
    ran.clear()
    crashed = db.parent / "crashed.db"
    model = ScriptedModel([call("charge_card"), reply("finished")])
    s = open_session(sid, store=crashed, tools=[charge_card], model=model)
    s.resume()
    assert s.wait(10) == "awaiting_approval"
    (pending,) = s.pending_approvals
    assert pending.name == "charge_card" and pending.reason == "in_doubt"
    assert ran == []
    s.deny(pending.call_id, reason="already charged, checked the bank")
    assert s.wait(10) == "done"
    assert ran == []
    decided = next(e for e in s.events if e.kind is EventKind.APPROVAL_DECIDED)
    assert decided.payload["decision"] == "deny" and decided.actor != "agent"
    res = results(s)[-1]
    assert res["skipped"] and "already charged" in res["output"]


def test_in_doubt_side_effect_call_runs_again_when_approved(db: Path) -> None:
    ran: list[str] = []

    @tool(effect="side_effect")
    def send_mail() -> str:
        """Sends mail."""
        ran.append("sent")
        return "sent"

    sid = crashed_session(db, send_mail, effect_name="send_mail")
    ran.clear()
    s = open_session(
        sid,
        store=db.parent / "crashed.db",
        tools=[send_mail],
        model=ScriptedModel([call("send_mail"), reply("finished")]),
    )
    s.resume()
    assert s.wait(10) == "awaiting_approval"
    s.approve(s.pending_approvals[0].call_id)
    assert s.wait(10) == "done" and ran == ["sent"]
    assert results(s)[-1]["rerun"] is True


def test_in_doubt_read_only_call_is_rerun_without_asking(db: Path) -> None:
    ran: list[str] = []

    @tool(effect="read_only")
    def peek() -> str:
        """Reads, for long enough that its intent is written before its result."""
        ran.append("peeked")
        time.sleep(RECORD_RUNNING_AFTER_S * 3)
        return "value"

    sid = crashed_session(db, peek, effect_name="peek")
    ran.clear()
    s = open_session(
        sid,
        store=db.parent / "crashed.db",
        tools=[peek],
        model=ScriptedModel([call("peek"), reply("finished")]),
    )
    s.resume()
    assert s.wait(10) == "done" and ran == ["peeked"]
    assert not any(e.kind is EventKind.APPROVAL_REQUESTED for e in s.events)


def noting_tools(ran: list[str]) -> dict[str, Any]:
    """Two side-effect tools and an idempotent one, each noting in ``ran`` that it ran."""

    @tool(effect="side_effect")
    def charge_card() -> str:
        """Charges the card."""
        ran.append("charge_card")
        return "charged"

    @tool(effect="idempotent")
    def note() -> str:
        """Notes it down."""
        ran.append("note")
        return "noted"

    @tool(effect="side_effect")
    def send_mail() -> str:
        """Sends mail."""
        ran.append("send_mail")
        return "sent"

    return {"charge_card": charge_card, "note": note, "send_mail": send_mail}


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_calls_after_an_in_doubt_call_wait_behind_it_and_then_run_as_never_started(
    db: Path, decision: str
) -> None:
    """Calls run one after another: after the call a crash cut short, the calls of the same
    turn never started. They are neither run before the person decides on it (out of the
    model's order) nor called in doubt themselves."""
    ran: list[str] = []
    three = calls(call("charge_card"), call("note"), call("send_mail"))
    tools = list(noting_tools(ran).values())
    s = Agent("a", model=ScriptedModel([three, reply("finished")]), store=db, tools=tools)
    done = s.run("go")
    crashed = cut_log(done, after=EventKind.TOOL_CALL, last=True)  # died in charge_card
    ran.clear()
    model = ScriptedModel([reply("finished")])
    resumed = open_session(done.id, store=crashed, tools=tools, model=model)
    resumed.resume()
    assert resumed.wait(10) == "awaiting_approval"
    assert [(a.name, a.reason) for a in resumed.pending_approvals] == [("charge_card", "in_doubt")]
    assert ran == []  # nothing runs before the person decides on the first call
    call_id = resumed.pending_approvals[0].call_id
    if decision == "approve":
        resumed.approve(call_id)
    else:
        resumed.deny(call_id, reason="it went through")
    assert resumed.wait(10) == "done"
    first = ["charge_card"] if decision == "approve" else []
    assert ran == [*first, "note", "send_mail"]
    res = {r["name"]: r for r in results(resumed)}
    assert res["charge_card"].get("rerun", False) is (decision == "approve")
    assert not res["note"].get("rerun") and not res["send_mail"].get("rerun")
    asked = [e.payload["name"] for e in resumed.events if e.kind is EventKind.APPROVAL_REQUESTED]
    assert asked == ["charge_card"]


def test_a_log_that_asks_about_two_calls_waits_on_the_first_whichever_is_decided_first(
    db: Path,
) -> None:
    """An older version asked about every open call after a crash. A decision on the second
    waits behind the first (it ran the engine again and again: a status pair a pass)."""
    ran: list[str] = []
    tools = list(noting_tools(ran).values())
    model = ScriptedModel([calls(call("charge_card"), call("send_mail")), reply("finished")])
    done = Agent("a", model=model, store=db, tools=tools).run("go")
    crashed = cut_log(done, after=EventKind.TOOL_CALL, last=True)
    first, second = [e.payload for e in done.events if e.kind is EventKind.TOOL_CALL]
    with SqliteStore(crashed) as store:
        for c in (first, second):
            payload = {"call_id": c["call_id"], "name": c["name"], "reason": "in_doubt"}
            record_outside(
                store,
                done.id,
                EventKind.APPROVAL_REQUESTED,
                payload,
                actor="agent",
                clock=SystemClock(),
            )
    ran.clear()
    s = open_session(done.id, store=crashed, tools=tools, model=ScriptedModel([reply("done")]))
    s.resume()
    assert s.wait(10) == "awaiting_approval"
    s.approve(second["call_id"])
    time.sleep(0.3)
    before = len(s.events)
    time.sleep(0.5)
    assert len(s.events) == before and ran == []  # still: nothing runs before the first
    s.approve(first["call_id"])
    assert s.wait(10) == "done" and ran == ["charge_card", "send_mail"]


def test_approving_a_call_that_is_not_waiting_is_a_clear_error(db: Path) -> None:
    s = Agent("a", model=ScriptedModel([reply("hi")]), store=db).run("go")
    with pytest.raises(ValueError, match="no call 'nope' waits for approval"):
        s.approve("nope")


def test_resuming_needs_the_sessions_own_tools(db: Path) -> None:
    @tool
    def mine() -> str:
        """Mine."""
        return "x"

    wait_gate, gate, entered = gated_tool()
    s = Agent(
        "a", model=ScriptedModel([call("wait_gate")]), store=db, tools=[wait_gate, mine]
    ).start("go")
    assert entered.wait(10)
    s.pause()
    gate.set()
    s.wait(10)
    s.release()  # as if another process picked it up: it has only the store
    from jupyter_agent import ConfigError

    with pytest.raises(ConfigError, match="uses tools not given here: wait_gate, mine"):
        open_session(s.id, store=db).resume()


def test_a_workspace_that_cannot_be_made_is_one_line_and_no_session(
    db: Path, tmp_path: Path
) -> None:
    from jupyter_agent import ConfigError, sessions

    (tmp_path / "a-file").write_text("not a folder")
    agent = Agent("a", model="demo", store=db, workspace=tmp_path / "a-file" / "ws")
    with pytest.raises(ConfigError) as caught:
        agent.start("go")
    assert str(caught.value).startswith(f"cannot make the workspace {tmp_path / 'a-file' / 'ws'}:")
    assert "give another workspace=" in str(caught.value) and "\n" not in str(caught.value)
    assert not list(sessions(store=db))


# -- timers ----------------------------------------------------------------------------------


def test_sleep_records_a_durable_timer_on_the_sessions_clock(db: Path) -> None:
    clock = FakeClock(start=1_000.0)
    model = ScriptedModel([call("sleep", seconds=3600, reason="next check"), reply("awake")])
    s = Agent("a", model=model, store=db, clock=clock).run("nap")
    assert s.status == "done" and clock.now() == 4_600.0
    timer = next(e.payload for e in s.events if e.kind is EventKind.TIMER_SET)
    assert timer["wake_at"] == 4_600.0
    assert EventKind.TIMER_FIRED.value in kinds(s)


def test_a_call_id_used_again_in_a_later_step_sleeps_again(db: Path) -> None:
    """Some servers number calls per answer (every step's call is ``call_0``): a finished
    call's timers are over, so a later call given its id waits for its own."""
    from jupyter_agent._models._base import ModelResponse, ToolCallRequest

    nap = ModelResponse(
        tool_calls=(ToolCallRequest("call_0", "sleep", json.dumps({"seconds": 60})),),
        stop_reason="tool_use",
    )
    clock = FakeClock(start=0.0)
    s = Agent("a", model=ScriptedModel([nap, nap, reply("up")]), store=db, clock=clock).run("go")
    assert s.status == "done" and clock.now() == 120.0
    assert len([e for e in s.events if e.kind is EventKind.TIMER_FIRED]) == 2
    assert s.state.fired_timers == [] and s.state.timers == {}  # nothing kept of them


def test_events_are_json_with_a_chained_hash(db: Path) -> None:
    s = Agent("a", model=ScriptedModel([call("list_files"), reply("ok")]), store=db).run("go")
    from jupyter_agent._events import verify_chain

    assert verify_chain(s.events) is None
    for e in s.events:
        json.loads(e.payload_json)


@pytest.mark.parametrize(
    "spec", ["demo:fix", "demo:explore", "demo:loop?steps=8", "demo:watch?steps=4"]
)
def test_every_demo_scenario_runs_to_done_on_the_real_tools(db: Path, spec: str) -> None:
    s = Agent("demo", model=spec, store=db, clock=FakeClock()).run("show me")
    assert s.status == "done", s.timeline()
    failed = [r for r in results(s) if r["is_error"] and r["name"] != "shell"]
    assert failed == [], failed
    assert s.result


def test_workspace_escape_by_the_model_is_refused_and_nothing_outside_changes(
    db: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "link").symlink_to(tmp_path)
    model = ScriptedModel(
        [
            calls(
                call("read_file", path=str(outside)),
                call("write_file", path="../outside.txt", content="pwned"),
                call("edit_file", path="link/outside.txt", old="keep", new="lose"),
            ),
            reply("tried"),
        ]
    )
    s = Agent("a", model=model, store=db, workspace=ws).run("escape")
    assert [r["is_error"] for r in results(s)] == [True, True, True]
    assert all("WorkspaceEscape" in r["output"] for r in results(s))
    assert outside.read_text() == "keep me"


def test_a_timer_set_before_a_crash_keeps_its_wake_time_on_resume(db: Path) -> None:

    model = ScriptedModel([call("sleep", seconds=3600), reply("awake")])
    s = Agent("a", model=model, store=db, clock=FakeClock(start=1_000.0)).run("nap")
    crashed = cut_log(s, after=EventKind.TIMER_SET)
    later = FakeClock(start=2_000.0)  # the process came back 1,000 s later
    again = open_session(s.id, store=crashed, model=model, clock=later).resume()
    assert again.wait(10) == "done"
    assert later.now() == 4_600.0, "woke at the recorded time, not 3,600 s after the restart"
    assert [e.kind for e in again.events].count(EventKind.TIMER_SET) == 1


def test_the_row_columns_written_at_once_are_the_id_and_the_status() -> None:
    """A running engine writes the session row at once only when a column besides the
    running totals changes, and it looks at ``id`` and ``status`` for that (``_write``): a
    column added to the row's summary must be one of the totals, or the engine must look."""
    from jupyter_agent._state import session_totals

    running = {"last_seq", "last_hash", "steps", "tool_calls", "input_tokens", "output_tokens"}
    running |= {"cached_tokens", "cost_usd"}
    assert set(session_totals(SessionState(id="s"))) == {"id", "status"} | running


def test_a_long_call_after_quick_ones_shows_as_running(db: Path) -> None:
    """One timer serves call after call: armed by the first quick call, it fires while the
    long call runs, before that call is due, and re-arms itself for it; so the long call's
    intent is written once it has run RECORD_RUNNING_AFTER_S, as a lone long call's is. (Not
    later, with the row's totals: those are written SESSION_ROW_EVERY_S after the first step,
    and they do not count the long call yet when its intent shows.)"""

    @tool(effect="read_only")
    async def look() -> str:
        """Looks, for a fifth of RECORD_RUNNING_AFTER_S."""
        await anyio.sleep(RECORD_RUNNING_AFTER_S / 5)
        return "seen"

    wait_gate, gate, entered = gated_tool()
    looks = [call("look")] * 3  # the long call starts ~30 ms after the first, before its timer
    model = ScriptedModel([*looks, call("wait_gate"), reply("done")])
    store = SqliteStore(db)
    s = Agent("a", model=model, store=store, tools=[look, wait_gate]).start("go")
    assert entered.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        open_calls = load_state(store, s.id).open_calls.values()
        if [c.name for c in open_calls] == ["wait_gate"]:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the running call's intent was never written while it ran")
    assert store.get_session(s.id).tool_calls < 4, "written by the call's timer, not the row's"
    gate.set()
    assert s.wait(10) == "done"
    store.close()


def test_a_failed_write_ends_the_run_and_leaves_the_log_whole(tmp_path: Path) -> None:
    import sqlite3

    from jupyter_agent import SqliteStore, StoreError
    from jupyter_agent._events import verify_chain

    db = tmp_path / "agent.db"
    store = SqliteStore(db, busy_timeout_s=0.2)
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), reply("done")])
    s = Agent("a", model=model, store=store, tools=[wait_gate]).start("go")
    assert entered.wait(10)
    # a running read-only call's intent is written once it has run RECORD_RUNNING_AFTER_S
    deadline = time.monotonic() + 10
    while not load_state(store, s.id).open_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the disk is 'full' for the tool's result
    gate.set()
    with pytest.raises(StoreError, match="could not write"):
        s.wait(10)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert verify_chain(s.events) is None
    assert s.state.open_calls, "the call is in doubt, not lost"
    s.resume()  # the tool is read-only: it runs again, and the session finishes
    assert s.wait(10) == "done"
    store.close()


def test_a_write_that_fails_with_any_error_ends_the_run_and_leaves_the_log_whole(
    db: Path,
) -> None:
    """Not only SQLite's errors: whatever stops a write (here a ValueError from inside the
    store) ends the run as a StoreError; the in-memory state, which already held the events,
    is dropped, and a resume goes on from the log."""
    from jupyter_agent import StoreError
    from jupyter_agent._events import verify_chain

    class Breaks(SqliteStore):
        broken = True

        async def write_async(self, events: Sequence[Event] = (), **kw: Any) -> None:
            if self.broken and any(e.kind is EventKind.TOOL_RESULT for e in events):
                raise ValueError("a payload the store cannot take")
            await super().write_async(events, **kw)

    store = Breaks(db)

    @tool(effect="read_only")
    def look() -> str:
        """Looks."""
        return "seen"

    model = ScriptedModel([call("look"), reply("done")])
    s = Agent("a", model=model, store=store, tools=[look]).start("look")
    with pytest.raises(StoreError, match=r"could not write events 2-3 of session .*ValueError"):
        s.wait(10)
    assert verify_chain(s.events) is None
    assert EventKind.TOOL_RESULT not in [e.kind for e in s.events]
    assert s.status == "interrupted"  # the runtime let the session go, resumable
    store.broken = False
    s.resume()
    assert s.wait(10) == "done"
    assert [e.kind for e in s.events].count(EventKind.TOOL_RESULT) == 1
    store.close()


def test_an_approved_in_doubt_call_runs_before_the_calls_behind_it(db: Path) -> None:
    gate, entered, ran, blocking = threading.Event(), threading.Event(), [], []

    @tool
    def slow_send(to: str) -> str:
        """Sends, slowly."""
        ran.append(to)
        if to == "a" and blocking:
            entered.set()
            assert gate.wait(30)
        return "sent"

    model = ScriptedModel(
        [calls(call("slow_send", to="a"), call("slow_send", to="b")), reply("finished")]
    )
    s = Agent("a", model=model, store=db, tools=[slow_send]).run("send both")
    crashed = cut_log(s, after=EventKind.TOOL_CALL, last=True)
    ran.clear()
    blocking.append(True)
    again = open_session(s.id, store=crashed, tools=[slow_send], model=model).resume()
    assert again.wait(10) == "awaiting_approval"
    (first,) = again.pending_approvals  # b never started: nothing to ask about
    again.approve(first.call_id)  # runs a, which blocks
    assert entered.wait(10)
    assert ran == ["a"] and again.pending_approvals == []  # b waits behind a
    gate.set()
    assert again.wait(10) == "done"
    assert ran == ["a", "b"] and again.pending_approvals == []


def test_a_message_told_as_the_session_finishes_is_still_recorded(db: Path) -> None:
    entered, proceed = threading.Event(), threading.Event()

    def last_turn(request):
        entered.set()
        assert proceed.wait(10)
        return reply("done")

    s = Agent("a", model=ScriptedModel([last_turn]), store=db).start("go")
    assert entered.wait(10)
    s.tell("one more thing")
    proceed.set()
    assert s.wait(10) == "done"
    assert [e.kind for e in s.events][-2:] == [EventKind.SESSION_FINISHED, EventKind.MESSAGE]


def test_tell_while_paused_is_recorded_at_once_and_read_on_resume(db: Path) -> None:
    s, model = paused_after_a_call(db)
    s.tell("change of plan")
    assert s.events[-1].kind is EventKind.MESSAGE
    s.resume()
    assert s.wait(10) == "done"
    assert model.requests[-1].messages[-1].content == "change of plan"


def test_an_undecodable_file_name_does_not_break_the_session(db: Path, tmp_path: Path) -> None:
    import os

    ws = tmp_path / "ws"
    ws.mkdir()
    with open(os.path.join(os.fsencode(ws), b"bad\xffname.txt"), "w") as f:
        f.write("x")
    model = ScriptedModel([call("list_files"), reply("listed")])
    s = Agent("a", model=model, store=db, workspace=ws).run("list")
    assert s.status == "done"
    assert "name.txt" in results(s)[0]["output"]


class WriteLog(SqliteStore):
    """A store that notes the kinds of the events each engine write holds (one commit each)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[list[str]] = []

    async def write_async(self, events: Sequence[Event] = (), **kw: Any) -> None:
        await super().write_async(events, **kw)
        self.writes.append([e.kind.value for e in events])


class RowLog(SqliteStore):
    """A store that notes the session row each engine write carries (None: events only)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rows: list[dict[str, Any] | None] = []

    async def write_async(self, events: Sequence[Event] = (), **kw: Any) -> None:
        await super().write_async(events, **kw)
        self.rows.append(kw.get("session"))


def test_a_running_sessions_totals_reach_its_row_at_status_changes_and_twice_a_second(
    db: Path,
) -> None:
    store = RowLog(db)
    marks: list[float] = []

    @tool(effect="read_only")
    def look(n: int) -> str:
        """Looks."""
        marks.append(time.monotonic())
        time.sleep(0.01)
        return f"saw {n}"

    steps = 80  # ~1 s of 10 ms steps
    model = ScriptedModel(lambda r: reply("seen") if r.step > steps else call("look", n=r.step))
    s = Agent("a", model=model, store=store, tools=[look], max_steps=steps + 5).run("look")
    assert s.status == "done"
    with_row = [r for r in store.rows if r is not None]
    assert [r["status"] for r in with_row if "status" in r] == ["running", "done"]
    # a row at the start and at the end; between them, one with each snapshot and at most
    # one per SESSION_ROW_EVERY_S of running
    ran = marks[-1] - marks[0]
    most = 2 + len(s.events) / SNAPSHOT_EVERY + ran / SESSION_ROW_EVERY_S + 1
    assert 3 <= len(with_row) <= most < steps / 5
    row = store.get_session(s.id)
    assert (row.steps, row.tool_calls, row.last_seq) == (steps + 1, steps, s.events[-1].seq)
    store.close()


def test_the_rows_totals_catch_up_while_a_long_call_runs(db: Path) -> None:
    """A write that left the row's totals out arms a timer: the row catches up within
    SESSION_ROW_EVERY_S even while the engine waits on a long call."""
    store = SqliteStore(db)
    wait_gate, gate, entered = gated_tool()

    @tool(effect="read_only")
    def look(n: int) -> str:
        """Looks."""
        return f"saw {n}"

    script = [call("look", n=1), call("look", n=2), call("wait_gate"), reply("done")]
    s = Agent("a", model=ScriptedModel(script), store=store, tools=[look, wait_gate]).start("go")
    assert entered.wait(10)
    deadline = time.monotonic() + SESSION_ROW_EVERY_S + 5
    while store.get_session(s.id).steps != 3:  # the quick steps' totals, left out of the row
        assert time.monotonic() < deadline, "the row's totals stayed behind the log"
        time.sleep(0.02)
    assert store.get_session(s.id).tool_calls == 3  # the running call's intent counts
    gate.set()
    assert s.wait(10) == "done"
    store.close()


def test_a_quick_read_only_call_is_written_with_its_result_in_one_commit(db: Path) -> None:
    store = WriteLog(db)

    @tool(effect="read_only")
    def look(n: int) -> str:
        """Looks."""
        return f"saw {n}"

    both = calls(call("look", n=3), call("look", n=4))
    model = ScriptedModel([call("look", n=1), call("look", n=2), both, reply("seen")])
    s = Agent("a", model=model, store=store, tools=[look]).run("look")
    assert s.status == "done"
    steps = [w for w in store.writes if "tool_result" in w]
    # each result is its own intent: no tool_call; of two calls in one answer, the second's
    # intent rides with the first result, after it (its own result is written later)
    assert steps == [
        ["model_response", "tool_result"],
        ["model_response", "tool_result"],
        ["model_response", "tool_result", "tool_call"],
        ["tool_result"],
    ]
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(s.events))  # in time order
    own = [(r["arguments"], r["effect"]) for r in results(s)[:3]]
    assert own == [(json.dumps({"n": n}), "read_only") for n in (1, 2, 3)]
    assert "arguments" not in results(s)[3]  # its intent was written
    assert s.state.tool_calls == s.row.tool_calls == 4
    assert load_state(store, s.id).comparable() == SessionState.fold(s.id, s.events).comparable()
    store.close()


@pytest.mark.parametrize("effect", ["side_effect", "idempotent"])
def test_a_call_that_changes_things_is_durable_before_its_tool_runs(db: Path, effect: str) -> None:
    store = WriteLog(db)
    seen: list[bool] = []

    @tool(effect=effect)
    def send(text: str, ctx: ToolContext) -> str:
        """Sends."""
        with SqliteStore(db) as other:  # what a process reading the store sees now
            seen.append(bool(load_state(other, ctx.session_id).open_calls))
        return "sent"

    model = ScriptedModel([call("send", text="hi"), reply("sent")])
    s = Agent("a", model=model, store=store, tools=[send]).run("send it")
    assert s.status == "done" and seen == [True]
    assert ["model_response", "tool_call"] in store.writes
    store.close()


def test_a_long_read_only_call_shows_as_running_while_it_runs(db: Path) -> None:
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), reply("done")])
    s = Agent("a", model=model, store=db, tools=[wait_gate]).start("go")
    assert entered.wait(10)
    started = time.monotonic()
    with SqliteStore(db) as other:
        while not load_state(other, s.id).open_calls:
            assert time.monotonic() - started < 2, "the running call never showed"
            time.sleep(0.01)
    gate.set()
    assert s.wait(10) == "done"


def test_a_tool_that_catches_the_interrupt_of_its_sleep_has_its_result_kept(db: Path) -> None:
    """A pause cuts a tool's sleep short; the tool catches that and returns a long output
    (kept in a blob, a write in a thread): the result is recorded, the session pauses, and the
    next call runs on resume, once."""
    ran: list[str] = []

    @tool(effect="read_only")
    async def nap(ctx: ToolContext) -> str:
        """Naps."""
        with contextlib.suppress(Exception):  # (a tool that swallows everything)
            await ctx.sleep_until(ctx.clock.now() + 3600)
        return "z" * (BLOB_THRESHOLD + 10)

    @tool(effect="read_only")
    def after() -> str:
        """Runs after the nap."""
        ran.append("after")
        return "ok"

    model = ScriptedModel([call("nap"), call("after"), reply("done")])
    s = Agent("a", model=model, store=db, tools=[nap, after]).start("nap")
    deadline = time.monotonic() + 10
    while s.status != "sleeping":
        assert time.monotonic() < deadline, s.status
        time.sleep(0.01)
    s.pause()
    assert s.wait(10) == "paused" and ran == []
    (result,) = results(s)
    assert result["name"] == "nap" and "output_blob" in result and not result["is_error"]
    s.resume()
    assert s.wait(10) == "done" and ran == ["after"]
