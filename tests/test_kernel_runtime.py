"""The agent runtime inside real IPython kernels: blocking cells, interrupts, kill -9, restarts.

Every test starts real kernels with ``jupyter_client`` (see ``kernel_harness``) on a store in
``tmp_path``, drives them with cells as a notebook would, and checks what the store holds from
the test process. Kernel-side code (tools, models) is sent as cells, so each kernel defines its
own, as a user's notebook does.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kernel_harness import Kernel, Kernels, percentile, wait_for

from jupyter_agent import EventKind, SqliteStore
from jupyter_agent._events import verify_chain


@contextlib.contextmanager
def sampling(read: Callable[[], object]) -> Iterator[list[object]]:
    """Call ``read`` every 2 ms on a thread while the block runs; yields what it read."""
    seen: list[object] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            seen.append(read())

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def event_count(store: SqliteStore, session_id: str) -> int:
    return store.get_session(session_id).last_seq


def payloads(store: SqliteStore, session_id: str, kind: EventKind) -> list[dict]:
    return [e.payload for e in store.iter_events(session_id, kinds=[kind])]


IMPORTS = """
import json, time
from pathlib import Path
from jupyter_agent import Agent, Schedule, SessionLeased, ToolContext, open_session, tool
from jupyter_agent.testing import ScaledClock, ScriptedModel, call, reply
"""

# A model that calls ``nap`` for ``steps`` turns, then answers; stateless, like every model here.
NAPPER = """
@tool(effect="read_only")
def nap(ms: int) -> str:
    '''Sleeps for ``ms`` milliseconds.'''
    time.sleep(ms / 1000)
    return "rested"

def napper(steps, ms):
    return ScriptedModel(lambda r: call("nap", ms=ms) if r.step <= steps else reply("rested"))
"""


def test_an_agent_keeps_appending_events_while_a_cell_blocks_the_kernel(
    kernels: Kernels, store: SqliteStore
) -> None:
    k = kernels.start()
    k.run(IMPORTS + NAPPER)
    sid = k.run(
        """
        s = Agent("busy", model=napper(10_000, 50), tools=[nap], max_steps=20_000).start("nap")
        print(json.dumps(s.id))
        """
    ).json()

    blocking = k.submit("time.sleep(5)")
    time.sleep(1.0)
    during = [event_count(store, sid)]
    for _ in range(3):
        time.sleep(1.0)
        during.append(event_count(store, sid))
    cell = k.result(blocking)

    assert cell.status == "ok" and cell.seconds >= 5.0  # the samples fell inside the cell
    assert during == sorted(set(during)), f"events stalled while the cell blocked: {during}"
    assert during[-1] - during[0] >= 30  # ~20 steps a second at 50 ms each; 30 events is slack
    assert k.run("s.stop(); print(json.dumps(s.wait(30)))").json() == "stopped"


def test_interrupting_a_blocking_cell_raises_in_the_cell_and_agents_run_on_to_done(
    kernels: Kernels, store: SqliteStore
) -> None:
    k = kernels.start()
    k.run(IMPORTS + NAPPER)
    sids = k.run(
        """
        ss = [Agent(f"a{i}", model=napper(100, 25), tools=[nap]).start("nap") for i in range(3)]
        print(json.dumps([s.id for s in ss]))
        """
    ).json()

    blocking = k.submit("time.sleep(30)")
    time.sleep(1.0)
    k.interrupt()
    cell = k.result(blocking, timeout=10)
    at_interrupt = sum(event_count(store, sid) for sid in sids)

    assert cell.status == "error" and cell.ename == "KeyboardInterrupt"
    assert cell.seconds < 5.0
    assert k.run("print(json.dumps([s.wait(60) for s in ss]))").json() == ["done"] * 3
    assert sum(event_count(store, sid) for sid in sids) > at_interrupt  # they went on after it
    for sid in sids:
        assert len(payloads(store, sid, EventKind.TOOL_RESULT)) == 100
        assert [p["status"] for p in payloads(store, sid, EventKind.STATUS_CHANGED)] == []


# A side-effect tool that appends its call id to a file: what must never happen twice.
BUMPER = """
SIDE = Path({side!r})

@tool(effect="side_effect")
def bump(n: int, ctx: ToolContext) -> str:
    '''Appends this call's id to the side-effect file, then takes a while to report back.'''
    with SIDE.open("a") as f:
        f.write(ctx.call_id + "\\n")
    time.sleep(0.2)
    return f"bumped {{n}}"

