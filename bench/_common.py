"""What every benchmark child process shares: durability modes, step statistics, the report.

Each system runs in its own process (``python -m bench.<system> ...``), so imports and peak RSS
are its own; the child prints one JSON object as its last line of output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

TOOL_OUTPUT = "x" * 300  # what the instant tool returns: about 300 bytes

# How each system persists, per mode. "default" is what each system does as shipped;
# "normal" and "full" put every system on a WAL journal with that synchronous setting.
MODES = ("default", "normal", "full")


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--steps", type=_steps, required=True)
    p.add_argument("--mode", choices=MODES, default="normal")
    p.add_argument("--dir", required=True, help="a fresh folder for the store")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=0.0,
        help="run more sessions of --steps steps (in the same store) until the steps took this "
        "long in all; the step time is then the median step of them all",
    )
    return p


def _steps(text: str) -> int:
    n = int(text)
    if n < 2:
        raise argparse.ArgumentTypeError("2 or more: a step is timed between two tool calls")
    return n


def stepping_s(sessions: Sequence[Sequence[float]]) -> float:
    """Seconds the sessions' steps took, in all (each session's first mark to its last)."""
    return sum(marks[-1] - marks[0] for marks in sessions if marks)


def pragmas(conn: sqlite3.Connection, synchronous: str) -> None:
    """Put a connection on WAL with ``synchronous`` (the matched modes)."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")


def step_stats(marks: Sequence[float], *more: Sequence[float]) -> dict[str, float]:
    """Median seconds per step (between consecutive tool calls) and first-vs-last growth.

    The window is 10% of the steps, at most 1,000 (so first-vs-last-1,000 at 10,000 steps).
    With ``more`` sessions (run after the first, see ``--min-seconds``), the median and mean
    are of every session's steps, the growth the first session's.
    """
    steps = [b - a for a, b in itertools.pairwise(marks)]
    window = max(1, min(1000, len(steps) // 10))
    first = statistics.median(steps[:window])
    last = statistics.median(steps[-window:])
    pooled = steps + [b - a for m in more for a, b in itertools.pairwise(m)]
    return {
        "step_us": statistics.median(pooled) * 1e6,
        "mean_step_us": statistics.fmean(pooled) * 1e6,
        "first_us": first * 1e6,
        "last_us": last * 1e6,
        "growth": last / first,
        "total_s": marks[-1] - marks[0],
        "sessions": 1 + len(more),
        "first_session_step_us": statistics.median(steps) * 1e6,
    }


def checkpoint(db: Path) -> None:
    """Fold the WAL into the main file, so the file size is what the data takes; again while
    another checkpoint (the store's own thread, still open) keeps this one from finishing."""
    conn = sqlite3.connect(db)
    try:
        deadline = time.monotonic() + 10
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:  # busy
            if time.monotonic() > deadline:
                raise SystemExit(f"could not fold the WAL of {db} into it in 10 s")
            time.sleep(0.01)
    finally:
        conn.close()


def disk_bytes(paths: Iterable[Path]) -> int:
    """Bytes on disk of the files (with their -wal and -shm companions)."""
    total = 0
    for p in paths:
        for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
            if f.exists():
                total += f.stat().st_size
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(doc: dict[str, Any]) -> None:
    doc.setdefault("peak_rss_mb", peak_rss_mb())  # a child with more sessions: its first's
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
