"""The workload in DBOS: one durable workflow whose steps are the tool calls.

    python -m bench.peer_dbos --steps 1000 --mode normal --dir /tmp/x [--phase run]

A scripted model (deterministic, so it runs inside the workflow) asks for one tool call per
turn; the tool is a ``@DBOS.step`` returning ~300 bytes, whose output DBOS records in its
SQLite system database before the workflow goes on. Default durability is DBOS's own: a
rollback journal with SQLite's default ``synchronous = FULL``; the matched modes put its
connections on WAL with the given ``synchronous``.

Phases: ``run`` (time every step), ``crash`` (run ``steps`` steps, then die in the next one:
the workflow is left pending), ``resume`` (fresh process: the workflow is run again under its
id, replaying the recorded steps, then one more step), ``fork`` (``DBOS.fork_workflow`` from
the middle step of a finished workflow).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ._common import (
    TOOL_OUTPUT,
    checkpoint,
    disk_bytes,
    parser,
    peak_rss_mb,
    report,
    step_stats,
    stepping_s,
)

WORKFLOW_ID = "bench-agent"


def main() -> None:
    p = parser("python -m bench.peer_dbos")
    p.add_argument("--phase", choices=("run", "crash", "resume", "fork"), default="run")
    args = p.parse_args()
    t0 = time.perf_counter()
    import sqlalchemy as sa
    from dbos import DBOS, SetWorkflowID

    import_s = time.perf_counter() - t0
    db = Path(args.dir) / "dbos.sqlite"
    if args.mode != "default":
        synchronous = args.mode.upper()

        @sa.event.listens_for(sa.engine.Engine, "connect")
        def _matched(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode = WAL")
            dbapi_conn.execute(f"PRAGMA synchronous = {synchronous}")

    sessions: list[list[float]] = [[]]  # each workflow's marks: the first, then any more
    began: list[float] = []  # when a (resumed) workflow's model first ran
    replayed: list[float] = []  # when it reached the end of what was recorded
    finished: list[float] = []  # when its model gave the final answer
    steps = args.steps + 1 if args.phase == "resume" else args.steps

    @DBOS.step()
    def instant(n: int) -> str:
        sessions[-1].append(time.perf_counter())
        if args.phase == "crash" and n > args.steps:
            os._exit(0)  # die mid-step: the workflow stays pending with `steps` steps recorded
        return TOOL_OUTPUT

    def model(messages: list[dict[str, Any]]) -> dict[str, Any]:
        n = (len(messages) - 1) // 2
        if not began:
            began.append(time.perf_counter())
        if n == args.steps and not replayed:
            replayed.append(time.perf_counter())
        if n >= steps and args.phase != "crash":
            return {"role": "assistant", "content": "done"}
        return {"role": "assistant", "tool_call": {"name": "instant", "args": {"n": n + 1}}}

    @DBOS.workflow()
    def agent(goal: str) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": goal}]
        while True:
            answer = model(messages)
            messages.append(answer)
            call = answer.get("tool_call")
            if call is None:
                finished.append(time.perf_counter())
                return str(answer["content"])
            messages.append({"role": "tool", "content": instant(**call["args"])})

    t1 = time.perf_counter()
    url = f"sqlite:///{db}"
    DBOS(config={"name": "bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    launched = time.perf_counter()
    doc: dict[str, Any] = {"import_s": import_s, "launch_ms": (launched - t1) * 1000}
    if args.phase == "fork":
        before = disk_bytes([db])
        t2 = time.perf_counter()
        DBOS.fork_workflow(WORKFLOW_ID, args.steps // 2)
        doc["fork_ms"] = (time.perf_counter() - t2) * 1000
        DBOS.destroy()
        doc["fork_bytes"] = disk_bytes([db]) - before
    else:
        with SetWorkflowID(WORKFLOW_ID):
            agent("benchmark")
        if args.phase == "run":
            if args.mode != "default":
                checkpoint(db)
            doc["disk_bytes"] = disk_bytes([db])  # of the first workflow alone
            doc["peak_rss_mb"] = peak_rss_mb()
            while stepping_s(sessions) < args.min_seconds:
                sessions.append([])
                with SetWorkflowID(f"{WORKFLOW_ID}-{len(sessions)}"):
                    agent("benchmark")
        DBOS.destroy()
        if args.phase == "resume":
            # recovery hands the pending workflow to DBOS's internal queue, whose worker polls
            doc["dispatch_ms"] = (began[0] - launched) * 1000
            doc["load_state_ms"] = (replayed[0] - began[0]) * 1000  # replaying recorded steps
            doc["resume_one_step_ms"] = (finished[-1] - began[0]) * 1000
        else:
            doc.update(step_stats(*sessions))
    report({"system": "dbos", "mode": args.mode, "steps": args.steps, **doc})


if __name__ == "__main__":
    main()
