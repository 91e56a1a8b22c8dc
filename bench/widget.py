"""What the notebook widget sends over the comm, per event, for a real session.

    python -m bench.widget --steps 1000 --dir /tmp/x [--kernel]

Computed: the session is the workload's (2 events a step) plus a demo-model session (a
realistic mix: plans, file tools, messages). For each event: the delta message the widget
sends when the event is new (``{"type": "event", "event": compact_event(e)}``), and the share
of the opening page (``initial_page``, the newest 200 events) per event it holds; sizes as JSON
(``message_size``).

Measured (``--kernel``): a real kernel shows the widget of a running agent (a 5 ms tool) and the
client counts every comm message of that widget as it arrives on IOPub, whole (header, parent
header, metadata, content, signature: what crosses the wire), per event of the session.
``bench.widget_browser`` times the widget in a real Chromium.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from ._common import parser, report

KERNEL_STEPS = 300
SHOW_WIDGET = """
import anyio
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call, reply

@tool(effect="read_only")
async def instant(n: int) -> str:
    '''Waits 5 ms, returns ~300 bytes.'''
    await anyio.sleep(0.005)
    return "x" * 300

model = ScriptedModel(lambda r: reply("done") if r.step > {steps} else call("instant", n=r.step))
s = Agent("bench", model=model, tools=[instant], max_steps={steps} + 10).start("benchmark")
w = s.widget()
w.comm.comm_id
"""


def sizes(store: Any, session_id: str) -> dict[str, float]:
    from jupyter_agent._watch import PAGE_SIZE, SessionFeed, compact_event, message_size

    events = list(store.iter_events(session_id))
    deltas = [message_size({"type": "event", "event": compact_event(e)}) for e in events]
    raw = [len(e.payload_json.encode()) for e in events]
    page = SessionFeed(store, session_id).newest_page(PAGE_SIZE)
    return {
        "events": len(events),
        "delta_bytes_mean": statistics.fmean(deltas),
        "delta_bytes_max": max(deltas),
        "payload_bytes_mean": statistics.fmean(raw),
        "page_bytes_per_event": message_size(page) / max(1, len(page["events"])),
    }


def demo_session(db: Path) -> str:
    from jupyter_agent import Agent

    agent = Agent("demo", model="demo:fix", store=str(db), workspace=db.parent / "demo-ws")
    session = agent.start("Make the tests in this folder pass")
    session.wait(120)
    return session.id


def over_the_wire(folder: Path, steps: int = KERNEL_STEPS) -> dict[str, float]:
    """A real kernel: every comm message of a live session's widget, as the client gets it."""
    from jupyter_client.manager import start_new_kernel
    from jupyter_client.session import json_packer

    env = {**os.environ, "JUPYTER_AGENT_DB": str(folder / "kernel.db")}
    env.pop("PYTEST_CURRENT_TEST", None)
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(folder))
    counts = {"event": 0, "other": 0}
    totals = {"event": 0, "other": 0}
    try:
        msg_id = kc.execute(SHOW_WIDGET.format(steps=steps))
        comm_id, quiet_since = None, time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            try:
                msg = kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            content = msg["content"]
            if msg["msg_type"] == "execute_result" and msg["parent_header"]["msg_id"] == msg_id:
                comm_id = content["data"]["text/plain"].strip("'")
            if msg["msg_type"] not in ("comm_open", "comm_msg"):
                continue
            if comm_id is not None and content.get("comm_id") != comm_id:
                continue
            quiet_since = time.monotonic()
            parts = (msg["header"], msg["parent_header"], msg["metadata"], content)
            size = sum(len(json_packer(p)) for p in parts) + 64 + len(b"<IDS|MSG>")
            data = content.get("data", {})
            custom = data.get("method") == "custom" and isinstance(data.get("content"), dict)
            kind = "event" if custom and data["content"].get("type") == "event" else "other"
            counts[kind] += 1
            totals[kind] += size
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    conn = sqlite3.connect(folder / "kernel.db")  # the kernel's session: all of its events
    try:
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    return {
        "events": events,
        "event_messages": counts["event"],
        "wire_bytes_per_event_message": totals["event"] / max(1, counts["event"]),
        "other_messages": counts["other"],
        "wire_bytes_per_event_all": (totals["event"] + totals["other"]) / events,
    }


def main() -> None:
    p = parser("python -m bench.widget")
    p.add_argument("--kernel", action="store_true", help="also measure a real kernel's comm")
    args = p.parse_args()
    from jupyter_agent._store import SqliteStore

    from ._workload import run_session

    folder = Path(args.dir)
    db = folder / "agent.db"
    sid, _ = run_session(str(db), args.steps)
    demo = demo_session(db)
    store = SqliteStore(db)
    doc: dict[str, Any] = {"workload": sizes(store, sid), "demo": sizes(store, demo)}
    store.close()
    if args.kernel:
        doc["kernel"] = over_the_wire(folder)
    report({"system": "widget", "steps": args.steps, **doc})


if __name__ == "__main__":
    main()
