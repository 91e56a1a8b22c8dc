"""This project side by side with LangGraph, DBOS and the SQLite floor, on the same workload.

    python -m bench                   full: N = 100, 1,000, 10,000; kernel 0/10/50 agents; browser
    python -m bench --quick           N = 100, 1,000 (under 3 minutes)
    python -m bench --no-browser      without the Chromium timing

Every measurement runs in its own child process (``python -m bench.<part>``), so each system's
imports and peak RSS are its own; at each size the systems' runs are taken in turns, five
times for the cheap ones (three with ``--quick``; the median kept), each run stepping for at
least a second (``MIN_STEPPING_S``). Prints one table with ratios and writes
bench/results/latest.json (the table, every child's raw output, the machine and the date).
Compare ratios, not absolute times: the machines here are shared and noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._report import COMMITS, DURABILITY, LEGEND, Results, build_rows, targets
from ._table import render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
PEER_LIMIT_S = 300  # a peer run projected to take longer is skipped (and said so)
DISK_LIMIT = 10e9  # ... or to leave a bigger store
KERNEL_ROUNDS = 3  # the kernel is measured in turns, this many times (its ratios swing most)
PEERS = {"dbos": "dbos", "langgraph": "langgraph.checkpoint.sqlite"}  # system -> its module


class Runner:
    """Runs the children, keeps their raw output, and collects notes for the table."""

    def __init__(self, workdir: Path, *, quick: bool = False) -> None:
        self.workdir, self.quick = workdir, quick
        self.raw: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._dirs = 0

    def folder(self) -> Path:
        self._dirs += 1
        path = self.workdir / f"run-{self._dirs}"
        path.mkdir()
        return path

    def child(
        self, part: str, *args: str, folder: Path, timeout: float = 900, silent: bool = False
    ) -> dict[str, Any]:
        """``python -m bench.<part> ... --dir folder``; its JSON, or ``{"error": ...}``.
        ``silent``: the child reports nothing (it dies on purpose); only its exit code counts."""
        argv = [sys.executable, "-m", f"bench.{part}", *args, "--dir", str(folder)]
        label = " ".join([part, *args])
        print(f"  … {label}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return self._failed(label, f"timed out after {timeout:.0f} s")
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if silent and done.returncode == 0:
            return {"run": label}
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return self._failed(label, " | ".join(tail) or f"exit code {done.returncode}")
        doc: dict[str, Any] = json.loads(lines[-1])
        doc["wall_s"] = time.perf_counter() - started
        doc["run"] = label
        self.raw.append(doc)
        return doc

    def _failed(self, label: str, why: str) -> dict[str, Any]:
        if "No module named" in why and ("langgraph" in why or "dbos" in why):
            why += " (install the peers: pip install -e '.[bench]')"
        self.notes.append(f"{label}: failed: {why}")
        doc = {"run": label, "error": why}
        self.raw.append(doc)
        return doc


SYSTEMS = (("project", "project"), ("dbos", "peer_dbos"), ("langgraph", "peer_langgraph"))


MANY_STEPS = 1000  # up to this many steps, a measurement is cheap: see repeats
MIN_STEPPING_S = 1.0
"""A run of up to ``MANY_STEPS`` steps goes on with more sessions of as many steps (in the same
store) until its steps took this long, and its step time is the median step of them all. This
project's 1,000 steps take ~0.1 s and DBOS's ~1 s: the busy spells of a shared machine (here
~0.2-0.7 s, in which every step takes up to twice as long) cover a short run whole and a long
one in part, so short runs read the spells where long ones read past them. Every system's run
now spans at least a second."""


def repeats(system: str, n: int, *, quick: bool = False) -> int:
    """Runs of one measurement (the median run is kept): cheap ones five times, as the
    machines are noisy (three in a quick run, to keep it under three minutes); LangGraph from
    1,000 steps on (its store grows by ~1 GB) once, and three times below that."""
    if system == "langgraph":
        return 3 if n <= 100 else 1
    if n > MANY_STEPS:
        return 1
    return 3 if quick else 5


def per_step(
    run: Runner, sizes: list[int], modes: list[str], keep: set[tuple[str, int]]
) -> dict[tuple[str, str, int], Any]:
    """Every system at every size and mode; returns {(system, mode, n): result}. The stores
    of the matched runs in ``keep`` ((system, N)) are kept for the resume and fork phases.

    At each size the systems run in turns (project, DBOS, LangGraph, then again), so that a
    busy spell of the machine falls on all of them rather than on one system's runs; within a
    turn durability by durability, so that the runs compared are next to each other in time."""
    results: dict[tuple[str, str, int], Any] = {}
    missing = {s for s, module in PEERS.items() if not installed(module)}
    for system in sorted(missing):
        run.notes.append(f"{system}: not installed: pip install -e '.[bench]' to compare with it")
    for n in sizes:
        planned: list[tuple[str, str, str]] = []  # (system, part, mode)
        for mode in modes:
            for system, part in SYSTEMS:
                if system == "project" and mode == "default":
                    continue  # the project's default is the matched "normal": measured once
                if system in missing:
                    results[(system, mode, n)] = {"skipped": "not installed"}
                    continue
                skip = _projected_too_long(results, system, mode, n)
                if skip:
                    run.notes.append(f"{system} at {n:,} steps ({mode}) skipped: {skip}")
                    results[(system, mode, n)] = {"skipped": skip}
                    continue
                planned.append((system, part, mode))
        docs: dict[tuple[str, str, str], list[dict[str, Any]]] = {p: [] for p in planned}
        times = {system: repeats(system, n, quick=run.quick) for system, _part, _mode in planned}
        for turn in range(max(times.values(), default=0)):
            for system, part, mode in planned:
                done = docs[(system, part, mode)]
                if turn < times[system] and not any("error" in d for d in done):
                    done.append(_one_run(run, part, mode, n))
        for system, part, mode in planned:
            kept = mode == "normal" and (system, n) in keep
            results[(system, mode, n)] = _median_of(docs[(system, part, mode)], kept)
        if "default" in modes:
            results[("project", "default", n)] = results[("project", "normal", n)]
    return results


def _median_run(
    run: Runner, system: str, part: str, mode: str, n: int, kept: bool, *extra: str
) -> dict[str, Any]:
    docs: list[dict[str, Any]] = []
    for _ in range(repeats(system, n, quick=run.quick)):
        docs.append(_one_run(run, part, mode, n, *extra))
        if "error" in docs[-1]:
            break
    return _median_of(docs, kept)


def _one_run(run: Runner, part: str, mode: str, n: int, *extra: str) -> dict[str, Any]:
    folder = run.folder()
    if n <= MANY_STEPS:
        extra = (*extra, "--min-seconds", str(MIN_STEPPING_S))
    doc = run.child(part, "--steps", str(n), "--mode", mode, *extra, folder=folder)
    doc["folder"] = str(folder)
    return doc


def _median_of(docs: list[dict[str, Any]], kept: bool) -> dict[str, Any]:
    """The median run by step time (with every run's step time, in the order run, and the
    median growth); the other runs' stores are removed, and the chosen one's unless ``kept``."""
    good = sorted((d for d in docs if "step_us" in d), key=lambda d: d["step_us"])
    chosen = good[len(good) // 2] if good else docs[-1]
    chosen["step_us_runs"] = [d["step_us"] for d in docs if "step_us" in d]
    if good:  # growth is noisier than the step time: its own median over the runs
        chosen["growth_runs"] = sorted(d["growth"] for d in good)
        chosen["growth"] = chosen["growth_runs"][len(good) // 2]
    for doc in docs:
        if doc is not chosen or not kept:
            shutil.rmtree(doc["folder"], ignore_errors=True)
    return chosen


def _projected_too_long(results: dict[Any, Any], system: str, mode: str, n: int) -> str | None:
    """From the runs at smaller sizes: the time (the step time grows linearly between the
    first and the last window) and the store's size (bytes per step that grow with N, as when
    the whole state is saved at every step, make it grow with N²)."""
    runs = sorted(
        (k[2], results[k])
        for k in results
        if k[0] == system and k[1] == mode and k[2] < n and "step_us" in results[k]
    )
    if not runs:
        return None
    m, doc = runs[-1]
    first, last = doc["first_us"] / 1e6, doc["last_us"] / 1e6
    slope = max(0.0, (last - first) / (0.9 * m))
    seconds = n * first + slope * n * n / 2
    per_step = doc["disk_bytes"] / m
    growing = len(runs) > 1 and per_step > 1.5 * runs[-2][1]["disk_bytes"] / runs[-2][0]
    disk = per_step * n * (n / m if growing else 1)
    why = []
    if seconds > PEER_LIMIT_S:
        why.append(f"{seconds / 60:.0f} min (over {PEER_LIMIT_S // 60} min)")
    if disk > DISK_LIMIT:
        why.append(f"a {disk / 1e9:.0f} GB store (over {DISK_LIMIT / 1e9:.0f} GB)")
    if not why:
        return None
    return f"projected {' and '.join(why)} from the {m:,}-step run"


def resume_and_branch(
    run: Runner, n: int, steps: dict[Any, Any], peer_n: dict[str, int]
) -> dict[str, Any]:
    """Fresh processes: the project's resume, fork and restore at ``n`` (and at 1,000 for a
    same-size comparison); the peers' resume and fork where their stores exist."""
    out: dict[str, Any] = {}
    for size in sorted({n, 1000}):
        prepared = run.folder()
        run.child("resume", "--steps", str(size), "--phase", "prepare", folder=prepared)
        for phase in ("resume", "fork", "restore"):
            copy = run.folder()
            shutil.copytree(prepared, copy, dirs_exist_ok=True)
            out[f"project_{phase}_{size}"] = run.child(
                "resume", "--steps", str(size), "--phase", phase, folder=copy
            )
            shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(prepared, ignore_errors=True)
    dn = peer_n["dbos"]
    if installed(PEERS["dbos"]):
        crashed = run.folder()
        crash = ("--steps", str(dn), "--mode", "normal", "--phase", "crash")
        run.child("peer_dbos", *crash, folder=crashed, silent=True)
        out[f"dbos_resume_{dn}"] = run.child(
            "peer_dbos", "--steps", str(dn), "--mode", "normal", "--phase", "resume", folder=crashed
        )
        shutil.rmtree(crashed, ignore_errors=True)
    for system, part in (("dbos", "peer_dbos"), ("langgraph", "peer_langgraph")):
        size = peer_n[system]
        done = steps.get((system, "normal", size), {})
        if done.get("skipped") == "not installed":
            continue
        if "folder" not in done or "error" in done:
            run.notes.append(f"{system}: no {size:,}-step store to fork from")
            continue
        folder = Path(done["folder"])
        if system == "langgraph":  # before the fork: the fork becomes the thread's newest state
            out[f"{system}_resume_{size}"] = run.child(
                part, "--steps", str(size), "--mode", "normal", "--phase", "resume", folder=folder
            )
        out[f"{system}_fork_{size}"] = run.child(
            part, "--steps", str(size), "--mode", "normal", "--phase", "fork", folder=folder
        )
    return out


