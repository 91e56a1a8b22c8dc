"""The benchmark workload: a scripted model making one tool call per turn, an instant tool.

Shared with the resume probe, which runs in a fresh process (``python -m bench._workload``).
"""

from __future__ import annotations

import json
import sys
import time

from jupyter_agent import Agent, ToolContext, open_session, tool
from jupyter_agent._runtime import get_runtime
from jupyter_agent.testing import ScriptedModel, call, reply

PAYLOAD = "x" * 300  # what the instant tool returns: about 300 bytes


def make_model(steps: int) -> ScriptedModel:
    def turn(request):  # stateless, so a fresh process continues the same script
        n = (len(request.messages) - 1) // 2  # goal, then (assistant, tool) per turn: O(1)
        return reply("done") if n >= steps else call("instant", n=n)

    return ScriptedModel(turn)


def make_tool(marks: list[float], pause_at: int | None = None):
    @tool(effect="read_only")
    async def instant(n: int, ctx: ToolContext) -> str:
        """Returns at once."""
        marks.append(time.perf_counter())
        if pause_at is not None and n + 1 >= pause_at:
            get_runtime().inbox(ctx.session_id).pause_requested = True
        return PAYLOAD

    return instant


def run_session(db: str, steps: int, *, pause_at: int | None = None) -> tuple[str, list[float]]:
    """Run ``steps`` tool-calling turns; return the session id and one time mark per step."""
    marks: list[float] = []
    agent = Agent(
        "bench",
        model=make_model(steps + 1),
        tools=[make_tool(marks, pause_at)],
        store=db,
        max_steps=steps + 10,
    )
    session = agent.start("benchmark")
    session.wait()
    session.release()  # a fresh process resumes it in the resume probe
    return session.id, marks


def resume_probe(db: str, session_id: str, steps: int) -> dict[str, float]:
    """In a fresh process: time to rebuild the state, and to run one more step to the end."""
    t0 = time.perf_counter()
    session = open_session(session_id, store=db, tools=[make_tool([])], model=make_model(steps))
    state = session.state
    t1 = time.perf_counter()
    session.resume()
    status = session.wait()
    t2 = time.perf_counter()
    assert status == "done", status
    return {
        "load_state_ms": (t1 - t0) * 1000,
        "resume_one_step_ms": (t2 - t0) * 1000,
        "events": state.last_seq,
    }


if __name__ == "__main__":
    t_import = time.perf_counter()
    db, sid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(resume_probe(db, sid, n)))
