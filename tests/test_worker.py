"""Agents made with ``worker=True``: their sessions run in a process beside the kernel.

The notebook's side is a real kernel (``kernel_harness``) whose cells define the model and
tools, as a user's do; the worker is the real process the kernel starts. What the store holds
is checked from the test process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from kernel_harness import Kernels, wait_for
from logs import gone

from jupyter_agent import (
    Agent,
    AnthropicModel,
    ConfigError,
    EventKind,
    InvalidSessionState,
    OpenAIModel,
    Session,
    SqliteStore,
    open_session,
    set_price,
    tool,
)
from jupyter_agent._events import verify_chain
from jupyter_agent._live import PartialText, live_text
from jupyter_agent._models._base import ModelRequest, ModelResponse, Usage
from jupyter_agent._models._prices import PRICES
from jupyter_agent._worker import WorkerError, close_worker, current_worker
from jupyter_agent.testing import FakeProvider, ScriptedModel, call, reply


@pytest.fixture
def own_worker() -> Iterator[None]:
    """This test process's worker goes with the test."""
    try:
        yield
    finally:
        close_worker()


CELL_AGENTS = """
import json, os, time, anyio
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call, reply

@tool(effect="read_only")
async def where() -> str:
    '''Says which process runs it.'''
    await anyio.sleep(0.005)
    return str(os.getpid())

def caller(steps):
    return ScriptedModel(lambda r: call("where") if r.step <= steps else reply("done"))
"""


def test_an_agent_made_in_a_cell_runs_in_the_worker_and_the_notebook_controls_it(
    kernels: Kernels, store: SqliteStore
) -> None:
    kernel = kernels.start()
    kernel.run(CELL_AGENTS)
    first = kernel.run(
        """
        s = Agent("short", model=caller(3), tools=[where], worker=True).run("go", timeout=30)
        from jupyter_agent._worker import current_worker
        print(json.dumps([s.id, s.status, s.result, os.getpid(), current_worker().pid]))
        """
    ).json()
    sid, status, result, kernel_pid, worker_pid = first
    assert (status, result) == ("done", "done")  # run() waited for the worker's session
    outputs = [e.payload["output"] for e in store.iter_events(sid, kinds=[EventKind.TOOL_RESULT])]
    assert outputs == [str(worker_pid)] * 3 and worker_pid != kernel_pid

    long_id = kernel.run(
        """
        s = Agent("long", model=caller(10**6), tools=[where], worker=True).start("go on")
        print(json.dumps(s.id))
        """
    ).json()
    wait_for(lambda: store.get_session(long_id).last_seq > 12, timeout=10, what="steps")
    paused = kernel.run(
        """
        t = time.monotonic(); s.pause()
        while s.status != "paused":
            time.sleep(0.005)
        print(json.dumps(time.monotonic() - t))
        """
    ).json()
    assert paused < 0.3  # the kernel pokes the worker: no wait for its next (0.5 s) round
    at_pause = store.get_session(long_id).last_seq
    time.sleep(0.2)
    assert store.get_session(long_id).last_seq == at_pause
    kernel.run('s.tell("look again"); s.resume()')
    wait_for(lambda: store.get_session(long_id).last_seq > at_pause + 6, timeout=10, what="on")
    stopped = kernel.run("s.stop(); print(json.dumps(s.wait(10)))").json()
    assert stopped == "stopped"
    told = [e for e in store.iter_events(long_id, kinds=[EventKind.MESSAGE])]
    assert [e.payload["text"] for e in told][-1] == "look again"
    assert verify_chain(list(store.iter_events(long_id))) is None


def test_the_worker_leaves_with_its_kernel_and_its_sessions_are_left_interrupted(
    kernels: Kernels, store: SqliteStore
) -> None:
    kernel = kernels.start()
    kernel.run(CELL_AGENTS)
    sid, worker_pid, child_pid = kernel.run(
        """
        s = Agent("long", model=caller(10**6), tools=[where], worker=True).start("go on")
        from jupyter_agent._worker import current_worker
        import multiprocessing  # a process the notebook forks outlives the kernel
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        print(json.dumps([s.id, current_worker().pid, child.pid]))
        """
    ).json()
    try:
        wait_for(lambda: store.get_session(sid).last_seq > 6, timeout=10, what="steps")
        kernel.kill()
        wait_for(lambda: gone(worker_pid), timeout=10, what="the worker exits")
    finally:
        os.kill(child_pid, signal.SIGKILL)
    row = store.get_session(sid)
    assert row.status == "interrupted" and row.runtime_id is None
    (change,) = [
        e
        for e in store.iter_events(sid, kinds=[EventKind.STATUS_CHANGED])
        if e.payload["status"] == "interrupted"
    ]
    assert "kernel has gone" in change.payload["reason"]


