"""How much running agents slow a notebook down: ``1+1`` round trips in a real kernel.

    python -m bench.kernel                     0, 10 and 50 agents, 200 cells each
    python -m bench.kernel --agents 0,100 --samples 500
    python -m bench.kernel --agents 0,50 --rounds 3   in turns, three times: medians
    python -m bench.kernel --agents 0 --worker-agents 50   the agents in the kernel's worker
    python -m bench.kernel --gap-ms 0          cells back to back, no pause between them

For each number of agents a fresh kernel starts them (a scripted model calling a 10 ms tool,
forever), lets them run for a second, then times ``1+1`` cells from sending the request to its
``execute_reply``, one after the other, each sent 0.5-1.5 times ``--gap-ms`` (30) after the last
one's reply, as a person (a quick one) runs cells. ``--gap-ms 0`` sends them back to back (a
client that never stops): agents in the kernel give way to each cell
(``jupyter_agent/_give_way.py``) for no longer than they then run, so they run at about a third
of their speed. Prints median and p95 with their ratios to the idle kernel, the agents' steps
per second during the timing (to show they really ran) and the CPU the kernel's process used
meanwhile, in cores (its threads share one interpreter lock: with ~1 core busy, a cell waits its
turn for it). With ``--worker-agents`` the agents are made with ``worker=True``: they run in the
process the kernel starts beside it (whose CPU is shown too), on an interpreter lock of their
own.
``measure()`` returns the same numbers. Compare ratios, not absolute times: the machines are
shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from ._common import report

AGENT_COUNTS = (0, 10, 50)
GAP_MS = 30.0  # between a reply and the next cell, on average (seeded: the same in every run)
WARM_UP_S = 1.0

START_AGENTS = """
import anyio
from jupyter_agent import Agent, tool
from jupyter_agent.testing import ScriptedModel, call

@tool(effect="read_only")
async def work() -> str:
    '''Waits {tool_ms} ms, like a quick API call.'''
    await anyio.sleep({tool_ms} / 1000)
    return "ok"

agents = [
    Agent(f"bench-{{i}}", model=ScriptedModel(lambda r: call("work")), tools=[work],
          max_steps=10**9, worker={worker}).start("work until stopped")
    for i in range({n})
]
"""
STOP_AGENTS = "for s in agents: s.stop()\nfor s in agents: s.wait(60)"


def measure(
    agent_counts: tuple[int, ...] = AGENT_COUNTS,
    *,
    samples: int = 200,
    tool_ms: float = 10.0,
    rounds: int = 1,
    worker_counts: tuple[int, ...] = (),
    gap_ms: float = GAP_MS,
) -> dict[str, list[dict[str, Any]]]:
    """``1+1`` round-trip median and p95 (ms) in a kernel running each number of agents.

    With ``rounds``, every count is measured that many times in turns (each time in a fresh
    kernel), and each figure is the median over the rounds, each ratio the median of the
    rounds' ratios to that round's idle kernel: a neighbour's burst on a shared machine then
    spoils one round, not the result. ``worker_counts``: numbers of agents measured again,
    made with ``worker=True`` (rows with ``"worker": True``)."""
    per_round = []
    runs = [(n, False) for n in agent_counts] + [(n, True) for n in worker_counts]
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            rows = [
                _measure_one(n, Path(tmp) / f"bench-{k}-{n}-{w:d}.db", samples, tool_ms, w, gap_ms)
                for n, w in runs
            ]
            idle = next((r for r in rows if r["agents"] == 0), rows[0])
            for r in rows:
                r["median_ratio"] = r["median_ms"] / idle["median_ms"]
                r["p95_ratio"] = r["p95_ms"] / idle["p95_ms"]
                r["idle_median_ms"], r["idle_p95_ms"] = idle["median_ms"], idle["p95_ms"]
            per_round.append(rows)
    out = []
    for i, (n, worker) in enumerate(runs):
        taken = [rows[i] for rows in per_round]
        row: dict[str, Any] = {"agents": n, "worker": worker, "rounds": rounds}
        for key in [k for k in taken[0] if k not in ("agents", "worker")]:
            values = [t[key] for t in taken if t[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["p95_ratios"] = [t["p95_ratio"] for t in taken]
        out.append(row)
    return {"rows": out}


def _measure_one(
    n: int, db: Path, samples: int, tool_ms: float, worker: bool = False, gap_ms: float = GAP_MS
) -> dict[str, Any]:
    pace = random.Random(n)  # the same gaps each time for the same number of agents
    env = {**os.environ, "JUPYTER_AGENT_DB": str(db)}
    env.pop("PYTEST_CURRENT_TEST", None)
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(db.parent))
    try:
        if n:
            _execute(kc, START_AGENTS.format(n=n, tool_ms=tool_ms, worker=worker))
        time.sleep(WARM_UP_S)
        for _ in range(10):
            _execute(kc, "1+1")
        pid = getattr(km.provisioner, "pid", None)
        other = _worker_pid(db, pid) if worker else None
        steps_before, t0 = _steps(db), time.monotonic()
        cpu_before, other_before = _cpu_s(pid), _cpu_s(other)
        times = []
        for _ in range(samples):
            if gap_ms:
                time.sleep(pace.uniform(0.5, 1.5) * gap_ms / 1000)
            times.append(_execute(kc, "1+1"))
        took = time.monotonic() - t0
        steps_per_s = (_steps(db) - steps_before) / took
        cpu_after, other_after = _cpu_s(pid), _cpu_s(other)
        cores = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / took
        worker_cores = (
            None
            if other_before is None or other_after is None
            else (other_after - other_before) / took
        )
        if n:
            _execute(kc, STOP_AGENTS)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    ordered = sorted(times)
    return {
        "agents": n,
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[max(0, -(-len(ordered) * 95 // 100) - 1)] * 1000,
        "max_ms": ordered[-1] * 1000,
        "agent_steps_per_s": steps_per_s,
        "kernel_cores": cores,
        "worker_cores": worker_cores,
    }


def _execute(kc: BlockingKernelClient, code: str, timeout: float = 60.0) -> float:
    """Run a cell; return seconds from sending it to its ``execute_reply``."""
    started = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    took = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"bench cell failed: {reply['content'].get('evalue')}\n{code}")
    _drain(kc)
    return took


def _drain(kc: BlockingKernelClient) -> None:
    """Drop queued IOPub messages (outside the timing), so they do not pile up."""
    while True:
        try:
            kc.get_iopub_msg(timeout=0)
        except queue.Empty:
            return


def _worker_pid(db: Path, kernel_pid: int | None) -> int | None:
    """The pid of the runtime other than the kernel's registered in the store: its worker."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        sql = "SELECT pid FROM runtimes WHERE ended_at IS NULL AND pid != ?"
        found = conn.execute(sql, (kernel_pid or -1,)).fetchone()
        return None if found is None else int(found[0])
    finally:
        conn.close()


