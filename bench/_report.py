"""From the children's results to the table's rows, its legend, and the targets met or missed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._table import Cell, Row

DURABILITY = {
    "default": (
        "each system as shipped: project WAL + synchronous NORMAL; LangGraph "
        'durability="async" (checkpoint written while the next node runs), WAL, synchronous '
        "FULL (SQLite's default); DBOS rollback journal, synchronous FULL"
    ),
    "normal": (
        'matched: every system on WAL + synchronous NORMAL (LangGraph durability="sync"): '
        "each commit reaches the OS before the next step (survives a process crash, not a "
        "power cut)"
    ),
    "full": (
        'matched: every system on WAL + synchronous FULL (LangGraph durability="sync"): an '
        "fsync at every commit (survives a power cut)"
    ),
}
COMMITS = (
    "durable points per step: project 1 for the workload's read-only tool (the model's answer, "
    "the call's intent and its result, after it ran), 2 for a side-effect tool (the intent "
    "before the tool runs, then the result: the 'side-effect tool' rows); DBOS 1 (the step's "
    "output, after it ran); LangGraph 2 checkpoints (after each node)"
)
LEGEND = [
    "ratios are project / peer: below 1 the project takes less (a time, a size) or does less "
    "(a rate)",
    *(f"durability {k}: {v}" for k, v in DURABILITY.items()),
    COMMITS,
    "step overhead: median wall time between consecutive tool calls (a model turn, a tool call "
    "and the system's persistence); the scripted model and the tool take ~0; up to 1,000 steps "
    "a run goes on with more sessions of N steps (same store) until its steps took 1 s, and "
    "reads the median step of them all (the first session's alone, its growth, disk and "
    "sessions are in the JSON); the median run of 5 up to 1,000 steps (3 in a quick run; "
    "LangGraph: 3 at 100 steps), of one at 10,000 and LangGraph's from 1,000, the systems "
    "taken in turns (at each durability one after the other; every run's step time is in the "
    "JSON, in the order run)",
    "growth: median step of the last window over the first (windows of 10% of N, at most 1,000)",
    "raw event JSON: each event as a compact JSON record (every field, the payload an object)",
    "resume: a fresh process, times after imports; DBOS: replaying its recorded steps once its "
    "recovery picked the workflow up (its queue's dispatch delay not counted); LangGraph "
    "restore: going back in time with update_state, the same call as its fork",
    "appends/s: floor = json.dumps + INSERT into a bare table; project = a hash-chained event "
    "as the engine writes it (the lease checked, the session row at most twice a second); one "
    "commit per event (single) or per 100; the median of 3 runs of each, taken in turns",
    "kernel: cells ~30 ms apart (0.5-1.5 times that, seeded), or back to back where it says so; "
    "the floor column is the idle kernel (0 agents) of the same run; the full run "
    "measures 3 rounds in turns, each in fresh kernels, and shows medians (a ratio: the median "
    "of the rounds' ratios to their own idle kernel); agents in the kernel give way to its "
    "requests (jupyter_agent/_give_way.py), so their steps/s is shown beside; CPU: what the "
    "kernel's process used while timing, in cores (one interpreter lock: ~1 core of Python at "
    "most, and the idle kernel answering cells back to back already uses most of one)",
    "widget in Chromium: from running the cell that shows the session to its rows being in the "
    "page; the floor column is a short session in the same lab",
]


@dataclass
class Results:
    sizes: list[int]
    modes: list[str]
    steps: dict[tuple[str, str, int], Any]
    branch: dict[str, Any]
    peer_n: dict[str, int]
    floor: dict[str, Any]
    kernel: dict[str, Any]
    widget: dict[str, Any]
    browser: dict[str, Any]
    side_effect: dict[str, Any] = field(default_factory=dict)  # mode -> the project at 1,000
    rows: list[Row] = field(default_factory=list)

    def step(self, system: str, mode: str, n: int, key: str) -> Cell:
        doc = self.steps.get((system, mode, n))
        if doc is None:
            return None
        if "skipped" in doc:
            return "skipped"
        if "error" in doc:
            return "failed"
        if key == "bytes_per_step" and "disk_bytes" in doc:
            return float(doc["disk_bytes"] / doc["steps"])
        value = doc.get(key)
        return None if value is None else float(value)

    def branched(self, key: str, name: str) -> Cell:
        doc = self.branch.get(key)
        if doc is None:
            return None
        return "failed" if "error" in doc else doc.get(name)


def build_rows(r: Results) -> list[Row]:
    rows: list[Row] = []
    per_system(r, rows, "step overhead, median µs", "step_us", r.sizes)
    for mode, doc in r.side_effect.items():
        rows.append(
            Row(
                "  side-effect tool, median µs",
                "N=1,000",
                mode,
                project=doc.get("step_us", "failed"),
                dbos=r.step("dbos", mode, 1000, "step_us"),
            )
        )
    per_system(r, rows, "growth, last/first window", "growth", r.sizes[-1:])
    per_system(r, rows, "disk bytes per step", "bytes_per_step", r.sizes[-2:])
    raw = r.steps.get(("project", "normal", r.sizes[-1]), {})
    if "event_json_bytes" in raw:
        at = f"N={r.sizes[-1]:,}"
        rows.append(
            Row(
                "  disk / raw event JSON", at, "normal", raw["disk_bytes"] / raw["event_json_bytes"]
            )
        )
        rows.append(
            Row(
                "  disk / payloads alone",
                at,
                "normal",
                raw["disk_bytes"] / raw["payload_json_bytes"],
            )
        )
    per_system(r, rows, "peak RSS, MB", "peak_rss_mb", r.sizes[-2:])
    per_system(r, rows, "imports, s", "import_s", r.sizes[-1:])
    branches(r, rows)
    appends(r, rows)
    kernel(r, rows)
    widget(r, rows)
    return rows


def per_system(r: Results, rows: list[Row], label: str, key: str, sizes: list[int]) -> None:
    for n in sizes:
        for mode in r.modes:
            rows.append(
                Row(
                    label,
                    f"N={n:,}",
                    mode,
                    project=r.step("project", mode, n, key),
                    langgraph=r.step("langgraph", mode, n, key),
                    dbos=r.step("dbos", mode, n, key),
                )
            )


def branches(r: Results, rows: list[Row]) -> None:
    sizes = sorted({r.sizes[-1], 1000})
    metrics = [
        ("resume: state, ms", "resume", "load_state_ms", "resume", "resume"),
        ("resume: + one more step, ms", "resume", "resume_one_step_ms", "resume", "resume"),
        ("fork at the middle, ms", "fork", "fork_ms", "fork", "fork"),
        ("  fork, then its state, ms", "fork", "fork_then_state_ms", None, None),
        ("restore to the middle, ms", "restore", "restore_ms", "fork", None),
        ("  restore, then its state, ms", "restore", "restore_then_state_ms", None, None),
    ]
    for label, phase, name, lg_phase, dbos_phase in metrics:
        lg_name = "fork_ms" if phase == "restore" else name
        for n in sizes:
            lg = lg_phase and r.peer_n["langgraph"] == n
            db = dbos_phase and r.peer_n["dbos"] == n
            rows.append(
                Row(
                    label,
                    f"N={n:,}",
                    "normal",
                    project=r.branched(f"project_{phase}_{n}", name),
                    langgraph=r.branched(f"langgraph_{lg_phase}_{n}", lg_name) if lg else None,
                    dbos=r.branched(f"dbos_{dbos_phase}_{n}", name) if db else None,
                )
            )


def appends(r: Results, rows: list[Row]) -> None:
    for batch in ("single", "batched"):
        for mode, doc in r.floor.items():
            if "error" in doc:
                rows.append(Row(f"appends/s, {batch}", "", mode, project="failed"))
                continue
            rows.append(
                Row(
                    f"appends/s, {batch}",
                    f"{doc['events']:,} events",
                    mode,
                    project=doc[f"project_{batch}_per_s"],
                    floor=doc[f"floor_{batch}_per_s"],
                )
            )


def kernel(r: Results, rows: list[Row]) -> None:
    if "error" in r.kernel:
        rows.append(Row("kernel 1+1", "", "normal", project="failed"))
    tool_ms = r.kernel.get("tool_ms", 10)
    for stat in ("median", "p95", "cores"):
        for pace, found in (
            (f"{tool_ms:g} ms steps", r.kernel.get("rows", [])),
            ("1 s steps", r.kernel.get("paced", [])),
            (f"{tool_ms:g} ms steps, cells back to back", r.kernel.get("back_to_back", [])),
        ):
            for k in found:
                if not k["agents"] and pace == "1 s steps":
                    continue  # the same idle kernel, measured again
                what = f"{k['agents']:.0f} agents" + (f", {pace}" if k["agents"] else "")
                if not k["agents"] and "back to back" in pace:
                    what += ", cells back to back"
                if k.get("worker"):
                    what += ", in a worker"
                if stat == "cores":
                    if k["agents"] and k.get("agent_steps_per_s") is not None:
                        rows.append(
                            Row("kernel: agents' steps/s", what, "normal", k["agent_steps_per_s"])
                        )
                    if k.get("kernel_cores") is not None:
                        rows.append(Row("kernel CPU, cores", what, "normal", k["kernel_cores"]))
                    if k.get("worker_cores") is not None:
                        rows.append(Row("worker CPU, cores", what, "normal", k["worker_cores"]))
                    continue
                rows.append(
                    Row(
                        f"kernel 1+1, {stat} ms",
                        what,
                        "normal",
                        project=k[f"{stat}_ms"],
                        floor=k.get(f"idle_{stat}_ms", k[f"{stat}_ms"] / k[f"{stat}_ratio"]),
                        floor_label="idle",
                    )
                )


def widget(r: Results, rows: list[Row]) -> None:
    w = r.widget
    if "error" in w:
        rows.append(Row("widget", "", "", project="failed"))
        return
    rows.append(
        Row("widget: delta message, B/event", "workload", "", w["workload"]["delta_bytes_mean"])
    )
    rows.append(
        Row("widget: delta message, B/event", "demo model", "", w["demo"]["delta_bytes_mean"])
    )
    rows.append(
        Row("widget: opening page, B/event", "workload", "", w["workload"]["page_bytes_per_event"])
    )
    if "kernel" in w:
        k = w["kernel"]
        rows.append(
            Row(
                "widget: comm on the wire, B/event",
                f"{k['events']:,} events",
                "",
                k["wire_bytes_per_event_all"],
            )
        )
    b = r.browser
    if "long" in b:
        rows.append(
            Row(
                "widget usable in Chromium, ms",
                f"{b['long']['events']:,} events",
                "",
                project=b["long"]["usable_ms"],
                floor=b["short"]["usable_ms"],
                floor_label=f"{b['short']['events']} events",
            )
        )


@dataclass(frozen=True)
class Target:
    what: str
    value: float | None
    limit: float
    below: bool = True  # met when value <= limit (else when value >= limit)
    shown: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.below else self.value >= self.limit

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        value = "–" if self.value is None else f"{self.value:.3g}"
        op = "≤" if self.below else "≥"
        limit = f"1/{1 / self.limit:.3g}" if self.limit < 0.1 else f"{self.limit:g}"
        return f"{verdict:>12}  {self.what}: {value} (target {op} {limit}){self.shown}"


def targets(r: Results) -> list[Target]:
    def ratio(system: str, mode: str, n: int) -> float | None:
        ours, theirs = r.step("project", mode, n, "step_us"), r.step(system, mode, n, "step_us")
        if isinstance(ours, float) and isinstance(theirs, float):
            return ours / theirs
        return None

    big = r.sizes[-1]
    out = [
        Target("step overhead @1,000, normal, project/DBOS", ratio("dbos", "normal", 1000), 0.1),
        Target("step overhead @1,000, full, project/DBOS", ratio("dbos", "full", 1000), 0.1),
        Target("step overhead @1,000, default, project/DBOS", ratio("dbos", "default", 1000), 0.1),
        Target(
            "step overhead @1,000, normal, project/LangGraph",
            ratio("langgraph", "normal", 1000),
            1 / 30,
        ),
        Target(
            "step overhead @1,000, full, project/LangGraph",
            ratio("langgraph", "full", 1000),
            1 / 30,
        ),
    ]
    growth = r.step("project", "normal", big, "growth")
    out.append(
        Target(
            f"flat to {big:,}: last/first window",
            growth if isinstance(growth, float) else None,
            1.25,
        )
    )
    raw = r.steps.get(("project", "normal", big), {})
    if "event_json_bytes" in raw:
        out.append(
            Target(
                f"disk per step / raw event JSON @{big:,}",
                raw["disk_bytes"] / raw["event_json_bytes"],
                1.5,
            )
        )
    for key, what in (
        ("load_state_ms", "state, ms after imports"),
        ("resume_one_step_ms", "state + one more step, ms"),
    ):
        ms = r.branched(f"project_resume_{big}", key)
        out.append(Target(f"resume @{big:,}: {what}", ms if isinstance(ms, float) else None, 100))
    for mode, doc in r.floor.items():
        for batch in ("single", "batched"):
            value = doc.get(f"fraction_{batch}")
            out.append(Target(f"appends/s / floor, {batch}, {mode}", value, 0.5, below=False))
    for k in r.kernel.get("rows", []):
        if k["agents"] == 50:
            pace = f"{r.kernel.get('tool_ms', 10):g} ms steps"
            where = ", in a worker" if k.get("worker") else ""
            what = f"kernel 1+1 p95, 50 agents ({pace}{where}) / idle"
            out.append(Target(what, k["p95_ratio"], 1.5))
    for k in r.kernel.get("paced", []):
        if k["agents"] == 50:
            out.append(Target("kernel 1+1 p95, 50 agents (1 s steps) / idle", k["p95_ratio"], 1.5))
    return out
