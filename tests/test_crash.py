"""SIGKILL a real process at random points mid-session; every session must resume cleanly.

Counts side effects in a file that the side-effect tool appends to: no call whose result is
recorded may run twice, and an in-doubt side-effect call must wait for a person.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_agent import EventKind, SqliteStore
from jupyter_agent._events import verify_chain

WORKER = Path(__file__).with_name("crash_worker.py")


def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("running "):
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"worker did not start: {line!r} {err}")
    return proc, line.split()[1]


def finish(db: Path, side: Path, session_id: str) -> str:
    """Resume without killing, skipping in-doubt calls, until the session is done."""
    for _ in range(5):
        out = subprocess.run(
            [
                sys.executable,
                str(WORKER),
                str(db),
                str(side),
                "resume",
                session_id,
                "--deny-in-doubt",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        status = out.stdout.split("status ")[-1].strip()
        if status == "done":
            return status
    return status


@pytest.mark.parametrize("seed", [20261126])
def test_sigkill_at_20_random_points_loses_nothing_and_repeats_nothing(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    db, side = tmp_path / "agent.db", tmp_path / "side-effects.txt"
    side.touch()
    sessions: list[str] = []
    current: str | None = None
    for _ in range(20):
        if current is None:
            proc, current = spawn(str(db), str(side), "start", "80")
            sessions.append(current)
        else:
            proc, _sid = spawn(str(db), str(side), "resume", current, "--deny-in-doubt")
        time.sleep(rng.uniform(0.0, 0.35))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        if proc.returncode != -signal.SIGKILL:  # it finished before the kill: next session
            current = None
    for sid in sessions:
        assert finish(db, side, sid) == "done"

    store = SqliteStore(db)
    assert store.integrity_check() == "ok"
    ran = collections.Counter(tuple(line.split()) for line in side.read_text().splitlines())
    asked = 0
    for sid in sessions:
        events = list(store.iter_events(sid))
        assert verify_chain(events) is None
        results = {
            e.payload["call_id"]: e.payload for e in events if e.kind is EventKind.TOOL_RESULT
        }
        intents = {e.payload["call_id"]: e.payload for e in events if e.kind is EventKind.TOOL_CALL}
        assert set(intents) == set(results), "every intent ends with a result"
        for e in events:
            if e.kind is EventKind.APPROVAL_REQUESTED:
                asked += 1
                assert e.payload["reason"] == "in_doubt" and e.payload["name"] == "bump"
        for call_id, res in results.items():
            if res["name"] != "bump":
                continue
            times = ran[(sid, call_id)]
            if res.get("skipped"):  # in doubt and skipped: ran before the kill, or never
                assert times <= 1
            else:
                assert times == 1, f"{sid} {call_id} ran {times} times"
        assert store.get_session(sid).status == "done"
    assert max(ran.values()) == 1, "no side effect ever happened twice"
    assert asked >= 1, "some kill landed inside a side-effect call"
    store.close()
