"""The floor: plain sqlite3 appends of the same event payloads, against this project's store.

    python -m bench.floor --steps 1000 --mode normal --dir /tmp/x

The payloads are those of a real session of the workload (``steps`` steps, 2 events each).
Both sides use WAL with the mode's ``synchronous`` and append the same payloads, one per
transaction ("single") and 100 per transaction ("batched"):

- floor: ``json.dumps`` of the payload and ``INSERT INTO log (payload) VALUES (?)`` into a
  table with nothing else: the least an application logging these events must do;
- project: ``EventChain.next`` (canonical JSON, sha256 chain) and ``SqliteStore.write`` of the
  events as the engine writes them (one commit per call): the session's lease checked in each
  commit, its row's totals written with it at most every ``SESSION_ROW_EVERY_S``.

Throughput is events per second over the whole run (WAL checkpoints included on both sides),
the median of ``REPEATS`` runs taken in turns (floor, project, floor, …) into fresh files.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from ._common import parser, pragmas, report

BATCH = 100
REPEATS = 5  # three left a fraction swinging 0.46-0.74 between runs of the same code


def floor_rate(db: Path, synchronous: str, payloads: list[dict[str, Any]], batch: int) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    pragmas(conn, synchronous)
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    dumps = json.dumps
    t0 = time.perf_counter()
    for i in range(0, len(payloads), batch):
        conn.execute("BEGIN IMMEDIATE")
        if batch == 1:
            conn.execute("INSERT INTO log (payload) VALUES (?)", (dumps(payloads[i]),))
        else:
            rows = [(dumps(p),) for p in payloads[i : i + batch]]
            conn.executemany("INSERT INTO log (payload) VALUES (?)", rows)
        conn.execute("COMMIT")
    took = time.perf_counter() - t0
    conn.close()
    return len(payloads) / took


def project_rate(
    db: Path, synchronous: Any, drafts: list[tuple[Any, dict[str, Any]]], batch: int
) -> float:
    from jupyter_agent._engine import SESSION_ROW_EVERY_S
    from jupyter_agent._events import EventChain
    from jupyter_agent._store import SqliteStore

    store = SqliteStore(db, synchronous=synchronous)
    chain, lease = EventChain("floor0000000"), "rt-floor"
    store.write(
        session={
            "id": chain.session_id,
            "status": "running",
            "created_at": 0.0,
            "updated_at": 0.0,
            "runtime_id": lease,
        }
    )
    row_due = 0.0
    t0 = time.perf_counter()
    for i in range(0, len(drafts), batch):
        ts = time.time()
        events = [chain.next(kind, payload, ts=ts) for kind, payload in drafts[i : i + batch]]
        last, now = events[-1], time.monotonic()
        row = None
        if now >= row_due:
            row_due = now + SESSION_ROW_EVERY_S
            row = {"id": chain.session_id, "last_seq": last.seq, "last_hash": last.hash}
            row["updated_at"] = ts
        store.write(events, session=row, lease=lease)
    took = time.perf_counter() - t0
    store.close()
    return len(drafts) / took


def session_payloads(folder: Path, steps: int) -> list[tuple[Any, dict[str, Any]]]:
    """The (kind, payload) of every event a workload session of ``steps`` steps recorded."""
    from jupyter_agent._store import SqliteStore

    from ._workload import run_session

    db = folder / "session.db"
    sid, _ = run_session(str(db), steps)
    store = SqliteStore(db)
    drafts = [(e.kind, e.payload) for e in store.iter_events(sid)]
    store.close()
    return drafts


def main() -> None:
    args = parser("python -m bench.floor").parse_args()
    folder = Path(args.dir)
    synchronous = "FULL" if args.mode == "full" else "NORMAL"
    drafts = session_payloads(folder, args.steps)
    payloads = [p for _, p in drafts]
    size = sum(len(json.dumps(p)) for p in payloads)
    doc: dict[str, Any] = {"events": len(drafts), "payload_bytes": size}
    for label, batch in (("single", 1), ("batched", BATCH)):
        floors, projects = [], []
        for i in range(REPEATS):
            gc.collect()  # each run starts from the same heap, not the last run's garbage
            floors.append(
                floor_rate(folder / f"floor-{label}-{i}.db", synchronous, payloads, batch)
            )
            gc.collect()
            projects.append(
                project_rate(folder / f"project-{label}-{i}.db", synchronous, drafts, batch)
            )
        floor, ours = statistics.median(floors), statistics.median(projects)
        doc[f"floor_{label}_per_s"] = floor
        doc[f"project_{label}_per_s"] = ours
        doc[f"fraction_{label}"] = ours / floor
    report({"system": "floor", "mode": args.mode, "steps": args.steps, **doc})


if __name__ == "__main__":
    main()
