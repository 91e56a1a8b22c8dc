"""The benchmark runs end to end, as ``python -m bench`` does: every part in its own process
(this project, the floor, resume/fork/restore, a real kernel with and without a worker, the
widget's traffic), one table printed and its JSON written.

A small run (N = 100; the browser part on its own, on a 203-event session) so that CI has it;
the peers run when the ``bench`` extra is installed, and their columns say why not when they
are not. What the numbers are is the
benchmark's business (README), not this test's: it checks that each was measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--sizes", "100,many"], "--sizes takes whole numbers, e.g. 100,300 (not '100,many')"),
        (
            ["--sizes", "1,100"],
            "--sizes takes 2 steps or more: a step is timed between two (not '1,100')",
        ),
        (
            ["--out", "/dev/null/x.json"],
            "--out /dev/null/x.json: File exists (give a file in a folder you can write)",
        ),
    ],
)
def test_a_bad_option_is_one_line_before_anything_is_measured(option: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *option],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == f"python -m bench: error: {says}"


def test_a_small_run_measures_every_part_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"  # given as its folder: the file goes in it
    small = ["--quick", "--sizes", "100", "--no-browser", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *small],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets (issue 7):" in done.stdout and f"written to {out}" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["run"] == "quick" and "cores" in doc["machine"]
    assert not [r for r in doc["raw"] if "error" in r], "a part of the bench failed"

    rows = {(r["metric"], r["at"], r["durability"]): r for r in doc["table"]}

    def measured(metric: str, at: str, durability: str = "normal") -> dict[str, Any]:
        row = rows[(metric, at, durability)]
        assert isinstance(row["project"], float) and row["project"] > 0, row
        return row

    for mode in ("default", "normal"):
        step = measured("step overhead, median µs", "N=100", mode)
        for peer in ("langgraph", "dbos"):  # a number, or why there is none
            assert isinstance(step[peer], float) or step[peer] == "skipped", step
            if step[peer] == "skipped":
                assert any(n.startswith(f"{peer}: not installed") for n in doc["notes"])
    # a run of 100 steps (~10 ms here) goes on with more sessions until it stepped for 1 s
    project = next(
        r
        for r in doc["raw"]
        if r.get("system") == "project" and r["mode"] == "normal" and "step_us_runs" in r
    )
    assert project["steps"] == 100 and project["sessions"] > 5
    assert project["sessions"] * 100 * project["step_us"] / 1e6 > 0.5
    measured("growth, last/first window", "N=100")
    assert measured("disk / raw event JSON", "N=100")["project"] < 10
    measured("peak RSS, MB", "N=100")
    for what in ("resume: state, ms", "resume: + one more step, ms", "fork at the middle, ms"):
        measured(what, "N=100")
    measured("restore to the middle, ms", "N=100")
    for kind in ("single", "batched"):
        for mode in ("normal", "full"):
            appends = measured(f"appends/s, {kind}", "2,003 events", mode)
            assert appends["floor"] > 0 and appends["project_over_floor"] > 0
    for agents in ("0 agents", "50 agents, 10 ms steps", "50 agents, 10 ms steps, in a worker"):
        p95 = measured("kernel 1+1, p95 ms", agents)
        assert p95["floor"] > 0  # the idle kernel of the same run
    assert measured("worker CPU, cores", "50 agents, 10 ms steps, in a worker")["project"] > 0.05
    measured("widget: delta message, B/event", "workload", "")
    measured("widget: comm on the wire, B/event", "603 events", "")

    kernel = next(r for r in doc["raw"] if r.get("system") == "kernel")
    assert all(r["agent_steps_per_s"] > 100 for r in kernel["rows"] if r["agents"])  # they ran
    goals = {t["what"]: t for t in doc["targets"]}
    assert goals["resume @100: state, ms after imports"]["value"] > 0
    assert "kernel 1+1 p95, 50 agents (10 ms steps, in a worker) / idle" in goals


@pytest.mark.ui
def test_the_widget_of_a_long_session_is_timed_in_chromium(tmp_path: Path) -> None:
    """The browser part (left out of the run above): a real JupyterLab in Chromium shows a
    session's widget, and the time until its rows are in the page is measured."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.widget_browser", "--steps", "100", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    timed = json.loads(done.stdout.strip().splitlines()[-1])
    assert "skipped" not in timed, timed
    assert timed["long"]["events"] == 203 and timed["short"]["events"] == 53
    for session in (timed["long"], timed["short"]):
        assert session["rows"] > 50 and 0 < session["usable_ms"] < 60_000