bumper = ScriptedModel(lambda r: call("bump", n=r.step) if r.step <= 8 else reply("bumped 8"))
"""


def kill_inside_a_side_effect_call(
    kernels: Kernels, store: SqliteStore, side: Path, *, after_calls: int
) -> tuple[Kernel, str]:
    """Run a ``bump`` session and kill -9 its kernel while call ``after_calls + 1`` is running
    (its line is written, its result is not recorded: the call is in doubt)."""
    side.touch()
    k = kernels.start()
    k.run(IMPORTS + BUMPER.format(side=str(side)))
    sid = k.run(
        "s = Agent('bumper', model=bumper, tools=[bump]).start('bump')\nprint(json.dumps(s.id))"
    ).json()

    def in_call() -> bool:
        lines = len(side.read_text().splitlines())
        return lines > after_calls and lines > len(payloads(store, sid, EventKind.TOOL_RESULT))

    wait_for(in_call, timeout=30, what="a bump call in progress")
    k.kill()
    return k, sid


def test_a_new_kernel_sees_the_session_of_a_killed_kernel_as_interrupted_within_5_s(
    kernels: Kernels, store: SqliteStore, tmp_path: Path
) -> None:
    old, sid = kill_inside_a_side_effect_call(kernels, store, tmp_path / "side.txt", after_calls=2)
    killed_at = time.monotonic()
    new = kernels.start()
    new.run(IMPORTS)
    seen = new.run(
        f"""
        s = open_session({sid!r})
        while s.status != "interrupted":
            time.sleep(0.01)
        print(json.dumps(s.status))
        """,
        timeout=10,
    ).json()
    took = time.monotonic() - killed_at

    assert seen == "interrupted" and took < 5.0
    (change,) = [
        e
        for e in store.iter_events(sid, kinds=[EventKind.STATUS_CHANGED])
        if e.payload["status"] == "interrupted"
    ]
    assert change.actor == "runtime" and f"pid {old.pid}" in change.payload["reason"]
    assert store.get_session(sid).runtime_id is None  # the dead kernel's lease is gone


def test_a_session_resumed_after_kill_9_finishes_and_runs_no_recorded_call_again(
    kernels: Kernels, store: SqliteStore, tmp_path: Path
) -> None:
    side = tmp_path / "side.txt"
    _old, sid = kill_inside_a_side_effect_call(kernels, store, side, after_calls=3)
    in_doubt = side.read_text().split()[-1]
    new = kernels.start()
    new.run(IMPORTS + BUMPER.format(side=str(side)))

    waiting = new.run(
        f"""
        s = open_session({sid!r}, tools=[bump], model=bumper)
        s.resume()
        print(json.dumps([s.wait(30), [a.call_id for a in s.pending_approvals]]))
        """
    ).json()
    assert waiting == ["awaiting_approval", [in_doubt]]  # a side effect is never re-run blindly
    status = new.run(
        f"s.deny({in_doubt!r}, reason='checked by hand')\nprint(json.dumps(s.wait(30)))"
    ).json()

    assert status == "done"
    ran = collections.Counter(side.read_text().split())
    results = {p["call_id"]: p for p in payloads(store, sid, EventKind.TOOL_RESULT)}
    assert len(results) == 8 and results[in_doubt].get("skipped") is True
    assert ran[in_doubt] == 1  # it ran once, before the kill, and not again
    for call_id, result in results.items():
        if not result.get("skipped"):
            assert ran[call_id] == 1, f"{call_id} ran {ran[call_id]} times"
    assert set(ran) == set(results) and max(ran.values()) == 1
    assert verify_chain(list(store.iter_events(sid))) is None


# A call that holds its session until the test creates the gate file.
GATED = """
GATE = Path({gate!r})

@tool(effect="read_only")
def gate() -> str:
    '''Waits until the gate opens.'''
    while not GATE.exists():
        time.sleep(0.01)
    return "open"

gated = ScriptedModel([call("gate"), reply("through the gate")])
"""


def test_a_second_kernel_cannot_resume_a_session_another_live_kernel_runs(
    kernels: Kernels, store: SqliteStore, tmp_path: Path
) -> None:
    gate_file = tmp_path / "gate"
    a, b = kernels.start(), kernels.start()
    for k in (a, b):
        k.run(IMPORTS + GATED.format(gate=str(gate_file)))
    sid, a_runtime = a.run(
        """
        s = Agent("gated", model=gated, tools=[gate]).start("go through")
        print(json.dumps([s.id, s.row.runtime_id]))
        """
    ).json()
    wait_for(lambda: bool(payloads(store, sid, EventKind.TOOL_CALL)), timeout=10, what="gate call")

    with sampling(lambda: store.get_session(sid).runtime_id) as holders:
        refused = b.run(
            f"""
            try:
                open_session({sid!r}, tools=[gate], model=gated).resume()
                print(json.dumps(None))
            except SessionLeased as e:
                print(json.dumps([str(e), e.owner.pid, e.owner.id]))
            """
        ).json()
        gate_file.touch()
        status = a.run("print(json.dumps(s.wait(30)))").json()

    assert refused is not None, "the second kernel resumed a session the first one runs"
    message, owner_pid, owner_runtime = refused
    assert f"pid {a.pid}" in message and a_runtime in message
    assert (owner_pid, owner_runtime) == (a.pid, a_runtime)
    assert status == "done"
    assert set(holders) - {None} == {a_runtime}  # None once A finished and let it go
    assert [p["status"] for p in payloads(store, sid, EventKind.STATUS_CHANGED)] == []


# A monitor: each turn calls the read-only ``check``, then answers; the schedule wakes it.
MONITOR = """
SPEED = {speed}

