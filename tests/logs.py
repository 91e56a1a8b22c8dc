"""Helpers shared by tests: a bare session, a log cut by a 'crash', a tool that waits for the
test, whether a process is gone."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from jupyter_agent import EventKind, SqliteStore, tool
from jupyter_agent._events import EventChain


def new_session(store: SqliteStore, sid: str = "s1") -> EventChain:
    """A session with only its ``session_started`` event; returns its chain to go on with."""
    chain = EventChain(sid)
    started = {"name": "t", "model": "demo", "goal": "g", "tools": [], "workspace": "."}
    e = chain.next(EventKind.SESSION_STARTED, started, ts=1.0)
    store.write(
        [e],
        session={
            "id": sid,
            "name": "t",
            "status": "running",
            "created_at": 1.0,
            "updated_at": 1.0,
            "last_seq": 1,
            "last_hash": e.hash,
        },
    )
    return chain


def cut_log(
    session, *, after: EventKind, nth: int = 1, last: bool = False, path: Path | None = None
) -> Path:
    """Copy ``session``'s log up to its ``nth`` (or ``last``) ``after`` event into a new
    store: the log a process killed at that point would have left."""
    events = session.events
    marks = [i for i, e in enumerate(events) if e.kind is after]
    cut = (marks[-1] if last else marks[nth - 1]) + 1
    path = path or Path(session.store.path).parent / "crashed.db"
    row = session.row
    with SqliteStore(path) as store:
        store.write(
            events[:cut],
            session={
                "id": session.id,
                "name": row.name,
                "status": "running",
                "model": row.model,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "last_seq": events[cut - 1].seq,
                "last_hash": events[cut - 1].hash,
            },
        )
    return path


def gated_tool() -> tuple[Any, threading.Event, threading.Event]:
    """A tool that blocks until the test opens the gate, so the test can act mid-session."""
    gate, entered = threading.Event(), threading.Event()

    @tool(effect="read_only")
    def wait_gate() -> str:
        """Waits for the test."""
        entered.set()
        assert gate.wait(30)
        return "through"

    return wait_gate, gate, entered


def paused_after_a_call(db: Path, name: str = "a") -> tuple[Any, Any]:
    """A session paused after its first call (one the test held open), its answer still to
    come, and its model (which says "done" when the session is resumed)."""
    from jupyter_agent import Agent
    from jupyter_agent.testing import ScriptedModel, call, reply

    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), reply("done")])
    s = Agent(name, model=model, store=db, tools=[wait_gate]).start("go")
    assert entered.wait(10)
    s.pause()
    gate.set()
    assert s.wait(10) == "paused"
    return s, model


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