def _cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) the process has used so far; None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _steps(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        # the sessions' rows may lag by half a second: count the steps' results
        sql = "SELECT count(*) FROM events WHERE kind = 'tool_result'"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel")
    parser.add_argument("--agents", default=",".join(map(str, AGENT_COUNTS)))
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--tool-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="measure in turns, this many times")
    parser.add_argument(
        "--worker-agents", default="", help="numbers of agents to run in the kernel's worker too"
    )
    parser.add_argument(
        "--gap-ms", type=float, default=GAP_MS, help="mean pause between cells (0: none)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line (for bench)")
    parser.add_argument("--dir", help="ignored: the stores live in a temporary folder")
    args = parser.parse_args()
    counts = tuple(int(x) for x in args.agents.split(","))
    in_worker = tuple(int(x) for x in args.worker_agents.split(",") if x.strip())
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.gap_ms < 0:
        parser.error("--gap-ms must be 0 or more")
    result = measure(
        counts,
        samples=args.samples,
        tool_ms=args.tool_ms,
        rounds=args.rounds,
        worker_counts=in_worker,
        gap_ms=args.gap_ms,
    )
    if args.json:
        report(
            {
                "system": "kernel",
                "samples": args.samples,
                "tool_ms": args.tool_ms,
                "rounds": args.rounds,
                "gap_ms": args.gap_ms,
                **result,
            }
        )
        return
    print(
        f"{'agents':>6} {'run in':>7} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} "
        f"{'median/idle':>11} {'p95/idle':>9} {'agent steps/s':>13} {'kernel cores':>12} "
        f"{'worker cores':>12}"
    )

    def cores(value: float | None) -> str:
        return f"{value:>12.2f}" if value is not None else f"{'–':>12}"

    for r in result["rows"]:
        print(
            f"{r['agents']:>6.0f} {'worker' if r['worker'] else 'kernel':>7} "
            f"{r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} "
            f"{r['median_ratio']:>11.2f} {r['p95_ratio']:>9.2f} {r['agent_steps_per_s']:>13.0f} "
            f"{cores(r['kernel_cores'])} {cores(r['worker_cores'])}"
        )
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds in turns; each ratio is to its round's idle kernel")
    print(
        f"1+1 execute round trip (request to execute_reply), {args.samples} cells after "
        f"{WARM_UP_S:g} s of warm-up, "
        + (f"~{args.gap_ms:g} ms apart" if args.gap_ms else "back to back")
        + f"; agents: a scripted model calling a {args.tool_ms:g} ms "
        "tool without end; ratios are to the kernel with no agents."
    )


if __name__ == "__main__":
    main()
