"""Resume, fork and restore of a long session in this project, each in a fresh process.

    python -m bench.resume --steps 10000 --dir /tmp/x --phase prepare   # run it, leave it paused
    python -m bench.resume --steps 10000 --dir /tmp/x --phase resume    # state, then one more step
    python -m bench.resume --steps 10000 --dir /tmp/x --phase fork      # fork at the middle
    python -m bench.resume --steps 10000 --dir /tmp/x --phase restore   # restore to the middle

Times start after the imports (the process is fresh: nothing is cached). The session id is
kept in the folder between phases.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ._common import checkpoint, disk_bytes, parser, report

PHASES = ("prepare", "resume", "fork", "restore")


def main() -> None:
    p = parser("python -m bench.resume")
    p.add_argument("--phase", choices=PHASES, required=True)
    args = p.parse_args()
    t0 = time.perf_counter()
    from jupyter_agent import open_session

    from ._workload import make_model, make_tool, run_session

    import_s = time.perf_counter() - t0
    folder = Path(args.dir)
    db, id_file = folder / "agent.db", folder / "session-id"
    synchronous = "FULL" if args.mode == "full" else "NORMAL"
    doc: dict[str, Any] = {"import_s": import_s}
    if args.phase == "prepare":
        sid, _marks = run_session(str(db), args.steps, synchronous=synchronous, pause_at=args.steps)
        id_file.write_text(sid)
        checkpoint(db)
        report({"system": "project", "phase": "prepare", "steps": args.steps, "session_id": sid})
        return
    sid = id_file.read_text()
    middle = 0
    t1 = time.perf_counter()
    session = open_session(sid, store=str(db), tools=[make_tool([])], model=make_model(args.steps))
    if args.phase == "resume":
        state = session.state
        t2 = time.perf_counter()
        session.resume()
        status = session.wait()
        t3 = time.perf_counter()
        if status != "done" or state.steps != args.steps:
            raise SystemExit(f"resume ended {status} after {state.steps} steps")
        doc["load_state_ms"] = (t2 - t1) * 1000
        doc["resume_one_step_ms"] = (t3 - t1) * 1000
        doc["events"] = state.last_seq
    else:
        middle = session.row.last_seq // 2
        before = disk_bytes([db])
        t2 = time.perf_counter()
        if args.phase == "fork":
            target = session.fork(at=middle)
        else:
            session.restore(at=middle)
            target = session
        t3 = time.perf_counter()
        state = target.state  # the branch's state: what the next step would start from
        t4 = time.perf_counter()
        session.store.close()
        checkpoint(db)
        doc[f"{args.phase}_ms"] = (t3 - t2) * 1000
        doc[f"{args.phase}_then_state_ms"] = (t4 - t2) * 1000
        doc[f"{args.phase}_bytes"] = disk_bytes([db]) - before
        doc["at"] = middle
        doc["state_steps"] = state.steps
    report({"system": "project", "phase": args.phase, "steps": args.steps, **doc})


if __name__ == "__main__":
    main()
