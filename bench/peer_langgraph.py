"""The workload in LangGraph with its SQLite checkpointer (``SqliteSaver``).

    python -m bench.peer_langgraph --steps 1000 --mode normal --dir /tmp/x [--phase run]

A two-node graph on ``add_messages`` state, as LangGraph documents an agent: ``agent`` (a
scripted model answering with one tool call per turn) and ``tools`` (the instant tool, ~300
bytes), with the checkpointer saving the state after every node. Default durability is
LangGraph's own: ``durability="async"`` (the checkpoint is written while the next node runs)
on WAL with SQLite's default ``synchronous = FULL``; the matched modes use
``durability="sync"`` (each checkpoint written before the next node starts) with the given
``synchronous``.

Phases: ``run`` (time every step), ``resume`` (fresh process: read the newest state, then run
one more step), ``fork`` (branch from the middle checkpoint with ``update_state``, which is
also how LangGraph goes back in time in the same thread).
"""

# no `from __future__ import annotations`: LangGraph reads the State hints at runtime

import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from ._common import (
    checkpoint,
    disk_bytes,
    parser,
    peak_rss_mb,
    pragmas,
    report,
    step_stats,
    stepping_s,
)

THREAD = "bench"


def build(conn: sqlite3.Connection, steps: int, marks: list[float]) -> Any:
    from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    from ._common import TOOL_OUTPUT

    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    def calls_so_far(messages: list[AnyMessage]) -> int:
        """The number of the newest tool result, in O(1): the last message, or (after a
        person's message that follows the final answer) the third from last."""
        for m in (messages[-1], messages[-3] if len(messages) >= 3 else None):
            if isinstance(m, ToolMessage):
                return int(m.tool_call_id.split("_")[1])
        return 0

    def agent(state: State) -> dict[str, Any]:
        last = state["messages"][-1]
        done = calls_so_far(state["messages"])
        if isinstance(last, ToolMessage) and done >= steps:
            return {"messages": [AIMessage(content="done")]}
        call = {"name": "instant", "args": {"n": done + 1}, "id": f"call_{done + 1}"}
        return {"messages": [AIMessage(content="", tool_calls=[call])]}

    def tools(state: State) -> dict[str, Any]:
        call = state["messages"][-1].tool_calls[0]
        marks.append(time.perf_counter())
        return {"messages": [ToolMessage(TOOL_OUTPUT, tool_call_id=call["id"], name="instant")]}

    def route(state: State) -> str:
        return "tools" if getattr(state["messages"][-1], "tool_calls", None) else END

    g = StateGraph(State)
    g.add_node("agent", agent)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=SqliteSaver(conn))


def connect(db: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, check_same_thread=False)  # as LangGraph's docs open it
    if mode != "default":
        pragmas(conn, mode.upper())
    return conn


def config(steps: int, thread: str = THREAD) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": 2 * steps + 10}


def durability(mode: str) -> str:
    return "async" if mode == "default" else "sync"


def run(args: Any, db: Path, import_s: float) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage

    sessions: list[list[float]] = []  # each thread's marks: the first, then any more
    conn = connect(db, args.mode)
    while not sessions or stepping_s(sessions) < args.min_seconds:
        sessions.append([])
        graph = build(conn, args.steps, sessions[-1])
        thread = THREAD if len(sessions) == 1 else f"{THREAD}-{len(sessions)}"
        graph.invoke(
            {"messages": [HumanMessage("benchmark")]},
            config(args.steps, thread),
            durability=durability(args.mode),
        )
        if len(sessions) == 1:
            checkpoint(db)
            stored, rss = disk_bytes([db]), peak_rss_mb()  # of the first thread alone
    conn.close()
    return {
        "import_s": import_s,
        **step_stats(*sessions),
        "disk_bytes": stored,
        "peak_rss_mb": rss,
    }


def resume(args: Any, db: Path, import_s: float) -> dict[str, Any]:
    """Fresh process: the newest state, then one more step (a person asks for one more call)."""
    from langchain_core.messages import HumanMessage

    t0 = time.perf_counter()
    conn = connect(db, args.mode)
    graph = build(conn, args.steps + 1, [])
    state = graph.get_state(config(args.steps))
    t1 = time.perf_counter()
    graph.invoke(
        {"messages": [HumanMessage("one more")]},
        config(args.steps + 2),
        durability=durability(args.mode),
    )
    t2 = time.perf_counter()
    return {
        "import_s": import_s,
        "load_state_ms": (t1 - t0) * 1000,
        "resume_one_step_ms": (t2 - t0) * 1000,
        "messages": len(state.values["messages"]),
    }


def fork(args: Any, db: Path, import_s: float) -> dict[str, Any]:
    """Branch from the middle checkpoint: ``update_state`` on that checkpoint's config."""
    from langchain_core.messages import HumanMessage

    conn = connect(db, args.mode)
    (count,) = conn.execute(  # the measured thread's (a short run's store holds more)
        "SELECT count(*) FROM checkpoints WHERE thread_id = ?", (THREAD,)
    ).fetchone()
    (middle,) = conn.execute(  # checkpoint ids sort in time order (uuid6)
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
        "ORDER BY checkpoint_id LIMIT 1 OFFSET ?",
        (THREAD, count // 2),
    ).fetchone()
    graph = build(conn, args.steps, [])
    before = disk_bytes([db])
    t0 = time.perf_counter()
    at = {"configurable": {"thread_id": THREAD, "checkpoint_ns": "", "checkpoint_id": middle}}
    graph.update_state(at, {"messages": [HumanMessage("try another way")]}, as_node="tools")
    took = time.perf_counter() - t0
    conn.close()
    checkpoint(db)
    return {"import_s": import_s, "fork_ms": took * 1000, "fork_bytes": disk_bytes([db]) - before}


def main() -> None:
    p = parser("python -m bench.peer_langgraph")
    p.add_argument("--phase", choices=("run", "resume", "fork"), default="run")
    args = p.parse_args()
    t0 = time.perf_counter()
    import langgraph.graph  # noqa: F401
    from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: F401

    import_s = time.perf_counter() - t0
    db = Path(args.dir) / "langgraph.sqlite"
    phase = {"run": run, "resume": resume, "fork": fork}[args.phase]
    doc = phase(args, db, import_s)
    report({"system": "langgraph", "mode": args.mode, "steps": args.steps, **doc})


if __name__ == "__main__":
    main()