@tool(effect="read_only")
def check() -> str:
    '''Reads the monitored value.'''
    return "p95 212 ms"

monitor = ScriptedModel(lambda r: reply("fine") if r.messages[-1].role == "tool" else call("check"))

def resume_monitor(sid):
    # ts of the session's own clock: the runtime's "interrupted" event has the wall time
    left_off = max(e.ts for e in open_session(sid).events)
    clock = ScaledClock(speed=SPEED, start=left_off)
    return open_session(sid, tools=[check], model=monitor, clock=clock).resume()
"""


def run_monitor_across_restarts(
    kernels: Kernels, store: SqliteStore, *, speed: int, restart_at: list[int]
) -> tuple[str, str]:
    """Start a 120-tick hourly monitor, restart its kernel (kill -9, SIGKILL restart, graceful
    restart, in turn) once ``restart_at[i]`` ticks fired, resume it each time; wait till it ends.

    Returns the session id and the status it ended in."""
    code = IMPORTS + MONITOR.format(speed=speed)
    k = kernels.start()
    k.run(code)
    sid = k.run(
        """
        hourly = Schedule(every_s=3600, times=120)
        s = Agent("monitor", model=monitor, tools=[check], schedule=hourly,
                  clock=ScaledClock(speed=SPEED), max_steps=1000).start("watch p95")
        print(json.dumps(s.id))
        """
    ).json()
    ways: list[Callable[[], None]] = [
        lambda: (k.kill(), k.restart(now=True)),
        lambda: k.restart(now=True),
        lambda: k.restart(now=False),
    ]
    for ticks, restart in zip(restart_at, ways, strict=True):
        wait_for(
            lambda t=ticks: len(payloads(store, sid, EventKind.TIMER_FIRED)) >= t,
            timeout=60,
            what=f"tick {ticks}",
        )
        restart()
        k.run(code)
        k.run(f"s = resume_monitor({sid!r})")
    status: str = k.run("print(json.dumps(s.wait(120)))", timeout=150).json()
    return sid, status


def test_a_scheduled_monitor_fires_each_of_120_ticks_once_across_3_kernel_restarts(
    kernels: Kernels, store: SqliteStore
) -> None:
    sid, status = run_monitor_across_restarts(kernels, store, speed=36_000, restart_at=[30, 60, 90])

    assert status == "done"
    fired = payloads(store, sid, EventKind.TIMER_FIRED)
    assert [p["tick"] for p in fired] == list(range(1, 121))
    assert [p for p in fired if p["skipped"]] == []
    interrupted = [
        e
        for e in store.iter_events(sid, kinds=[EventKind.STATUS_CHANGED])
        if e.payload["status"] == "interrupted"
    ]
    assert [e.actor for e in interrupted] == ["runtime"] * 3
    killed, sigkill_restart, graceful = (e.payload["reason"] for e in interrupted)
    assert killed.endswith("stopped") and sigkill_restart.endswith("stopped")  # found by a sweep
    assert graceful == "its kernel shut down"  # marked by the old kernel's atexit hook


def test_50_demo_agents_started_in_one_cell_finish_while_cells_answer_within_1_s(
    kernels: Kernels, store: SqliteStore
) -> None:
    k = kernels.start()
    k.run(IMPORTS)
    sids = k.run(
        """
        ss = [
            Agent(f"demo-{i}", model="demo:loop?steps=50&pace=0.02").start("loop")
            for i in range(50)
        ]
        print(json.dumps([s.id for s in ss]))
        """
    ).json()

    def all_done() -> bool:
        return len(store.list_sessions(status="done")) == 50

    latencies = []
    while not all_done():
        cell = k.run("1 + 1", timeout=10)
        latencies.append(cell.seconds)
    statuses = k.run("print(json.dumps([s.wait(60) for s in ss]))").json()

    assert statuses == ["done"] * 50
    assert all(store.get_session(sid).steps == 51 for sid in sids)
    assert len(latencies) >= 5, "the agents finished before cells could be timed"
    assert percentile(latencies, 95) < 1.0, f"1+1 round trips while agents ran: {latencies}"


# Agents whose steps never wait long: the agents' loop is busy all the time.
QUICK_AGENTS = """
import anyio, sqlite3