@tool(effect="read_only")
def locked() -> str:
    """Holds a lock, which no other process can have."""
    with _LOCK:
        return "ok"


_LOCK = threading.Lock()


def test_a_scripted_model_that_ran_here_can_still_go_to_a_worker(
    db: Path, own_worker: None
) -> None:
    model = ScriptedModel(lambda r: call("locked") if r.step <= 2 else reply("done"))
    assert (
        Agent("here", model=model, tools=[locked], store=db).run("go", timeout=30).status == "done"
    )
    assert model.requests  # it holds requests that refer to this process's sessions
    s = Agent("there", model=model, tools=[locked], store=db, worker=True).run("go", timeout=30)
    assert s.status == "done" and s.row.steps == 3


def test_an_agent_that_cannot_be_sent_to_a_worker_is_refused_when_made(db: Path) -> None:
    lock = threading.Lock()

    @tool(effect="read_only")
    def holds() -> str:
        """Uses a lock made here."""
        with lock:
            return "ok"

    with pytest.raises(ConfigError, match="cannot run in a worker process") as caught:
        Agent(
            "w", model=ScriptedModel(lambda r: call("holds")), tools=[holds], store=db, worker=True
        )
    assert "\n" not in str(caught.value) and "without worker=True" in str(caught.value)


class _OnlyHere:
    """Made again in another process, it raises (as a model's client might)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return _only_in, (os.getpid(),)


def _only_in(pid: int) -> _OnlyHere:
    if os.getpid() != pid:
        raise RuntimeError("this object works only in the process that made it")
    return _OnlyHere()


def test_a_session_the_worker_cannot_run_is_left_interrupted_with_the_reason(
    db: Path, own_worker: None
) -> None:
    only_here = _OnlyHere()
    model = ScriptedModel(lambda r: reply(str(only_here)))
    agent = Agent("w", model=model, tools=[], store=db, worker=True)

    with pytest.raises(WorkerError, match="works only in the process that made it"):
        agent.start("go")
    (row,) = agent.store.list_sessions()
    assert row.status == "interrupted" and row.runtime_id is None
    resumed = Agent("here", model=model, tools=[], store=db).open(row.id).resume()
    assert resumed.wait(10) == "done"  # still resumable, in this process


def test_a_handle_waits_for_a_session_the_worker_runs_and_controls_it(
    db: Path, own_worker: None
) -> None:
    agent = Agent(
        "w",
        model=ScriptedModel(lambda r: call("locked") if r.step <= 400 else reply("all done")),
        tools=[locked],  # a tool of an importable module goes by name; the worker imports it
        store=db,
        worker=True,
    )
    s = agent.start("go")
    assert not s.running_here and s.wait(30) == "done" and s.result == "all done"
    assert s.row.steps == 401


def started_in_the_worker(db: Path) -> tuple[Agent, Session]:
    """An agent of 300 quick steps made with ``worker=True``, started, a few steps in. Each
    turn takes 2 ms at least, so that a control sent at once lands before the end even on a
    busy machine (300 steps of a bare loop can be over in 0.1 s)."""
    agent = Agent(
        "w",
        model=ScriptedModel(
            lambda r: (time.sleep(0.002), call("locked") if r.step <= 300 else reply("all done"))[1]
        ),
        tools=[locked],
        store=db,
        worker=True,
    )
    s = agent.start("go")
    wait_for(lambda: s.row.last_seq > 20, timeout=10, what="steps")
    return agent, s


def test_waiting_on_a_handle_after_a_control_waits_for_the_run_it_asked_for(
    db: Path, own_worker: None
) -> None:
    _, s = started_in_the_worker(db)
    s.pause()
    assert s.wait(10) == "paused"
    assert s.resume().wait(30) == "done"  # not the "paused" it was when the resume was sent


def test_resuming_a_session_that_runs_in_the_worker_is_nothing_to_do(
    db: Path, own_worker: None
) -> None:
    """As for a session running in this process: the run goes on (approve, then resume)."""
    _, s = started_in_the_worker(db)
    assert s.resume() is s
    assert s.wait(30) == "done" and s.row.steps == 301


def test_waiting_on_a_session_whose_worker_died_says_interrupted(
    db: Path, own_worker: None
) -> None:
    agent = Agent(
        "w", model=ScriptedModel(lambda r: call("locked")), tools=[locked], store=db, worker=True
    )
    s = agent.start("go on")
    wait_for(lambda: s.row.last_seq > 20, timeout=10, what="steps")
    worker = current_worker()
    assert worker is not None
    os.kill(worker.pid, signal.SIGKILL)
    assert s.wait(10) == "interrupted"  # at once, not after the dead process's heartbeat ages


@tool(effect="read_only")
def ask_stdin() -> str:
    """Reads a line from stdin, as careless code might."""
    try:
        return input()
    except EOFError:
        return "no input"


@tool(effect="read_only")
def env_and_cwd() -> str:
    """The worker's view of the notebook's setting and folder."""
    return f"{os.environ.get('JUPYTER_AGENT_TEST_SETTING')} {os.getcwd()}"


def test_the_worker_sees_the_notebooks_environment_and_folder_and_no_stdin(
    db: Path, tmp_path: Path, own_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(tool_name: str) -> str:
        agent = Agent(
            "w",
            model=ScriptedModel(lambda r: call(tool_name) if r.step == 1 else reply("ok")),
            tools=[ask_stdin, env_and_cwd],
            store=db,
            worker=True,
        )
        s = agent.run("go", timeout=30)
        assert s.status == "done"
        (result,) = s.store.iter_events(s.id, kinds=[EventKind.TOOL_RESULT])
        return str(result.payload["output"])

    assert run("ask_stdin") == "no input"  # the frames from the kernel are not its stdin
    monkeypatch.setenv("JUPYTER_AGENT_TEST_SETTING", "set later")  # after the worker started
    (tmp_path / "later").mkdir()
    monkeypatch.chdir(tmp_path / "later")
    assert run("env_and_cwd") == f"set later {tmp_path / 'later'}"


def test_a_worker_session_left_interrupted_is_resumed_in_a_worker_again(
    db: Path, own_worker: None
) -> None:
    agent, s = started_in_the_worker(db)
    close_worker()  # as when its kernel restarts
    assert s.status == "interrupted"

    again = open_session(s.id, store=db, tools=[locked], model=agent.model).resume()
    worker = current_worker()
    assert worker is not None and not again.running_here
    holder = again.store.get_runtime(again.row.runtime_id or "")
    assert holder is not None and holder.pid == worker.pid
    assert again.wait(30) == "done"


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_provider_model_object_goes_to_the_worker_and_answers_there(
    db: Path, own_worker: None, wire: str
) -> None:
    script = [call("env_and_cwd"), reply("answered from the worker")]
    with FakeProvider(script, api_key="sk-test") as fake:
        model = (
            OpenAIModel("gpt-4.1-mini", base_url=fake.openai_base_url, api_key="sk-test")
            if wire == "openai"
            else AnthropicModel("claude-x", base_url=fake.anthropic_base_url, api_key="sk-test")
        )
        agent = Agent("w", model=model, tools=[env_and_cwd], store=db, worker=True)
        s = agent.run("go", timeout=30)
        assert (s.status, s.result) == ("done", "answered from the worker")
        assert len(fake.requests) == 2 and not s.running_here


def test_a_price_set_in_the_notebook_is_the_workers_price_too(db: Path, own_worker: None) -> None:
    set_price("openai:my-local", input=1.0, output=2.0)
    try:
        million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
        answer = ModelResponse("priced", usage=million, stop_reason="end_turn")
        with FakeProvider([answer], api_key="sk-test") as fake:
            model = OpenAIModel("my-local", base_url=fake.openai_base_url, api_key="sk-test")
            s = Agent("w", model=model, store=db, worker=True).run("go", timeout=30)
    finally:
        PRICES.pop("openai:my-local")
    assert s.status == "done" and not s.running_here
    assert s.row.cost_usd == 1.0 + 2.0  # a million tokens each way, at the notebook's price


def test_a_provider_model_with_its_own_http_client_is_refused_for_a_worker(db: Path) -> None:
    client = httpx.AsyncClient()
    model = OpenAIModel("m", base_url="http://127.0.0.1:9/v1", http_client=client)
    with pytest.raises(ConfigError, match="own http_client cannot be sent"):
        Agent("w", model=model, tools=[], store=db, worker=True)


class _Streamer:
    """A model that streams the start of its answer, then takes a while to finish it."""

    name = "streamer"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        request.observer.partial("Thinking")
        await anyio.sleep(0.5)
        request.observer.partial("Thinking it over")
        await anyio.sleep(1.0)
        return reply("Thought it over.")


def test_the_text_a_model_streams_in_the_worker_shows_in_the_kernel(
    db: Path, own_worker: None
) -> None:
    s = Agent("w", model=_Streamer(), tools=[], store=db, worker=True).start("think")

    def broken_view(value: PartialText | None) -> None:
        raise RuntimeError("a view that fails")

    live_text.subscribe(s.id, broken_view)
    wait_for(lambda: s.partial_text is not None, timeout=10, what="the streamed text")
    wait_for(
        lambda: s.partial_text == PartialText(1, "Thinking it over"), timeout=10, what="more text"
    )
    assert s.wait(10) == "done" and s.result == "Thought it over."
    wait_for(lambda: s.partial_text is None, timeout=5, what="the streamed text cleared")
    again = Agent("w", model=_Streamer(), tools=[], store=db, worker=True).run("again", timeout=30)
    assert again.status == "done"  # the failing view stopped nothing


def test_a_session_paused_in_the_worker_can_be_released_and_resumed_here(
    db: Path, own_worker: None
) -> None:
    agent, s = started_in_the_worker(db)
    with pytest.raises(InvalidSessionState, match="running in the worker: pause or stop"):
        s.release()
    s.pause()
    assert s.wait(10) == "paused"
    s.release()
    wait_for(lambda: s.row.runtime_id is None, timeout=5, what="the worker lets it go")
    here = Agent("here", model=agent.model, tools=[locked], store=db).open(s.id).resume()
    assert here.running_here and here.wait(30) == "done"


def asking(db: Path, workspace: Path) -> Agent:
    """An agent in the worker whose one call, a file write, waits for a person."""
    return Agent(
        "w",
        model=ScriptedModel([call("write_file", path="a.txt", content="hi"), reply("done")]),
        store=db,
        workspace=workspace,
        policy={"write_file": "ask"},
        worker=True,
    )


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_decision_that_starts_the_worker_reaches_the_run_it_starts(
    db: Path, tmp_path: Path, own_worker: None, decision: str
) -> None:
    agent = asking(db, tmp_path / "ws")
    s = agent.start("write")
    assert s.wait(30) == "awaiting_approval"
    close_worker()  # as when its kernel restarts: the call waits, and nobody holds it
    assert s.status == "awaiting_approval" and s.row.runtime_id is None

    again = open_session(s.id, store=db, model=agent.model)
    (waiting,) = again.pending_approvals
    getattr(again, decision)(waiting.call_id)
    assert current_worker() is not None  # a new worker runs it, with the decision
    assert again.wait(30) == "done" and not again.pending_approvals
    (decided,) = again.store.iter_events(s.id, kinds=[EventKind.APPROVAL_DECIDED])
    assert decided.payload["call_id"] == waiting.call_id
    assert (tmp_path / "ws" / "a.txt").exists() == (decision == "approve")


def test_a_worker_session_waiting_for_a_person_stays_there_until_decided(
    db: Path, tmp_path: Path, own_worker: None
) -> None:
    s = asking(db, tmp_path / "ws").start("write")
    assert s.wait(30) == "awaiting_approval"
    with pytest.raises(InvalidSessionState, match="running in the worker: pause or stop"):
        s.release()  # its run waits there for the decision
    started = time.monotonic()
    assert s.resume().wait(10) == "awaiting_approval"  # nothing to resume: it waits already
    assert time.monotonic() - started < 2
    (waiting,) = s.pending_approvals
    s.approve(waiting.call_id)
    assert s.wait(30) == "done" and (tmp_path / "ws" / "a.txt").read_text() == "hi"


def test_a_restore_the_worker_would_refuse_is_refused_here(db: Path, own_worker: None) -> None:
    _, s = started_in_the_worker(db)
    s.pause()
    assert s.wait(10) == "paused"
    with pytest.raises(ValueError, match=r"already at event \d+: nothing to restore"):
        s.restore(s.row.last_seq)
    step_before = [e.seq for e in s.events if e.kind is EventKind.TOOL_RESULT][-2]
    assert s.restore(step_before) is False  # sent on: the worker rewinds it
    wait_for(
        lambda: any(s.store.iter_events(s.id, kinds=[EventKind.RESTORE])),
        timeout=10,
        what="the restore",
    )
