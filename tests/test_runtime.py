"""The runtime without a kernel: leases and fencing, orphan sweeps, commands from other
processes, interruptible waits, and schedules (a real store, real processes, fake clocks)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from logs import cut_log, gated_tool, new_session

from jupyter_agent import (
    Agent,
    ConfigError,
    EventKind,
    Schedule,
    Session,
    SessionLeased,
    SqliteStore,
    StoreError,
    ToolContext,
    open_session,
    sessions,
    tool,
)
from jupyter_agent._events import EventChain, verify_chain
from jupyter_agent._identity import current_identity
from jupyter_agent._runtime import get_runtime
from jupyter_agent._store._leases import LeaseLost, RuntimeInfo
from jupyter_agent.testing import FakeClock, ScriptedModel, call, calls, reply


def runtime(rid: str, pid: int = 4242) -> RuntimeInfo:
    return RuntimeInfo(rid, "elsewhere", pid, None, "ann", 1.0, 1.0)


def wait_until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def leased_session(store: SqliteStore, holder: str = "rt-a") -> EventChain:
    """Session ``s1``, leased by the registered runtime ``holder``; its chain to go on with."""
    chain = new_session(store)
    store.register_runtime(runtime(holder))
    store.acquire_lease("s1", holder, now=2.0)
    return chain


# -- leases ----------------------------------------------------------------------------------


def test_a_live_holder_keeps_the_lease_and_is_named(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        new_session(store)
        store.register_runtime(runtime("rt-a"))
        store.acquire_lease("s1", "rt-a", now=2.0, alive=lambda rt, now: True)
        with pytest.raises(SessionLeased, match=r"pid 4242 on elsewhere .*rt-a"):
            store.acquire_lease("s1", "rt-b", now=2.0, alive=lambda rt, now: True)
        assert store.get_session("s1").runtime_id == "rt-a"


def test_a_dead_holders_lease_can_be_taken_over(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store)
        store.acquire_lease("s1", "rt-b", now=2.0, alive=lambda rt, now: False)
        assert store.get_session("s1").runtime_id == "rt-b"


def test_a_write_from_a_runtime_that_lost_its_lease_is_refused(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        chain = leased_session(store)
        store.acquire_lease("s1", "rt-b", now=2.0, alive=lambda rt, now: False)
        with pytest.raises(LeaseLost, match="no longer holds session s1"):
            store.write([chain.next(EventKind.MESSAGE, {"text": "late"}, ts=3.0)], lease="rt-a")
        assert [e.seq for e in store.iter_events("s1")] == [1]


@pytest.mark.parametrize("events", [1, 3])
def test_an_engines_write_after_its_lease_was_taken_is_refused(tmp_path: Path, events: int) -> None:
    """The engine's writes check the lease inside the insert once the store knows the
    session's number: a write after a takeover is refused all the same, and adds nothing."""

    def write(text: str, holder: str) -> None:
        drafts = [chain.next(EventKind.MESSAGE, {"text": text}, ts=3.0) for _ in range(events)]
        anyio.run(lambda: store.write_async(drafts, lease=holder))

    with SqliteStore(tmp_path / "a.db") as store:
        chain = leased_session(store)
        write("first", "rt-a")  # (the store learns the session's number)
        store.acquire_lease("s1", "rt-b", now=2.0, alive=lambda rt, now: False)
        with pytest.raises(LeaseLost, match="no longer holds session s1: runtime rt-b does"):
            write("late", "rt-a")
        assert [e.seq for e in store.iter_events("s1")] == list(range(1, events + 2))
        chain = EventChain("s1", last_seq=events + 1, last_hash=store.get_session("s1").last_hash)
        write("the new holder's", "rt-b")
        assert store.get_session("s1").last_seq == 2 * events + 1


def test_a_hand_over_moves_the_lease_only_from_its_holder_and_keeps_its_commands(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store, "rt-kernel")
        store.send_command("s1", "stop", {}, actor="ann")  # sent while the kernel held it
        store.hand_over_lease("s1", "rt-kernel", "rt-worker")
        assert store.get_session("s1").runtime_id == "rt-worker"
        assert [c.verb for c in store.take_commands("s1", taken_by="rt-worker")] == ["stop"]
        with pytest.raises(LeaseLost, match="rt-worker holds it now"):  # a late, given-up one
            store.hand_over_lease("s1", "rt-kernel", "rt-late")
        assert store.get_session("s1").runtime_id == "rt-worker"


def test_a_takeover_keeps_what_people_said_and_drops_the_old_runs_controls(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store, "rt-dead")
        for verb, args in [
            ("tell", {"text": "also check the docs"}),
            ("pause", {}),
            ("approve", {"call_id": "c1"}),
            ("stop", {}),
            ("deny", {"call_id": "c2", "reason": "no"}),
            ("restore", {"at": 1}),
        ]:
            store.send_command("s1", verb, args, actor="ann")
        store.acquire_lease("s1", "rt-new", now=2.0, alive=lambda rt, now: False)
        taken = store.take_commands("s1", taken_by="rt-new")
        assert [c.verb for c in taken] == ["tell", "approve", "deny"]


def test_a_message_left_for_a_holder_that_died_is_recorded_by_the_process_that_resumes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a.db"
    s = Agent("a", model="demo:loop?steps=100000", store=db).start("loop")
    wait_until(lambda: s.row.last_seq > 10)
    s.pause()
    assert s.wait(10) == "paused"
    s.release()
    with SqliteStore(db) as store:  # a process took it, was told something, and died
        store.register_runtime(runtime("rt-dead"))
        store.acquire_lease(s.id, "rt-dead", now=time.time())
        store.send_command(s.id, "tell", {"text": "also check the docs"}, actor="ann")
        store.send_command(s.id, "pause", {}, actor="ann")
    again = open_session(s.id, store=db).resume()
    told = lambda: [  # noqa: E731
        (e.actor, e.payload["text"]) for e in again.events if e.kind is EventKind.MESSAGE
    ]
    wait_until(lambda: told() == [("ann", "also check the docs")])
    assert again.status == "running"  # the pause was for the run that died
    again.stop()
    assert again.wait(10) == "stopped"


def test_sweep_marks_a_dead_runtimes_sessions_interrupted_with_a_chained_event(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store)
        assert store.sweep(now=3.0, alive=lambda rt, now: True) == []
        assert store.sweep(now=3.0, alive=lambda rt, now: False) == ["s1"]
        row = store.get_session("s1")
        assert (row.status, row.runtime_id) == ("interrupted", None)
        last = list(store.iter_events("s1"))[-1]
        assert (last.kind, last.actor, last.payload["status"]) == (
            EventKind.STATUS_CHANGED,
            "runtime",
            "interrupted",
        )
        assert "pid 4242" in last.payload["reason"]
        assert verify_chain(store.iter_events("s1")) is None
        assert store.get_runtime("rt-a").ended_at == 3.0  # type: ignore[union-attr]


