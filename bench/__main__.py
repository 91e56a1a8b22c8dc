"""Per-step overhead, growth, bytes per step and resume time of the engine on a file store.

    python -m bench            N = 100, 1,000, 10,000
    python -m bench --quick    N = 100, 1,000

Prints a table and writes bench/results/latest.json. Times are medians measured in this run;
compare ratios, not absolute numbers (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._workload import run_session

RESULTS = Path(__file__).parent / "results"


def measure(n: int, workdir: Path) -> dict[str, float]:
    db = workdir / f"bench-{n}.db"
    sid, marks = run_session(str(db), n, pause_at=n)
    steps = [b - a for a, b in itertools.pairwise(marks)]
    window = max(1, min(1000, len(steps) // 10))
    first, last = steps[:window], steps[-window:]
    raw = _raw_event_bytes(db, sid)
    _checkpoint(db)
    size = db.stat().st_size
    probe = subprocess.run(
        [sys.executable, "-m", "bench._workload", str(db), sid, str(n + 1)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    resume = json.loads(probe.stdout)
    return {
        "steps": n,
        "step_us_median": statistics.median(steps) * 1e6,
        "first_window_us": statistics.median(first) * 1e6,
        "last_window_us": statistics.median(last) * 1e6,
        "growth_last_over_first": statistics.median(last) / statistics.median(first),
        "bytes_per_step": size / n,
        "raw_event_bytes_per_step": raw / n,
        "disk_over_raw": size / raw,
        "resume_load_state_ms": resume["load_state_ms"],
        "resume_one_more_step_ms": resume["resume_one_step_ms"],
    }


def _raw_event_bytes(db: Path, sid: str) -> int:
    conn = sqlite3.connect(db)
    total = conn.execute(
        "select sum(length(payload) + length(hash) + length(kind) + length(actor) + "
        "length(session_id) + 16) from events where session_id = ?",
        (sid,),
    ).fetchone()[0]
    conn.close()
    return int(total)


def _checkpoint(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="N up to 1,000 (under a minute)")
    args = parser.parse_args()
    sizes = [100, 1000] if args.quick else [100, 1000, 10_000]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, Path(tmp)) for n in sizes]
    header = (
        f"{'N':>6} {'µs/step':>9} {'first':>9} {'last':>9} {'growth':>7} "
        f"{'B/step':>8} {'disk/raw':>8} {'load ms':>8} {'resume+1 ms':>11}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['steps']:>6} {r['step_us_median']:>9.0f} {r['first_window_us']:>9.0f} "
            f"{r['last_window_us']:>9.0f} {r['growth_last_over_first']:>7.2f} "
            f"{r['bytes_per_step']:>8.0f} {r['disk_over_raw']:>8.2f} "
            f"{r['resume_load_state_ms']:>8.1f} {r['resume_one_more_step_ms']:>11.1f}"
        )
    print(
        "µs/step: median wall time per step (model turn + tool call, all events durable);"
        " growth: last window / first window (10% of N, at most 1,000 steps);"
        " resume: fresh process, after imports."
    )
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": rows,
    }
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