@tool(effect="read_only")
async def tick() -> str:
    '''Waits 5 ms.'''
    await anyio.sleep(0.005)
    return "ok"

quick = [
    Agent(f"quick-{i}", model=ScriptedModel(lambda r: call("tick")), tools=[tick],
          max_steps=10**9).start("tick until stopped")
    for i in range(5)
]
time.sleep(0.5)

def events():
    with sqlite3.connect(quick[0].store.path) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
"""

# Counts the agents' events 5 ms into a cell, at 25 ms (well inside the 50 ms hold, even if
# the cell's code starts late), and at 300 ms.
DURING_A_CELL = """
time.sleep(0.005); a = events(); time.sleep(0.02); b = events(); time.sleep(0.275); c = events()
print(json.dumps([b - a, c - b]))
"""


# Notes, as each request's handler begins, whether the agents' loop waits for it already.
RECORD_HOLDS = """
from jupyter_agent._give_way import GIVE_WAY
kernel = get_ipython().kernel
held_as_handled = []
handler_begins = kernel.pre_handler_hook  # the runtime's hook, which begins the hold
def noting_hook():
    held_as_handled.append(GIVE_WAY.holds())
    handler_begins()
kernel.pre_handler_hook = noting_hook
"""


def test_agents_in_the_kernel_wait_from_when_a_cell_reaches_the_kernel(kernels: Kernels) -> None:
    # (ipykernel's shell channel thread receives a request and passes it on to the thread that
    # handles it: each hop would wait for the interpreter lock the agents' loop holds)
    k = kernels.start()
    k.run(IMPORTS + QUICK_AGENTS + RECORD_HOLDS)
    for _ in range(10):
        time.sleep(0.06)  # past the agents' turn after the last request
        k.run("1 + 1")
    time.sleep(0.06)  # (this cell's request is noted too: it is held as the others are)
    held = k.run("print(json.dumps(held_as_handled))").json()
    assert len(held) >= 10 and all(held), f"waiting as each handler began: {held}"
    k.run("for s in quick: s.stop()\nfor s in quick: s.wait(30)")


def test_agents_in_the_kernel_wait_while_a_cell_runs_and_share_again_after_50_ms(
    kernels: Kernels,
) -> None:
    k = kernels.start()
    k.run(IMPORTS + QUICK_AGENTS)
    held, after = k.run(DURING_A_CELL).json()
    assert held == 0, f"agents wrote {held} events while the cell had the kernel"
    assert after > 50, f"agents wrote {after} events in the rest of a 300 ms cell"
    k.run("for s in quick: s.stop()\nfor s in quick: s.wait(30)")

    off = kernels.start(JUPYTER_AGENT_GIVE_WAY="0")  # the switch that turns it off
    off.run(IMPORTS + QUICK_AGENTS)
    held, _ = off.run(DURING_A_CELL).json()
    assert held > 20, f"with give-way off, agents wrote only {held} events during the cell"
    off.run("for s in quick: s.stop()\nfor s in quick: s.wait(30)")


def test_agents_in_the_kernels_worker_wait_while_a_cell_runs_too(kernels: Kernels) -> None:
    # (the worker has an interpreter lock of its own, but not cores of its own)
    in_worker = QUICK_AGENTS.replace("max_steps=10**9)", "max_steps=10**9, worker=True)")
    assert in_worker != QUICK_AGENTS
    k = kernels.start()
    k.run(IMPORTS + in_worker)
    in_it = "from jupyter_agent._worker import current_worker as w\n"
    in_it += "print(json.dumps([s.row.runtime_id == w().runtime_id for s in quick]))"
    assert k.run(in_it).json() == [True] * 5
    time.sleep(0.06)  # past the agents' turn after the last request
    held, after = k.run(DURING_A_CELL).json()
    assert held == 0, f"the worker's agents wrote {held} events while the cell had the kernel"
    assert after > 50, f"the worker's agents wrote {after} events in the rest of a 300 ms cell"
    k.run("for s in quick: s.stop()\nfor s in quick: s.wait(30)")

    off = kernels.start(JUPYTER_AGENT_GIVE_WAY="0")
    off.run(IMPORTS + in_worker)
    held, _ = off.run(DURING_A_CELL).json()
    assert held > 20, f"with give-way off, the worker's agents wrote only {held} events"
    off.run("for s in quick: s.stop()\nfor s in quick: s.wait(30)")
