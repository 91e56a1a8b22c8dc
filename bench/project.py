"""The workload in this project (one child process per run).

    python -m bench.project --steps 1000 --mode normal --dir /tmp/x

Modes: ``default`` and ``normal`` are the store's default, WAL with ``synchronous = NORMAL``;
``full`` is WAL with ``synchronous = FULL`` (an fsync at every commit).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ._common import checkpoint, disk_bytes, parser, peak_rss_mb, report, step_stats, stepping_s


def main() -> None:
    p = parser("python -m bench.project")
    p.add_argument("--effect", choices=("read_only", "side_effect"), default="read_only")
    args = p.parse_args()
    t0 = time.perf_counter()
    from jupyter_agent._store import SqliteStore

    from ._workload import run_session

    import_s = time.perf_counter() - t0
    db = Path(args.dir) / "agent.db"
    synchronous = "FULL" if args.mode == "full" else "NORMAL"
    store = SqliteStore(db, synchronous=synchronous)
    sid, marks = run_session(str(db), args.steps, effect=args.effect, store=store)
    checkpoint(db)
    stored, rss = disk_bytes([db]), peak_rss_mb()  # of the first session alone
    more: list[list[float]] = []
    while stepping_s([marks, *more]) < args.min_seconds:
        more.append(run_session(str(db), args.steps, effect=args.effect, store=store)[1])
    event_json, payload_json, events = _raw_sizes(db, sid)
    report(
        {
            "system": "project",
            "mode": args.mode,
            "effect": args.effect,
            "steps": args.steps,
            "import_s": import_s,
            **step_stats(marks, *more),
            "disk_bytes": stored,
            "event_json_bytes": event_json,
            "payload_json_bytes": payload_json,
            "events": events,
            "session_id": sid,
            "peak_rss_mb": rss,
        }
    )


def _raw_sizes(db: Path, sid: str) -> tuple[int, int, int]:
    """Bytes of the session's events as compact JSON records (what an export holds: every
    field, the payload as an object), of their payloads alone, and how many events."""
    conn = sqlite3.connect(db)
    total = payloads = count = 0
    try:
        for sid_, seq, ts, kind, actor, v, payload, digest in conn.execute(
            "SELECT session_id, seq, ts, kind, actor, v, payload, hash FROM events "
            "WHERE session_id = ?",
            (sid,),
        ):
            record = {
                "session_id": sid_,
                "seq": seq,
                "ts": ts,
                "kind": kind,
                "actor": actor,
                "v": v,
                "payload": json.loads(payload),
                "hash": digest,
            }
            total += len(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode())
            payloads += len(payload.encode())
            count += 1
    finally:
        conn.close()
    return total, payloads, count


if __name__ == "__main__":
    main()