def test_a_stop_still_open_is_what_a_dead_holders_session_becomes(tmp_path: Path) -> None:
    open_ones = ("pause", "stop")
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store)
        store.send_command("s1", "pause", {}, actor="ann")
        store.send_command("s1", "tell", {"text": "hi"}, actor="ann")
        taken = store.take_commands("s1", taken_by="rt-a", leave_open=open_ones)
        assert [(c.verb, c.left_open) for c in taken] == [("pause", True), ("tell", False)]
        store.send_command("s1", "stop", {}, actor="bob")  # never taken: the holder died first
        again = store.take_commands("s1", taken_by="rt-a", leave_open=("pause",))
        assert [(c.verb, c.left_open) for c in again] == [("pause", True), ("stop", False)]
        store.send_command("s1", "stop", {}, actor="bob")
        assert store.sweep(now=3.0, alive=lambda rt, now: False) == ["s1"]
        last = list(store.iter_events("s1"))[-1]
        assert (store.get_session("s1").status, last.actor) == ("stopped", "bob")
        assert last.payload["reason"] == "stopped by bob (its process ended first)"
        assert store.queued_commands("s1") == []
        assert verify_chain(store.iter_events("s1")) is None


def test_a_stop_waiting_in_the_store_wins_over_a_pause_at_a_clean_end(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store)
        store.send_command("s1", "stop", {}, actor="bob")  # not taken yet when the process ends
        store.end_runtime("rt-a", now=3.0, reason="exit", asked={"s1": ("paused", "ann")})
        last = list(store.iter_events("s1"))[-1]
        assert (store.get_session("s1").status, last.actor) == ("stopped", "bob")
        assert store.queued_commands("s1") == []


