"""A process the crash test starts and kills: runs or resumes one session on a given store.

usage: python crash_worker.py STORE SIDE_EFFECT_FILE start STEPS
       python crash_worker.py STORE SIDE_EFFECT_FILE resume SESSION_ID [--deny-in-doubt]
"""

from __future__ import annotations

import sys
import time

from jupyter_agent import Agent, ToolContext, open_session, tool
from jupyter_agent.testing import ScriptedModel, call, calls, reply

STORE, SIDE_FILE, MODE = sys.argv[1], sys.argv[2], sys.argv[3]


@tool(effect="side_effect")
def bump(n: int, ctx: ToolContext) -> str:
    """Appends this call's id to the side-effect file (the thing that must not happen twice)."""
    with open(SIDE_FILE, "a") as f:
        f.write(f"{ctx.session_id} {ctx.call_id}\n")
    time.sleep(0.004)
    return f"bumped {n}"


@tool(effect="read_only")
def peek() -> str:
    """Reads the side-effect file (safe to repeat)."""
    time.sleep(0.002)
    with open(SIDE_FILE) as f:
        return f"{len(f.readlines())} lines"


def model(steps: int) -> ScriptedModel:
    def turn(request):  # stateless: the turn number comes from the conversation
        n = sum(1 for m in request.messages if m.role == "assistant")
        if n >= steps:
            return reply(f"done after {n} turns")
        return calls(call("bump", n=n), call("peek"))

    return ScriptedModel(turn)


def main() -> None:
    if MODE == "start":
        steps = int(sys.argv[4])
        s = Agent(
            "crash", model=model(steps), tools=[bump, peek], store=STORE, max_steps=steps + 10
        ).start(f"bump {steps} times")
    else:
        session_id = sys.argv[4]
        steps = int(open_session(session_id, store=STORE).state.goal.split()[1])
        s = open_session(session_id, store=STORE, tools=[bump, peek], model=model(steps))
        if "--deny-in-doubt" in sys.argv:
            for pending in s.pending_approvals:
                s.deny(pending.call_id, reason="checked by hand: skip")
        if s.status not in ("done", "failed", "stopped") and not s.running_here:
            s.resume()
    print(f"running {s.id}", flush=True)
    print(f"status {s.wait()}", flush=True)


if __name__ == "__main__":
    main()
