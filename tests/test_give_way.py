"""The agents' loop giving way to the kernel (``_give_way``), driven from real threads.

A thread plays the agents' loop: it calls ``GiveWay()`` at each of its "steps" (a little work
each) and notes when each call returned; the test's thread plays the kernel, beginning and
ending requests. The kernel-side tests (the hooks in a real ipykernel) are in
``test_kernel_runtime.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from jupyter_agent import Agent, tool
from jupyter_agent._give_way import (
    ARRIVING_S,
    BREATHE_EVERY_S,
    GIVE_WAY,
    HOLD_S,
    TAIL_S,
    GiveWay,
)
from jupyter_agent.testing import ScriptedModel, call, reply


class Loop:
    """A thread calling ``give_way()`` between steps of ``work_s`` of busy work."""

    def __init__(self, give_way: GiveWay, work_s: float = 0.0001) -> None:
        self.give_way, self.work_s = give_way, work_s
        self.returned: list[float] = []  # when each call returned
        self.inside_s = 0.0  # time spent inside the calls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.give_way()
            now = time.monotonic()
            self.inside_s += now - began
            self.returned.append(now)
            while time.monotonic() - now < self.work_s:
                pass  # a step's work, holding the interpreter lock

    def between(self, start: float, end: float) -> list[float]:
        return [t for t in self.returned if start < t < end]


@contextmanager
def running(give_way: GiveWay, work_s: float = 0.0001) -> Iterator[Loop]:
    loop = Loop(give_way, work_s)
    loop._thread.start()
    try:
        yield loop
    finally:
        loop._stop.set()
        loop._thread.join()


def test_the_loop_waits_while_the_kernel_handles_a_request_and_goes_on_after_it() -> None:
    gw = GiveWay()
    with running(gw) as loop:
        time.sleep(0.05)
        began = time.monotonic()
        gw.request_began()
        time.sleep(0.03)
        ended = time.monotonic()
        gw.request_ended()
        time.sleep(0.05)
    # one step in flight may finish once the request began; then nothing until it ended
    assert len(loop.between(began + 0.002, ended + TAIL_S)) <= 1
    assert loop.between(ended + TAIL_S, ended + TAIL_S + 0.02), "the loop did not go on after"
    assert loop.between(began - 0.02, began), "the loop was not running before"


def test_the_loop_waits_from_when_a_request_reaches_the_kernel() -> None:
    gw = GiveWay()
    with running(gw) as loop:
        time.sleep(0.02)
        arrived = time.monotonic()
        gw.request_arriving()  # the shell channel's thread received it
        assert gw.holds()
        time.sleep(ARRIVING_S / 2)
        gw.request_began()  # its handler begins on another thread
        time.sleep(0.02)
        ended = time.monotonic()
        gw.request_ended()
        time.sleep(0.06)  # (past the agents' turn after it)
        lost = time.monotonic()
        gw.request_arriving()  # and one that no handler takes up
        time.sleep(ARRIVING_S * 4)
    assert len(loop.between(arrived + 0.002, ended + TAIL_S)) <= 1
    assert len(loop.between(lost + 0.002, lost + ARRIVING_S)) <= 1
    assert loop.between(lost + ARRIVING_S, lost + ARRIVING_S * 4), "held after ARRIVING_S"


def test_a_long_request_holds_the_loop_for_at_most_hold_s() -> None:
    gw = GiveWay()
    with running(gw) as loop:
        time.sleep(0.02)
        began = time.monotonic()
        gw.request_arriving()
        time.sleep(0.002)
        gw.request_began()
        time.sleep(HOLD_S * 3)
        gw.request_ended()
    # (counted from the request's arrival)
    assert len(loop.between(began + 0.002, began + HOLD_S - 0.002)) <= 1
    assert loop.between(began + HOLD_S + 0.001, began + HOLD_S + 0.01), "held past HOLD_S"
    resumed = loop.between(began + HOLD_S, began + HOLD_S * 3)
    assert len(resumed) > 100, "the agents did not share the lock again during a long request"


def test_requests_back_to_back_hold_the_loop_no_longer_than_it_then_runs() -> None:
    gw = GiveWay()
    with running(gw) as loop:
        time.sleep(0.02)
        start = time.monotonic()
        while time.monotonic() - start < 0.5:  # a client sending cells with no pause
            gw.request_arriving()
            gw.request_began()
            time.sleep(0.002)
            gw.request_ended()
        end = time.monotonic()
    # the loop's calls return while it runs: count the time in 1 ms slots it ran in
    ran = {int((t - start) * 1000) for t in loop.between(start, end)}
    assert len(ran) / ((end - start) * 1000) > 0.3, "the agents starved"


def test_a_cell_that_waits_on_its_agents_gives_the_loop_back_at_once() -> None:
    gw = GiveWay()
    with running(gw) as loop:
        time.sleep(0.02)
        gw.request_began()
        time.sleep(0.005)
        given = time.monotonic()
        gw.give_back()  # what session.wait() and the runtime's blocking calls do
        time.sleep(0.02)
        gw.request_ended()
    assert loop.between(given, given + 0.01), "the loop still waited after it was given back"


def test_a_busy_loop_breathes_while_the_notebook_is_in_use_and_not_before() -> None:
    gw = GiveWay()
    with running(gw, work_s=BREATHE_EVERY_S / 10) as loop:
        time.sleep(0.1)
        before = loop.inside_s
        assert before < 0.01, "the loop gave way with nobody using the notebook"
        gw.request_began()
        gw.request_ended()
        time.sleep(TAIL_S * 2)
        inside0, t0 = loop.inside_s, time.monotonic()
        time.sleep(0.2)
        share = (loop.inside_s - inside0) / (time.monotonic() - t0)
    # it sleeps BREATH_S after each BREATHE_EVERY_S of work: about a third of the time
    assert share > 0.15, f"the loop gave way {share:.0%} of the time while in use"


def test_a_process_that_is_not_a_kernel_never_imports_ipython_to_find_out(tmp_path: Path) -> None:
    # (importing IPython costs ~40 ms: it was a third of a resume of 1,000 steps)
    script = f"""