def test_a_control_closed_once_done_is_not_what_the_session_becomes(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        leased_session(store)
        store.send_command("s1", "pause", {}, actor="ann")
        (pause,) = store.take_commands("s1", taken_by="rt-a", leave_open=("pause", "stop"))
        store.close_commands([pause.id], taken_by="rt-a")  # the run that acted on it ended
        assert store.take_commands("s1", taken_by="rt-a", leave_open=("pause", "stop")) == []
        assert store.sweep(now=3.0, alive=lambda rt, now: False) == ["s1"]
        assert store.get_session("s1").status == "interrupted"


def test_sweep_chains_the_interruption_from_events_newer_than_the_row(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        chain = leased_session(store)
        said = [chain.next(EventKind.MESSAGE, {"text": "x"}, ts=9.0) for _ in range(2)]
        store.write(said, lease="rt-a")  # the row still says event 1
        assert store.sweep(now=3.0, alive=lambda rt, now: False) == ["s1"]
        events = list(store.iter_events("s1"))
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert events[-1].payload["status"] == "interrupted" and events[-1].ts == 9.0
        assert verify_chain(events) is None
        row = store.get_session("s1")
        assert (row.status, row.last_seq, row.last_hash) == ("interrupted", 4, events[-1].hash)


def test_an_interrupted_sessions_totals_are_those_of_its_log(tmp_path: Path) -> None:
    """Its engine wrote the row's totals at most twice a second; the sweep that marks it
    interrupted brings them up to the log."""
    from jupyter_agent._state import load_state

    with SqliteStore(tmp_path / "a.db") as store:
        chain = leased_session(store)
        usage = {"input_tokens": 7, "output_tokens": 3, "cached_tokens": 0, "cost_usd": 0.5}
        said = [
            chain.next(
                EventKind.MODEL_RESPONSE,
                {"step": i, "text": "hm", "tool_calls": [], "usage": usage},
                ts=3.0,
            )
            for i in (1, 2)
        ]
        store.write(said, lease="rt-a")  # an engine between two row refreshes
        assert store.get_session("s1").steps == 0
        assert store.sweep(now=4.0, alive=lambda rt, now: False) == ["s1"]
        row = store.get_session("s1")
        assert (row.status, row.steps, row.input_tokens, row.cost_usd) == (
            "interrupted",
            2,
            14,
            1.0,
        )
        assert row.steps == load_state(store, "s1").steps


def holder_script(name: str, tool_s: float, then: str) -> str:
    """A process running a session that calls a slow read-only tool without end; ``then``
    runs after the start, and the process lives on for two minutes."""
    return (
        "import sys, time\n"
        "from jupyter_agent import Agent, tool\n"
        "from jupyter_agent.testing import ScriptedModel, call\n\n"
        "@tool(effect='read_only')\n"
        "def wait() -> str:\n"
        "    '''Waits.'''\n"
        f"    time.sleep({tool_s})\n"
        "    return 'waited'\n\n"
        f"s = Agent({name!r}, model=ScriptedModel(lambda r: call('wait')), tools=[wait],\n"
        "          store=sys.argv[1], max_steps=10_000).start('hold it')\n"
        f"{then}\n"
        "time.sleep(120)\n"
    )


WORKER = holder_script("held", 0.2, "print(s.id, flush=True)")


@pytest.fixture
def holder(tmp_path: Path):
    """Another process running a session (a tool that waits, forever)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "agent.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    session_id = proc.stdout.readline().strip()
    yield proc, session_id
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_another_processes_running_session_cannot_be_resumed_here(tmp_path: Path, holder) -> None:
    proc, session_id = holder
    s = open_session(session_id, store=tmp_path / "agent.db", model=ScriptedModel([]))
    with pytest.raises(SessionLeased, match=f"pid {proc.pid} on "):
        s.resume()
    assert s.status == "running"


def test_a_killed_processes_session_is_interrupted_within_seconds_and_resumable(
    tmp_path: Path, holder
) -> None:
    proc, session_id = holder
    db = tmp_path / "agent.db"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + 5
    s = open_session(session_id, store=db, model=ScriptedModel([reply("taken over")]))
    while s.status != "interrupted":
        assert time.monotonic() < deadline, "not interrupted within 5 s"
        time.sleep(0.1)

    from jupyter_agent import tool

    @tool(effect="read_only")
    def wait() -> str:
        """Waits."""
        return "waited"

    s = open_session(
        session_id, store=db, tools=[wait], model=ScriptedModel(lambda r: reply("taken over"))
    )
    s.resume()
    assert s.wait(30) == "done" and s.result == "taken over"


def test_commands_from_another_process_reach_the_running_session(tmp_path: Path, holder) -> None:
    _proc, session_id = holder
    db = tmp_path / "agent.db"
    s = open_session(session_id, store=db)
    s.tell("hello from another process")
    s.stop()  # goes to the owner through the store's commands table
    deadline = time.monotonic() + 10
    while s.status != "stopped":
        assert time.monotonic() < deadline, "the owner did not act on the command"
        time.sleep(0.1)
    messages = [e for e in s.events if e.kind is EventKind.MESSAGE]
    assert messages and messages[0].payload["text"] == "hello from another process"
    assert messages[0].actor != "agent"


# -- interruptible waits ---------------------------------------------------------------------


def test_pause_cuts_a_long_sleep_short(tmp_path: Path) -> None:
    model = ScriptedModel([call("sleep", seconds=600), reply("woke")])
    s = Agent("a", model=model, store=tmp_path / "a.db").start("nap")
    deadline = time.monotonic() + 10
    while s.status != "sleeping":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    t0 = time.monotonic()
    s.pause()
    assert s.wait(5) == "paused" and time.monotonic() - t0 < 1.0
    assert s.state.open_calls, "the sleep is still open; it resumes with its wake time"
    s.stop()
    assert s.status == "stopped"


def test_a_side_effect_call_paused_in_its_sleep_asks_before_it_runs_again(tmp_path: Path) -> None:
    """A call cut short runs again from its start: for a side-effect tool, what it did before
    its sleep would happen twice, so a person decides (as after a crash); approved, it meets
    its timer with the wake time recorded before the pause. The call after it never started:
    it is not asked about."""
    done: list[str] = []
    wake_at = time.time() + 2.0

    @tool(effect="side_effect")
    async def remind(ctx: ToolContext) -> str:
        """Sends a reminder a little later."""
        done.append("started")
        await ctx.sleep_until(wake_at if len(done) == 1 else wake_at + 600)
        done.append("sent")
        return "sent"

    @tool(effect="side_effect")
    def log_it() -> str:
        """Logs it."""
        done.append("logged")
        return "logged"

    model = ScriptedModel([calls(call("remind"), call("log_it")), reply("done")])
    s = Agent("a", model=model, tools=[remind, log_it], store=tmp_path / "a.db").start("remind")
    wait_until(lambda: s.status == "sleeping")
    s.pause()
    assert s.wait(5) == "paused" and done == ["started"]
    s.resume()
    assert s.wait(5) == "awaiting_approval"
    assert [(a.name, a.reason) for a in s.pending_approvals] == [("remind", "in_doubt")]
    s.approve(s.pending_approvals[0].call_id)
    assert s.wait(10) == "done"  # by the first wake time, not ten minutes after it
    assert time.time() < wake_at + 60
    assert done == ["started", "started", "sent", "logged"]
    timers = [e.payload["wake_at"] for e in s.events if e.kind is EventKind.TIMER_SET]
    assert timers == [wake_at]  # the same timer, met again


def test_stop_cuts_a_slow_model_call_short(tmp_path: Path) -> None:
    async def slow(request):
        await anyio.sleep(600)
        return reply("too late")

    s = Agent("a", model=ScriptedModel([slow]), store=tmp_path / "a.db").start("think")
    time.sleep(0.2)
    t0 = time.monotonic()
    s.stop()
    assert s.wait(5) == "stopped" and time.monotonic() - t0 < 1.0
    assert not any(e.kind is EventKind.MODEL_RESPONSE for e in s.events)


# -- schedules -------------------------------------------------------------------------------


def ticks(session) -> list[dict]:
    return [e.payload for e in session.events if e.kind is EventKind.TIMER_FIRED]


def test_a_schedule_wakes_the_session_on_every_tick_then_finishes(tmp_path: Path) -> None:
    clock = FakeClock(start=1_000.0)
    model = ScriptedModel(lambda r: reply(f"check {r.step} fine"))
    s = Agent(
        "watch",
        model=model,
        store=tmp_path / "a.db",
        clock=clock,
        schedule=Schedule(every_s=3600, times=5),
    ).run("watch it")
    assert s.status == "done" and s.result == "check 6 fine"
    assert [(t["tick"], t["skipped"]) for t in ticks(s)] == [(i, 0) for i in range(1, 6)]
    assert clock.now() == 1_000.0 + 5 * 3600
    msgs = [e for e in s.events if e.kind is EventKind.MESSAGE]
    assert len(msgs) == 5 and all(m.actor == "schedule" for m in msgs)


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        (False, [(1, 0), (2, 0), (5, 2), (6, 0)]),
        (True, [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)]),
    ],
)
def test_ticks_missed_while_nothing_ran_fire_once_unless_catching_up(
    tmp_path: Path, catch_up: bool, expected: list[tuple[int, int]]
) -> None:
    model = ScriptedModel(lambda r: reply("ok"))
    schedule = Schedule(every_s=100, times=6, catch_up=catch_up)
    s = Agent(
        "w", model=model, store=tmp_path / "a.db", clock=FakeClock(start=1_000.0), schedule=schedule
    ).run("watch")
    crashed = tmp_path / "crashed.db"
    cut_log(s, after=EventKind.TIMER_SET, nth=3, path=crashed)  # died waiting for tick 3
    later = FakeClock(start=1_560.0)  # back after ticks 3, 4 and 5 fell due
    again = open_session(s.id, store=crashed, model=model, clock=later).resume()
    assert again.wait(10) == "done"
    assert [(t["tick"], t["skipped"]) for t in ticks(again)] == expected


def test_a_schedule_survives_a_crash_without_losing_or_doubling_a_tick(tmp_path: Path) -> None:
    model = ScriptedModel(lambda r: reply("ok"))
    s = Agent(
        "w",
        model=model,
        store=tmp_path / "a.db",
        clock=FakeClock(start=0.0),
        schedule=Schedule(every_s=60, times=4),
    ).run("watch")
    crashed = tmp_path / "crashed.db"
    cut_log(s, after=EventKind.TIMER_FIRED, nth=2, path=crashed)  # died right after tick 2 fired
    again = open_session(s.id, store=crashed, model=model, clock=FakeClock(start=121.0))
    again.resume()
    assert again.wait(10) == "done"
    assert [t["tick"] for t in ticks(again)] == [1, 2, 3, 4]


DEMO_WORKER = """
import sys, time
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call

@tool(effect="read_only")
def mine() -> str:
    '''A tool only this process knows.'''
    return "x"

Agent("demo", model="demo:loop?steps=100000", store=sys.argv[1], max_steps=10**6).start("loop")
Agent("custom", model="demo:loop?steps=100000", store=sys.argv[1],
      tools=[mine, "python", "write_file", "read_file", "list_files"],
      max_steps=10**6).start("loop")
print("started", flush=True)
time.sleep(120)
"""


def test_resume_interrupted_takes_over_what_a_dead_process_left(tmp_path: Path) -> None:
    from jupyter_agent import resume_interrupted, sessions

    db = tmp_path / "agent.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", DEMO_WORKER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    resumed = resume_interrupted(store=db)
    assert [s.name for s in resumed] == ["demo"]  # 'custom' needs a tool only it had
    (s,) = resumed
    assert s.running_here or s.status == "awaiting_approval"  # (its call in doubt: see below)
    deadline = time.monotonic() + 5
    while s.status != "running":
        assert time.monotonic() < deadline
        if s.status == "awaiting_approval":  # the kill landed in a side-effect call: skip it
            for pending in s.pending_approvals:
                s.deny(pending.call_id, reason="interrupted by the test's kill")
        time.sleep(0.05)
    before = s.row.last_seq  # exact (the row's totals may lag by SESSION_ROW_EVERY_S)
    time.sleep(0.5)
    assert s.row.last_seq > before
    s.stop()
    assert s.wait(10) == "stopped"
    by_name = {x.name: x.status for x in sessions(store=db)}
    assert by_name == {"demo": "stopped", "custom": "interrupted"}


def test_a_session_that_fails_does_not_disturb_the_others(tmp_path: Path) -> None:
    def broken(request):
        raise RuntimeError("this model is broken")

    db = tmp_path / "a.db"
    bad = Agent("bad", model=ScriptedModel(broken), store=db).start("fail")
    good = [Agent(f"good{i}", model="demo:loop?steps=30", store=db).start("loop") for i in range(5)]
    assert bad.wait(30) == "failed"
    assert [g.wait(60) for g in good] == ["done"] * 5
    err = next(e.payload for e in bad.events if e.kind is EventKind.ERROR)
    assert "this model is broken" in err["message"] and "Traceback" in err["traceback"]


def test_a_tool_or_model_that_exits_ends_only_its_own_session(tmp_path: Path) -> None:
    """``sys.exit()`` in a tool is the tool's error; in a model it ends that session alone.
    Either way the loop every session shares goes on, for the others and for later ones."""

    @tool(effect="read_only")
    def leave() -> str:
        """Exits the process, as careless code might."""
        sys.exit(3)

    def exiting(request):
        raise SystemExit(4)

    db = tmp_path / "a.db"
    bystander = Agent(
        "bystander", model="demo:loop?steps=1000000", store=db, max_steps=10**7
    ).start("loop")
    tool_exits = Agent(
        "tool", model=ScriptedModel([call("leave"), reply("done")]), tools=[leave], store=db
    ).start("go")
    assert tool_exits.wait(30) == "done"
    (result,) = tool_exits.store.iter_events(tool_exits.id, kinds=[EventKind.TOOL_RESULT])
    assert result.payload["is_error"] and result.payload["output"] == "SystemExit: 3"

    model_exits = Agent("model", model=ScriptedModel(exiting), store=db).start("go")
    with pytest.raises(RuntimeError, match="stopped: SystemExit: 4"):
        model_exits.wait(30)
    wait_until = time.monotonic() + 5
    while model_exits.status != "interrupted":
        assert time.monotonic() < wait_until, "the session the model ended was left running"
        time.sleep(0.05)
    assert model_exits.row.runtime_id is None  # resumable anywhere

    steps = bystander.row.last_seq
    later = Agent("later", model="demo:fix", store=db).start("fix it")
    assert later.wait(30) == "done"
    wait_until = time.monotonic() + 5
    while bystander.row.last_seq == steps:  # its rows lag up to half a second
        assert time.monotonic() < wait_until, "the other session stopped with it"
        time.sleep(0.05)
    assert bystander.status == "running"
    bystander.stop()
    assert bystander.wait(10) == "stopped"


def test_sessions_that_never_wait_take_turns_on_the_loop(tmp_path: Path) -> None:
    """A model and a tool that answer at once never give the loop back of themselves: the
    engine does, every few steps, so one such session does not hold up the others."""
    order: list[str] = []

    @tool
    async def instant(who: str) -> str:
        """Returns at once (a plain function would run on a worker thread: a wait)."""
        order.append(who)
        return "ok"

    def agent(who: str) -> Agent:
        def turn(request):
            return reply("done") if request.step > 3000 else call("instant", who=who)

        model = ScriptedModel(turn)
        return Agent(who, model=model, tools=[instant], store=tmp_path / "a.db", max_steps=3010)

    first = agent("a").start("go")
    second = agent("b").start("go")
    assert first.wait(120) == "done" and second.wait(120) == "done"
    assert order.count("a") == order.count("b") == 3000
    # b starts while a still runs, and they keep taking turns (the engine's yields; the
    # others, e.g. a write that waits for a checkpoint, are rare)
    assert order.index("b") < len(order) - 1 - order[::-1].index("a")
    turns = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert turns >= 100, f"the sessions took {turns} turns"  # ~800; ~20 if none were given


def test_the_runtime_never_prints(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    s = Agent("quiet", model="demo:fix", store=tmp_path / "a.db").start("fix it")
    assert s.wait(60) == "done"
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_an_interruption_never_dates_before_the_sessions_last_event(tmp_path: Path) -> None:
    """A session on a fast or fake clock may be ahead of the wall clock: its log stays ordered."""
    with SqliteStore(tmp_path / "a.db") as store:
        chain = new_session(store)
        ahead = time.time() + 86_400
        e = chain.next(EventKind.STATUS_CHANGED, {"status": "sleeping"}, ts=ahead)
        store.write(
            [e],
            session={
                "id": "s1",
                "status": "sleeping",
                "updated_at": ahead,
                "last_seq": e.seq,
                "last_hash": e.hash,
            },
        )
        store.register_runtime(runtime("rt-a"))
        store.acquire_lease("s1", "rt-a", now=2.0)
        store.sweep(now=time.time(), alive=lambda rt, now: False)
        events = list(store.iter_events("s1"))
        assert events[-1].payload["status"] == "interrupted" and events[-1].ts >= ahead


# -- regressions from review -----------------------------------------------------------------

PAUSED_WORKER = holder_script(
    "idle", 0.05, "time.sleep(0.3)\ns.pause()\ns.wait(10)\nprint(s.id, s.status, flush=True)"
)


def test_a_session_paused_in_an_idle_process_hears_tell_and_stop_from_here(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agent.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WORKER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        session_id, status = proc.stdout.readline().split()
        assert status == "paused"
        s = open_session(session_id, store=db)
        s.tell("are you there?")
        s.stop()
        deadline = time.monotonic() + 10
        while s.status != "stopped":
            assert time.monotonic() < deadline, "the idle owner did not act on the commands"
            time.sleep(0.1)
        texts = [e.payload["text"] for e in s.events if e.kind is EventKind.MESSAGE]
        assert texts == ["are you there?"]
        assert s.row.runtime_id is None  # the lease went with the stop
    finally:
        proc.kill()
        proc.communicate()


def test_pause_during_a_models_retry_backoff_pauses_cleanly(tmp_path: Path) -> None:
    from jupyter_agent import OpenAIModel, RetryPolicy
    from jupyter_agent._runtime import get_runtime
    from jupyter_agent.testing import FakeProvider, Fault

    with FakeProvider([Fault(status=503), reply("back")]) as fake:
        model = OpenAIModel(
            "m", base_url=fake.openai_base_url, retry=RetryPolicy(base_delay_s=30, jitter=0)
        )
        s = Agent("a", model=model, store=tmp_path / "a.db", tools=[]).start("go")
        deadline = time.monotonic() + 10
        while not any(e.kind is EventKind.MODEL_RETRY for e in s.events):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        s.pause()
        assert s.wait(5) == "paused"
        s.resume()
        assert s.wait(10) == "done" and s.result == "back"
        get_runtime().call(model.aclose)


@pytest.mark.parametrize("then", ["backs_off", "answers_at_once", "retries_again"])
def test_a_pause_while_a_retry_is_written_waits_for_the_write(tmp_path: Path, then: str) -> None:
    """A pause cuts the model's wait short, but not a write inside it (a retry, recorded while
    another process holds the write lock), whatever the model does next: the log stays whole
    and the session pauses, then resumes."""
    import sqlite3
    import threading

    from jupyter_agent import ModelResponse

    entered, locked, writing = threading.Event(), threading.Event(), threading.Event()

    class Retrying:
        name = "retrying"

        async def complete(self, request):
            if not entered.is_set():  # the first call; once resumed, it answers
                entered.set()
                await anyio.to_thread.run_sync(locked.wait)
                error = RuntimeError("overloaded")
                writing.set()  # (nothing awaits before the write is queued)
                await request.observer.retrying(attempt=1, error=error, delay_s=30)
                if then == "retries_again":
                    await request.observer.retrying(attempt=2, error=error, delay_s=30)
                if then != "answers_at_once":
                    await anyio.sleep(30)  # the backoff, which the pause cuts short
            return ModelResponse(text="back")

    db = tmp_path / "a.db"
    s = Agent("a", model=Retrying(), store=db, tools=[]).start("go")
    assert entered.wait(10)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the retry's write has to wait for this
    locked.set()
    assert writing.wait(10)
    time.sleep(0.2)
    s.pause()
    time.sleep(0.2)
    other.execute("COMMIT")
    other.close()
    # an answer that came before the pause could cut anything short is kept: it was the last
    assert s.wait(10) == ("done" if then == "answers_at_once" else "paused")
    retries = [e for e in s.events if e.kind is EventKind.MODEL_RETRY]
    assert len(retries) == (2 if then == "retries_again" else 1)
    assert verify_chain(s.events) is None
    if s.status == "paused":
        s.resume()
    assert s.wait(10) == "done" and s.result == "back"


def test_an_engine_that_stops_on_a_store_error_frees_the_session(tmp_path: Path) -> None:
    import sqlite3
    import threading

    from jupyter_agent import StoreError, tool

    db = tmp_path / "agent.db"
    store = SqliteStore(db, busy_timeout_s=0.2)
    gate = threading.Event()

    @tool(effect="read_only")
    def gated() -> str:
        """Waits for the test."""
        assert gate.wait(10)
        return "ok"

    s = Agent(
        "a", model=ScriptedModel([call("gated"), reply("done")]), store=store, tools=[gated]
    ).start("go")
    time.sleep(0.3)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    gate.set()
    with pytest.raises(StoreError):
        s.wait(10)
    blocker.execute("ROLLBACK")
    blocker.close()
    deadline = time.monotonic() + 5
    while s.status != "interrupted":
        assert time.monotonic() < deadline, "the failed engine left the session running"
        time.sleep(0.05)
    assert s.row.runtime_id is None
    store.close()


def test_a_sleep_whose_timer_fired_before_a_crash_does_not_sleep_again(tmp_path: Path) -> None:
    model = ScriptedModel([call("sleep", seconds=600), reply("awake")])
    s = Agent("a", model=model, store=tmp_path / "a.db", clock=FakeClock(start=0.0)).run("nap")
    crashed = tmp_path / "crashed.db"
    cut_log(s, after=EventKind.TIMER_FIRED, nth=1, path=crashed)
    later = FakeClock(start=600.5)
    again = open_session(s.id, store=crashed, model=model, clock=later).resume()
    assert again.wait(10) == "done"
    assert later.now() == 600.5, "it woke at once: the wait was already over"


def test_a_message_wakes_a_scheduled_session_before_its_next_tick(tmp_path: Path) -> None:
    model = ScriptedModel(lambda r: reply(f"answer {r.step}"))
    s = Agent(
        "w", model=model, store=tmp_path / "a.db", schedule=Schedule(every_s=3600, times=3)
    ).start("watch")
    deadline = time.monotonic() + 10
    while s.status != "sleeping":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.tell("what is the error rate?")
    deadline = time.monotonic() + 5
    while s.row.steps < 2:
        assert time.monotonic() < deadline, "the message waited for the next tick"
        time.sleep(0.05)
    assert s.state.ticks_fired == 0  # no tick was spent on it
    s.stop()


def test_a_message_sent_while_the_model_answers_is_answered_before_the_tick(
    tmp_path: Path,
) -> None:
    """Told during the answer that ends a turn (no tick sleep to cut short yet): the message
    is recorded, so durable, and answered at once, not a tick (an hour) later."""
    answering = threading.Event()

    async def turn(request):
        if request.step == 1:
            answering.set()
            await anyio.sleep(0.5)
        return reply(f"answer {request.step}")

    s = Agent(
        "w",
        model=ScriptedModel(turn),
        store=tmp_path / "a.db",
        schedule=Schedule(every_s=3600, times=3),
    ).start("watch")
    assert answering.wait(10)
    s.tell("what is the error rate?")
    deadline = time.monotonic() + 5
    while s.row.steps < 2 or s.status != "sleeping":
        assert time.monotonic() < deadline, "the message waited for the next tick"
        time.sleep(0.05)
    kinds = [e.kind for e in s.events]
    told = kinds.index(EventKind.MESSAGE)
    assert told < kinds.index(EventKind.TIMER_SET)  # durable before the session slept
    assert s.state.ticks_fired == 0 and s.row.steps == 2
    s.stop()


def test_a_step_limit_reached_ends_a_scheduled_session_before_another_tick(
    tmp_path: Path,
) -> None:
    clock = FakeClock(start=0.0)
    s = Agent(
        "w",
        model=ScriptedModel(lambda r: reply(f"check {r.step}")),
        store=tmp_path / "a.db",
        clock=clock,
        max_steps=2,
        schedule=Schedule(every_s=3600, times=5),
    ).run("watch")
    assert s.status == "stopped" and s.row.steps == 2
    assert [t["tick"] for t in ticks(s)] == [1]  # tick 2 was neither set nor spent
    assert not [e for e in s.events if e.kind is EventKind.TIMER_SET and e.payload["tick"] == 2]
    assert clock.now() == 3600.0
    assert [e.kind for e in s.events][-2:] == [EventKind.BUDGET_EXCEEDED, EventKind.STATUS_CHANGED]


def test_each_sleep_of_a_call_is_its_own_timer_and_a_resumed_call_meets_them_in_turn(
    tmp_path: Path,
) -> None:
    @tool(effect="read_only")
    async def poll(ctx: ToolContext) -> str:
        """Waits three times."""
        for _ in range(3):
            await ctx.sleep_until(ctx.clock.now() + 0.4)
        return "polled"

    model = ScriptedModel([call("poll"), reply("done")])
    s = Agent("p", model=model, tools=[poll], store=tmp_path / "a.db").start("poll")
    started = time.monotonic()
    deadline = started + 10
    while len([e for e in s.events if e.kind is EventKind.TIMER_FIRED]) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.pause()  # in its second wait
    assert s.wait(10) == "paused"
    s.resume()  # the call runs again: its first timer has fired, its second keeps its time
    assert s.wait(10) == "done"
    took = time.monotonic() - started
    assert took >= 1.15  # three waits, none skipped
    set_ = [e.payload["timer_id"] for e in s.events if e.kind is EventKind.TIMER_SET]
    fired = [e.payload["timer_id"] for e in s.events if e.kind is EventKind.TIMER_FIRED]
    assert set_ == fired == ["timer-call_0_0", "timer-call_0_0#2", "timer-call_0_0#3"]


def test_resuming_a_session_whose_model_was_an_object_says_to_pass_it(tmp_path: Path) -> None:
    async def turn(request):
        if request.step == 1:
            await anyio.sleep(30)  # until the pause cuts it short
        return reply("ok")

    model = ScriptedModel(turn)
    s = Agent("a", model=model, store=tmp_path / "a.db").start("go")
    s.pause()
    assert s.wait(10) == "paused"
    s.release()  # a fresh handle (a new process) must make the agent again
    with pytest.raises(ConfigError) as caught:
        open_session(s.id, store=tmp_path / "a.db").resume()
    assert str(caught.value) == (
        f"session {s.id} ran with a model object ('scripted'), which cannot be made again "
        "from its name: pass it, open_session(id, model=...)"
    )


STOPPED_THEN_EXITS = """
import sys, time
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call

@tool(effect="read_only")
def slow() -> str:
    "Takes a while."
    time.sleep(1)
    return "ok"

s = Agent("a", model=ScriptedModel(lambda r: call("slow")), tools=[slow], store=sys.argv[1])
s = s.start("go")
time.sleep(0.3)
getattr(s, sys.argv[2])()
print(s.id, flush=True)
"""


@pytest.mark.parametrize(("control", "status"), [("stop", "stopped"), ("pause", "paused")])
def test_a_stop_or_pause_the_process_exits_before_reaching_is_what_the_session_is_left(
    tmp_path: Path, control: str, status: str
) -> None:
    """Asked for during a tool call, then the script ends (the engine never got to the step
    boundary): the session is left as asked, not ``interrupted``, which would resume it."""
    db = tmp_path / "a.db"
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_THEN_EXITS, str(db), control],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    s = open_session(done.stdout.strip(), store=db)
    assert s.status == status and s.row.runtime_id is None
    last = s.events[-1]
    assert last.actor != "runtime"
    assert last.payload == {
        "status": status,
        "reason": f"{status} by {last.actor} (its process ended first)",
    }


def left_as_asked(s: Session, status: str) -> None:
    """Its holder was killed before the engine acted on a control from here: the session is
    left as the control asked (by whom, and why), and the control is done."""
    wait_until(lambda: s.status != "running")
    last = s.events[-1]
    assert (s.status, last.actor) == (status, current_identity())
    assert last.payload["reason"] == f"{status} by {last.actor} (its process ended first)"
    assert s.store.queued_commands(s.id) == []


SLOW_HOLDER = holder_script("held", 60, "print(s.id, flush=True)")  # its call never ends


@pytest.mark.parametrize(("control", "status"), [("stop", "stopped"), ("pause", "paused")])
def test_a_stop_or_pause_sent_to_a_process_killed_before_its_engine_acts_is_kept(
    tmp_path: Path, control: str, status: str
) -> None:
    """Sent from here during a call that runs on, taken by the holder's housekeeping, then the
    holder is killed: the session is left as asked, not ``interrupted`` (which
    ``resume_interrupted`` would run on)."""
    db = tmp_path / "agent.db"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_HOLDER, str(db)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        s = open_session(proc.stdout.readline().decode().strip(), store=db)
        wait_until(lambda: s.events[-1].kind is EventKind.TOOL_CALL)
        getattr(s, control)()  # a command in the store, for the holder
        time.sleep(1.5)  # three rounds of the holder's housekeeping: it has taken it
        assert s.status == "running"  # (the call runs on: the engine has not got to it)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    left_as_asked(s, status)


ASKS_IN_ITS_OWN_PROCESS = holder_script(
    "held", 60, "time.sleep(0.3)\ngetattr(s, sys.argv[2])()\nprint(s.id, flush=True)"
)


@pytest.mark.parametrize(("control", "status"), [("stop", "stopped"), ("pause", "paused")])
def test_a_stop_or_pause_given_in_the_process_that_is_then_killed_is_kept(
    tmp_path: Path, control: str, status: str
) -> None:
    """As from a cell of the kernel that runs the session, which then dies (out of memory)."""
    db = tmp_path / "agent.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", ASKS_IN_ITS_OWN_PROCESS, str(db), control], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        s = open_session(proc.stdout.readline().decode().strip(), store=db)
        # (written in the background: the control returned at once, the engine has it)
        wait_until(lambda: [c.verb for c in s.store.queued_commands(s.id)] == [control])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    left_as_asked(s, status)


def test_an_interrupted_session_can_be_paused_so_that_nothing_resumes_it_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jupyter_agent import resume_interrupted
    from jupyter_agent._cli import main

    db = tmp_path / "agent.db"
    sids = []
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_HOLDER, str(db)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        sids.append(proc.stdout.readline().decode().strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    held, by_cli = (open_session(sid, store=db) for sid in sids)
    wait_until(lambda: (held.status, by_cli.status) == ("interrupted", "interrupted"))
    held.pause()
    assert main(["pause", by_cli.id, "--db", str(db)]) == 0
    assert capsys.readouterr().out == f"{by_cli.id}: paused (it stays so until it is resumed)\n"
    for s in (held, by_cli):
        last = s.events[-1]
        assert (s.status, last.actor) == ("paused", current_identity())
        assert last.payload["reason"] == f"paused by {last.actor}"
    assert resume_interrupted(store=db) == []  # (it would have run them on)
    assert (held.status, by_cli.status) == ("paused", "paused")


@pytest.mark.parametrize("control", ["stop", "pause"])
def test_a_control_given_here_and_acted_on_at_once_is_not_left_asked(
    tmp_path: Path, control: str
) -> None:
    """The engine may act on it before its background write lands: the run's end waits for
    that write, and closes it."""
    for _ in range(5):
        model = ScriptedModel(lambda r: call("sleep", seconds=0))  # steps that never wait
        s = Agent("a", model=model, store=tmp_path / "a.db", max_steps=10**6).start("go")
        wait_until(lambda s=s: s.row.steps > 3)
        getattr(s, control)()
        s.wait(10)
        assert s.status == ("stopped" if control == "stop" else "paused")
        assert s.store.queued_commands(s.id) == [], "a control acted on is still asked"
        if control == "pause":
            s.stop()


def test_a_pause_acted_on_is_done_and_does_not_pause_the_next_run(tmp_path: Path) -> None:
    gate = threading.Event()

    @tool(effect="read_only")
    def wait() -> str:
        """Waits for the test."""
        gate.wait(30)
        return "ok"

    model = ScriptedModel(lambda r: call("wait") if r.step <= 3 else reply("done"))
    s = Agent("a", model=model, tools=[wait], store=tmp_path / "a.db").start("go")
    wait_until(lambda: s.events[-1].kind is EventKind.TOOL_CALL)  # (the call runs)
    s.store.send_command(s.id, "pause", actor="someone elsewhere")  # as another process does
    wait_until(lambda: get_runtime().inbox(s.id).pause_requested == "someone elsewhere")
    assert [c.verb for c in s.store.queued_commands(s.id)] == ["pause"]  # left open meanwhile
    gate.set()
    wait_until(lambda: s.status == "paused" and not s.running_here, timeout=10)
    s.resume()  # at once: before housekeeping's next round (and maybe before the run's end
    # has closed the command it acted on)
    assert s.wait(30) == "done"  # not paused again by the pause the first run acted on
    assert s.store.queued_commands(s.id) == []
    paused = [e for e in s.events if e.payload.get("status") == "paused"]
    assert len(paused) == 1


def test_housekeeping_survives_a_malformed_command(tmp_path: Path, holder) -> None:
    import sqlite3

    _proc, session_id = holder
    db = tmp_path / "agent.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO commands (session_id, verb, args, actor, created_at) "
        "VALUES (?, 'tell', 'null', 'mallory', 0)",
        (session_id,),
    )
    conn.commit()
    conn.close()
    s = open_session(session_id, store=db)
    time.sleep(1.0)
    s.stop()
    deadline = time.monotonic() + 10
    while s.status != "stopped":
        assert time.monotonic() < deadline, "the owner's housekeeping died"
        time.sleep(0.1)


def test_a_released_paused_session_can_be_resumed_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    model = ScriptedModel([call("sleep", seconds=600), reply("done elsewhere")])
    s = Agent("a", model=model, store=db).start("nap")
    deadline = time.monotonic() + 10
    while s.status != "sleeping":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.pause()
    assert s.wait(5) == "paused" and s.row.runtime_id is not None  # still held here
    s.release()
    assert s.row.runtime_id is None
    code = (
        "import sys\nfrom jupyter_agent import open_session\n"
        "from jupyter_agent.testing import ScriptedModel, FakeClock, reply\n"
        "s = open_session(sys.argv[2], store=sys.argv[1], clock=FakeClock(start=1e12),"
        " model=ScriptedModel([reply('x'), reply('done elsewhere')]))\n"
        "s.resume(); print(s.wait(30))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db), s.id], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "done", out.stderr


def test_a_fresh_handle_resumes_a_session_paused_here_with_the_agent_it_ran_with(
    tmp_path: Path,
) -> None:
    @tool
    def tick() -> str:
        """One more tick."""
        return "tick"

    model = ScriptedModel(lambda req: call("tick") if req.step and req.step < 400 else reply("ok"))
    s = Agent("own-tool", model=model, tools=[tick], store=tmp_path / "a.db").start("go")
    deadline = time.monotonic() + 10
    while s.row.steps < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.pause()
    assert s.wait(timeout=10) == "paused"

    again = open_session(s.id, store=tmp_path / "a.db")  # no tools, no model object given
    again.resume()
    assert again.wait(timeout=30) == "done"


def test_a_session_recorded_with_a_policy_for_a_tool_it_lacks_still_resumes(
    tmp_path: Path,
) -> None:
    """Such a policy was accepted before it was refused at Agent(...): a recorded one must not
    stop its session (or resume_interrupted's other sessions) from going on."""
    from jupyter_agent import resume_interrupted

    store = SqliteStore(tmp_path / "a.db")
    for sid in ("old", "other"):
        chain = EventChain(sid)
        started = {
            "name": sid,
            "model": "demo:loop?steps=1",
            "goal": "go",
            "tools": ["list_files"],
            "workspace": str(tmp_path / sid),
            "policy": {"shell": "ask"} if sid == "old" else {},
        }
        events = [
            chain.next(EventKind.SESSION_STARTED, started, ts=1.0),
            chain.next(EventKind.STATUS_CHANGED, {"status": "interrupted"}, ts=2.0),
        ]
        store.write(
            events,
            session={
                "id": sid,
                "name": sid,
                "status": "interrupted",
                "created_at": 1.0,
                "updated_at": 2.0,
                "last_seq": 2,
                "last_hash": events[-1].hash,
            },
        )
    store.close()
    resumed = resume_interrupted(store=tmp_path / "a.db")
    assert sorted(s.id for s in resumed) == ["old", "other"]
    assert [s.wait(30) for s in resumed] == ["done", "done"]


def test_a_look_at_sessions_in_a_store_that_is_not_there_does_not_make_it(
    tmp_path: Path,
) -> None:
    typo = tmp_path / "tyop" / "agent.db"
    with pytest.raises(StoreError, match=f"no store at {typo}: check the path"):
        sessions(store=typo)
    with pytest.raises(StoreError, match=f"no store at {typo}: check the path"):
        open_session("abc", store=str(typo))
    assert not typo.parent.exists()
    Agent("a", model=ScriptedModel([reply("hi")]), store=typo).run("hi")  # an agent makes it
    assert [s.name for s in sessions(store=typo)] == ["a"]
    empty = tmp_path / "empty.db"
    empty.touch()  # (a file made by mistake, or not yet written)
    with pytest.raises(StoreError, match="is an empty file, not a store"):
        sessions(store=empty)
    with pytest.raises(StoreError, match="is an empty file, not a store"):
        open_session("abc", store=empty)
    assert empty.stat().st_size == 0


def paused_in_a_call(store: SqliteStore, turns: list[Any]) -> tuple[Session, Any, Any]:
    """A session of ``store`` told to pause while its first call (``turns[0]``) ran; the call
    then let go. Its model and tool."""
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel(turns)
    s = Agent("a", model=model, store=store, tools=[wait_gate]).start("go")
    assert entered.wait(10)
    s.pause()
    gate.set()
    return s, model, wait_gate


class SlowToClose(SqliteStore):
    """A store whose closing of done controls takes a while: the end of a run that has
    written that it rests (paused), held open for a moment."""

    def close_commands(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.5)
        super().close_commands(*args, **kwargs)


class SlowAfterPausing(SqliteStore):
    """A store that returns late from the write of a 'paused' status: the run that wrote it
    has not even returned from its last step yet."""

    async def write_async(self, events: Any = (), **kwargs: Any) -> None:
        await super().write_async(events, **kwargs)
        if any(
            e.kind is EventKind.STATUS_CHANGED and e.payload["status"] == "paused" for e in events
        ):
            await anyio.sleep(0.5)


@pytest.mark.parametrize("store_type", [SlowToClose, SlowAfterPausing])
@pytest.mark.parametrize("then", ["resume", "release"])
def test_a_session_seen_paused_can_be_resumed_or_released_at_once(
    tmp_path: Path, then: str, store_type: type[SqliteStore]
) -> None:
    store = store_type(tmp_path / "a.db")
    s, model, wait_gate = paused_in_a_call(store, [call("wait_gate"), reply("done")])
    deadline = time.monotonic() + 10
    while s.status != "paused":
        assert time.monotonic() < deadline, s.status
        time.sleep(0.005)
    assert get_runtime().is_running(s.id)  # (its run is still coming to rest)
    if then == "resume":
        s.resume()
        assert s.wait(10) == "done" and s.result == "done"
    else:
        s.release()
        assert s.store.get_session(s.id).runtime_id is None
        again = open_session(s.id, store=tmp_path / "a.db", model=model, tools=[wait_gate])
        assert again.resume().wait(10) == "done"
    store.close()


def test_telling_a_session_that_is_coming_to_rest_does_not_wait_for_it(tmp_path: Path) -> None:
    store = SlowToClose(tmp_path / "a.db")
    s, _, _ = paused_in_a_call(store, [call("wait_gate"), reply("done")])
    while s.status != "paused":
        time.sleep(0.005)
    s.tell("one more thing")
    assert get_runtime().is_running(s.id)  # still closing its pause: tell() did not wait
    assert s.wait(10) == "paused"
    said = [e.payload["text"] for e in s.events if e.kind is EventKind.MESSAGE]
    assert said == ["one more thing"]
    store.close()


class SlowToLoad(SqliteStore):
    """A store slow to give a session's newest snapshot: a run takes a while to start."""

    def latest_snapshot(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return super().latest_snapshot(*args, **kwargs)


def test_status_right_after_resume_says_the_session_runs(tmp_path: Path) -> None:
    store = SlowToLoad(tmp_path / "a.db")
    s, _, _ = paused_in_a_call(store, [call("wait_gate"), reply("done")])
    assert s.wait(10) == "paused"
    s.resume()
    assert s.status in ("running", "done")  # not the "paused" it was a moment before
    assert s.wait(10) == "done"
    store.close()


def test_a_run_starting_here_is_running_here_at_once(tmp_path: Path) -> None:
    """A paused session resumed by a command from elsewhere: while its run starts (slowly
    here: the store is slow to load), its row still says paused, and it runs here."""
    store = SlowToLoad(tmp_path / "a.db")
    s, _, _ = paused_in_a_call(store, [call("wait_gate"), call("wait_gate"), reply("done")])
    assert s.wait(10) == "paused"
    s.store.send_command(s.id, "resume", {}, actor="someone-else")
    deadline = time.monotonic() + 10
    while not get_runtime().is_running(s.id):  # the runtime takes its commands twice a second
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert s.running_here  # at once: not once the run it is starting has ended
    assert s.wait(10) == "done"
    store.close()


class SlowToTakeCommands(SqliteStore):
    """A store slow to hand over commands: a run starting here (it takes what was left for
    it first) is active a while before its task is registered."""

    def take_commands(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return super().take_commands(*args, **kwargs)


def test_wait_for_a_run_that_is_starting_waits_for_that_run(tmp_path: Path) -> None:
    store = SlowToTakeCommands(tmp_path / "a.db")
    s, _, _ = paused_in_a_call(store, [call("wait_gate"), call("wait_gate"), reply("done")])
    assert s.wait(10) == "paused"
    s.store.send_command(s.id, "resume", {}, actor="someone-else")
    deadline = time.monotonic() + 10
    while not get_runtime().is_running(s.id):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert s.wait(10) == "done"  # not the ended run's "paused"
    store.close()