def kernel(run: Runner, quick: bool) -> dict[str, Any]:
    """``1+1`` in a real kernel: agents whose steps take 10 ms (a stress: the agents' loop is
    busy all the time), in the kernel and in its worker (``worker=True``), and, in the full
    run, 1 s (a model-paced agent), and cells sent back to back (a client that never stops,
    where the agents get about half the interpreter lock)."""
    counts, samples = ("0,50", "60") if quick else ("0,10,50", "200")
    rounds = "1" if quick else str(KERNEL_ROUNDS)
    doc = run.child(
        "kernel",
        "--agents",
        counts,
        "--worker-agents",
        "50",
        "--samples",
        samples,
        "--rounds",
        rounds,
        "--json",
        folder=run.folder(),
    )
    if not quick and "rows" in doc:
        for key, variant in (
            ("paced", ("--samples", "100", "--tool-ms", "1000")),  # a step a second
            ("back_to_back", ("--samples", samples, "--gap-ms", "0")),
        ):
            more = run.child(
                "kernel",
                "--agents",
                "0,50",
                *variant,
                "--rounds",
                rounds,
                "--json",
                folder=run.folder(),
            )
            doc[key] = more.get("rows", [])
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="N up to 1,000 (under 3 minutes)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timing")
    parser.add_argument("--sizes", help="N to run instead, e.g. 100,300 (for trying the bench)")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the JSON (a folder: latest.json in it)",
    )
    args = parser.parse_args()
    if args.out.is_dir():
        args.out = args.out / "latest.json"
    try:  # checked before minutes of measuring, not after
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: {exc.strerror} (give a file in a folder you can write)")
    started = time.perf_counter()
    sizes = [100, 1000] if args.quick else [100, 1000, 10_000]
    if args.sizes:
        try:
            sizes = [int(x) for x in args.sizes.split(",")]
        except ValueError:
            parser.error(f"--sizes takes whole numbers, e.g. 100,300 (not {args.sizes!r})")
        if min(sizes) < 2:
            parser.error(
                f"--sizes takes 2 steps or more: a step is timed between two (not {args.sizes!r})"
            )
    modes = ["default", "normal"] if args.quick else ["default", "normal", "full"]
    resume_n = sizes[-1]
    with tempfile.TemporaryDirectory(prefix="jupyter-agent-bench-") as tmp:
        run = Runner(Path(tmp), quick=args.quick)
        peer_n = {"dbos": resume_n, "langgraph": 1000}
        print("per-step overhead …", file=sys.stderr)
        steps = per_step(run, sizes, modes, keep=set(peer_n.items()))
        print("side-effect tool …", file=sys.stderr)
        side_effect = {
            m: _median_run(run, "project", "project", m, 1000, False, "--effect", "side_effect")
            for m in modes
            if m != "default"
        }
        print("resume, fork, restore …", file=sys.stderr)
        branch = resume_and_branch(run, resume_n, steps, peer_n)
        for key in list(steps):  # the peers' kept stores: done with them
            folder = steps[key].get("folder")
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        print("floor …", file=sys.stderr)
        floor = {
            m: run.child("floor", "--steps", "1000", "--mode", m, folder=run.folder())
            for m in ("normal", "full")
        }
        print("kernel …", file=sys.stderr)
        kern = kernel(run, args.quick)
        print("widget …", file=sys.stderr)
        widget = run.child("widget", "--steps", "1000", "--kernel", folder=run.folder())
        browser: dict[str, Any] = {"skipped": "--quick (the full run times the widget in Chromium)"}
        if args.no_browser:
            browser = {"skipped": "--no-browser"}
        elif not args.quick:
            browser = run.child("widget_browser", "--steps", "5000", folder=run.folder())
        if "skipped" in browser:
            run.notes.append(f"widget in Chromium: skipped: {browser['skipped']}")
    results = Results(
        sizes, modes, steps, branch, peer_n, floor, kern, widget, browser, side_effect
    )
    rows = build_rows(results)
    goals = targets(results)
    wall = time.perf_counter() - started
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "run": "quick" if args.quick else "full",
        "wall_s": round(wall, 1),
        "durability": {**DURABILITY, "commits": COMMITS},
        "versions": versions(),
        "notes": run.notes,
        "targets": [
            {"what": t.what, "value": t.value, "limit": t.limit, "met": t.met} for t in goals
        ],
        "table": [r.to_json() for r in rows],
        "raw": run.raw,
    }
    print(render(rows, title=title(doc), notes=[*LEGEND, *run.notes]))
    print("\ntargets (issue 7):")
    print("\n".join(t.line() for t in goals))
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwall time {wall:.0f} s; written to {args.out}")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (a submodule's ``find_spec`` imports its package,
    and raises when that is missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def title(doc: dict[str, Any]) -> str:
    return f"jupyter-agent benchmarks ({doc['run']} run), {doc['date']}, {doc['machine']}"


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("jupyter-agent", "langgraph", "langgraph-checkpoint-sqlite", "dbos", "sqlalchemy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


if __name__ == "__main__":
    main()