import sys
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call, reply

@tool(effect="read_only")
def ping() -> str:
    '''Answers.'''
    return "pong"

model = ScriptedModel(lambda r: call("ping") if r.step == 1 else reply("done"))
s = Agent("plain", model=model, tools=[ping], store={str(tmp_path / "a.db")!r}).start("go")
assert s.wait(30) == "done"
print("IPython" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_overlapping_requests_hold_the_loop_for_at_most_hold_s_from_the_first() -> None:
    gw = GiveWay()
    with running(gw) as loop:
        time.sleep(0.02)
        began = time.monotonic()
        gw.request_began()  # a cell
        time.sleep(0.03)
        other = threading.Thread(target=lambda: (gw.request_began(), gw.request_ended()))
        other.start()  # a subshell's request, begun and ended while the cell runs
        other.join()
        time.sleep(HOLD_S * 2)
        gw.request_ended()
    assert len(loop.between(began + 0.002, began + HOLD_S - 0.002)) <= 1
    # (the subshell's request began 30 ms in: re-arming the hold then would end it at 80 ms)
    assert loop.between(began + HOLD_S + 0.005, began + HOLD_S + 0.025), "held past HOLD_S"


def test_a_process_forked_from_a_kernel_gives_way_to_nothing() -> None:
    GIVE_WAY.request_began()  # as if this process were a kernel handling a cell
    try:
        pid = os.fork()
        if pid == 0:  # the child: no request of its own, nobody using it
            os._exit(0 if not GIVE_WAY._in_use_until and not GIVE_WAY._held_until else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        GIVE_WAY.request_ended()
        GIVE_WAY.forget()
    assert os.waitstatus_to_exitcode(status) == 0


def test_starting_an_agent_while_the_kernel_holds_the_loop_does_not_wait_out_the_hold(
    tmp_path: Path,
) -> None:
    @tool(effect="read_only")
    async def tick() -> str:
        """Waits 5 ms."""
        await anyio.sleep(0.005)
        return "ok"

    store = str(tmp_path / "a.db")
    busy = [
        Agent(
            f"busy-{i}", model=ScriptedModel(lambda r: call("tick")), tools=[tick], store=store
        ).start("tick")
        for i in range(5)
    ]
    took = []
    try:
        time.sleep(0.2)
        for i in range(5):
            GIVE_WAY.request_began()  # what the kernel's hook does as a cell begins
            try:
                t0 = time.monotonic()
                quick = ScriptedModel(lambda r: reply("done"))
                Agent(f"new-{i}", model=quick, store=store).start("answer")
                took.append(time.monotonic() - t0)
            finally:
                GIVE_WAY.request_ended()
            time.sleep(0.06)
    finally:
        GIVE_WAY.forget()
        for s in busy:
            s.stop()
        for s in busy:
            s.wait(30)
    assert statistics.median(took) < HOLD_S * 0.6, f"start() took {took} s under a hold"


# A worker's loop: follows the holds on the descriptor it inherited, calls ``GIVE_WAY()``
# between steps of 0.1 ms and prints when each call returned (``time.monotonic``).
FOLLOWER = """
import json, os, sys, time
from jupyter_agent._give_way import GIVE_WAY
GIVE_WAY.follow(int(sys.argv[1]))
returned, end = [], time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while (now := time.monotonic()) < end:
    GIVE_WAY()
    returned.append(time.monotonic())
    while time.monotonic() - returned[-1] < 0.0001:
        pass
print(json.dumps(returned))
"""


def test_a_worker_waits_while_its_kernel_holds_and_goes_on_when_the_hold_ends() -> None:
    kernel = GiveWay()
    kernel.installed = True  # as in a kernel (install_in_kernel)
    fd = kernel.share()
    assert fd >= 0 and kernel.share() == fd  # one map, however many workers it starts
    worker = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, str(fd), "0.6"],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(fd,),
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready"
    time.sleep(0.05)
    ended_early = time.monotonic()
    kernel.request_began()  # a quick cell: 20 ms
    time.sleep(0.02)
    kernel.request_ended()
    released = time.monotonic()
    time.sleep(0.2)
    long_cell = time.monotonic()
    kernel.request_began()  # a cell of 200 ms: the worker waits HOLD_S of it
    time.sleep(0.2)
    kernel.request_ended()
    returned = json.loads(worker.communicate(timeout=30)[0])

    def between(start: float, end: float) -> list[float]:
        return [t for t in returned if start < t < end]

    assert len(between(ended_early + 0.002, released)) <= 1, "it went on while the cell ran"
    assert between(released + TAIL_S, released + TAIL_S + 0.02), "it waited past the hold"
    assert len(between(long_cell + 0.002, long_cell + HOLD_S - 0.002)) <= 1
    assert between(long_cell + HOLD_S + TAIL_S, long_cell + HOLD_S + 0.03), "held past HOLD_S"
    assert len(returned) > 1000  # and otherwise it ran on


def test_a_worker_waits_no_longer_than_a_hold_whatever_its_kernel_wrote() -> None:
    kernel = GiveWay()
    kernel.installed = True
    fd = kernel.share()
    kernel._hold_until(time.monotonic() + 3600)  # a kernel gone mid-hold, or a torn write
    follower = GiveWay()
    follower.follow(os.dup(fd))
    waited: list[float] = []

    def step() -> None:
        began = time.monotonic()
        follower()
        waited.append(time.monotonic() - began)

    loop = threading.Thread(target=step, daemon=True)
    loop.start()
    loop.join(2)
    assert waited, "the worker still waits"
    assert HOLD_S <= waited[0] < HOLD_S + TAIL_S + 0.02


def test_a_process_not_in_a_kernel_has_no_holds_to_share() -> None:
    assert GiveWay().share() == -1
