"""The live session widget, through its comm: what the kernel sends and how it answers the page.

The comm is the transport seam ipywidgets uses (``comm.create_comm``): a recording comm keeps
every message as it would cross the wire (JSON) and plays the page's part. Sessions are real
(agents on scripted and demo models) or written by hand into the store, as another process
running the session would write them. One test runs the widget in a real kernel.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import comm
import pytest
from comm.base_comm import BaseComm
from logs import cut_log, gated_tool, new_session, paused_after_a_call

from jupyter_agent import Agent, EventKind, Session, SqliteStore, open_session, open_store, tool
from jupyter_agent._branch import check_point
from jupyter_agent._engine import RECORD_RUNNING_AFTER_S
from jupyter_agent._identity import current_identity
from jupyter_agent._live import live_text
from jupyter_agent._snapshot import snapshot_html
from jupyter_agent._state import SessionState, session_totals
from jupyter_agent._timeline import timeline
from jupyter_agent._watch import SessionFeed, compact_event, cost_text, watcher
from jupyter_agent._widget import SessionWidget, session_mimebundle
from jupyter_agent.testing import ScriptedModel, call, calls, reply

WIDGET_JS = Path(__file__).parents[1] / "jupyter_agent" / "static" / "widget.js"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"


# -- the seam: a comm that records what the kernel sends ----------------------------------------


class RecordingComm(BaseComm):
    """Keeps each message as the page would receive it; ``page()`` sends one as the page."""

    def __init__(self, **kwargs: Any) -> None:
        self.sent: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        super().__init__(**kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
        **keys: Any,
    ) -> None:
        wire = json.loads(json.dumps(data or {}, ensure_ascii=False))  # what crosses the wire
        with self.lock:
            self.sent.append((time.monotonic(), msg_type, wire))

    def page(self, content: dict[str, Any]) -> dict[str, Any]:
        """Send ``content`` as the page's custom message; return the widget's answer."""
        req = f"r{len(self.sent)}-{time.monotonic()}"
        self.handle_msg(
            {
                "content": {"data": {"method": "custom", "content": {**content, "req": req}}},
                "buffers": [],
            }
        )
        (answer,) = [c for c in self.customs() if c.get("req") == req]
        return answer

    def customs(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d["content"] for _, t, d in self.sent if d.get("method") == "custom"]

    def deltas(self) -> list[dict[str, Any]]:
        """The data of each ``event`` delta (not the answers to requests)."""
        with self.lock:
            return [
                d
                for _, t, d in self.sent
                if d.get("method") == "custom" and d["content"].get("type") == "event"
            ]

    def updates(self) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(ts, d["state"]) for ts, t, d in self.sent if d.get("method") == "update"]

    def opening(self) -> dict[str, Any]:
        with self.lock:
            (state,) = [d["state"] for _, t, d in self.sent if t == "comm_open"]
        return state


@pytest.fixture
def widgets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Session], SessionWidget]]:
    """Makes widgets on recording comms; closes them all and checks nothing is left watched."""
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))
    made: list[SessionWidget] = []

    def make(session: Session) -> SessionWidget:
        w = SessionWidget(session)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
    assert watcher.watching == 0


def rec(w: SessionWidget) -> RecordingComm:
    assert isinstance(w.comm, RecordingComm)
    return w.comm


def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


# -- sessions written by hand, as another process running them would write them ----------------


class HandSession:
    """A session whose events the test appends, with its row kept current like an engine's."""

    def __init__(self, store: SqliteStore, sid: str = "s1") -> None:
        self.store, self.sid = store, sid
        self.chain = new_session(store, sid)
        self.state = SessionState.fold(sid, store.iter_events(sid))

        self.queued: list[Any] = []

    def add(self, kind: EventKind, payload: dict[str, Any], *, actor: str = "agent") -> None:
        e = self.chain.next(kind, payload, ts=time.time(), actor=actor)
        self.state.apply(e)
        self.queued.append(e)

    def flush(self) -> int:
        """Write the queued events in one transaction, with a snapshot every 100 events."""
        events, self.queued = self.queued, []
        last = self.state.last_seq
        crossed = last // 100 > (last - len(events)) // 100
        snap = (last, self.state.to_snapshot()) if crossed else None
        row = {**session_totals(self.state), "updated_at": events[-1].ts}
        self.store.write(events, session=row, snapshot=snap)
        return last

    def append(self, kind: EventKind, payload: dict[str, Any], *, actor: str = "agent") -> int:
        self.add(kind, payload, actor=actor)
        return self.flush()

    def step(self, n: int, *, output: str = "ok", write: bool = True) -> None:
        """One model turn calling one tool, and the tool's result: four events."""
        cid = f"call_{n}"
        self.add(EventKind.MODEL_REQUEST, {"step": n, "messages": 2 * n + 1})
        self.add(EventKind.MODEL_RESPONSE, response(n, cid))
        self.add(EventKind.TOOL_CALL, tool_call(cid, '{"path": "a.txt"}'))
        self.add(EventKind.TOOL_RESULT, tool_result(cid, output))
        if write:
            self.flush()


def response(n: int, cid: str, *, text: str = "reading", arguments: str = "{}") -> dict[str, Any]:
    return {
        "step": n,
        "text": text,
        "tool_calls": [{"id": cid, "name": "read_file", "arguments": arguments}],
        "usage": {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.001},
        "stop_reason": "tool_use",
        "model": "demo",
        "duration_ms": 12.0,
    }


def tool_call(cid: str, arguments: str) -> dict[str, Any]:
    return {"call_id": cid, "name": "read_file", "arguments": arguments, "effect": "read_only"}


def tool_result(cid: str, output: str, **more: Any) -> dict[str, Any]:
    return {"call_id": cid, "name": "read_file", "output": output, "is_error": False, **more}


def long_session(store: SqliteStore, sid: str, n_events: int) -> HandSession:
    """A session of exactly ``n_events`` events (a snapshot every 100, as the engine writes)."""
    s = HandSession(store, sid)
    step = 0
    while s.chain.last_seq + 4 <= n_events:
        step += 1
        s.step(step, output=f"line {step}\n" * 3, write=False)
        if len(s.queued) >= 100:
            s.flush()
    while s.chain.last_seq < n_events:
        s.add(EventKind.MESSAGE, {"text": "filler"}, actor="ann")
    if s.queued:
        s.flush()
    return s


# -- deltas -------------------------------------------------------------------------------------


def test_each_new_event_is_one_delta_message_under_2_kb(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = HandSession(store)
    w = widgets(Session(store, s.sid))
    huge = "x" * 100_000
    cjk = "界" * 5_000  # three bytes each in UTF-8
    s.append(EventKind.MESSAGE, {"text": cjk}, actor="ann")
    s.append(EventKind.MODEL_RESPONSE, response(1, "c1", text=huge, arguments=huge))
    s.append(EventKind.TOOL_CALL, tool_call("c1", json.dumps({"code": huge})))
    s.append(EventKind.TOOL_RESULT, tool_result("c1", huge, error=huge, output_blob="ab" * 32))
    plan = [{"step": f"step {i} " + "y" * 200, "status": "pending"} for i in range(300)]
    s.append(EventKind.PLAN_UPDATED, {"plan": plan})
    s.append(EventKind.ERROR, {"code": "boom", "message": huge, "traceback": huge})
    last = s.append(EventKind.MESSAGE, {"text": "short and whole"}, actor="bob")

    until(lambda: len(rec(w).deltas()) >= last - 1)
    time.sleep(0.2)  # nothing more should come
    deltas = rec(w).deltas()
    assert [d["content"]["event"]["seq"] for d in deltas] == list(range(2, last + 1))
    sizes = [len(json.dumps(d, ensure_ascii=False).encode()) for d in deltas]
    assert max(sizes) <= 2048, sizes
    events = [d["content"]["event"] for d in deltas]
    assert events[0]["kind"] == "message" and events[0]["p"]["text"].startswith("界" * 100)
    assert events[0]["clipped"] and events[-1]["p"]["text"] == "short and whole"
    assert not events[-1]["clipped"]
    assert "traceback" not in events[5]["p"]  # on demand only
    assert [e["seq"] for e in rec(w).opening()["initial_page"]["events"]] == [1]


def test_a_running_session_sends_every_event_exactly_once(db: Path, widgets: Any) -> None:
    agent = Agent("loop", model="demo:loop?steps=30", store=db)
    s = agent.start("go round")
    w = widgets(s)
    assert s.wait(30) == "done"
    last = s.row.last_seq
    until(lambda: w.header.get("status") == "done")
    first = [e["seq"] for e in rec(w).opening()["initial_page"]["events"]]
    # the header may say "done" one poll before the last events arrive (the row is read after
    # them); a poll takes at most a page of events
    until(lambda: len(first) + len(rec(w).deltas()) >= last)
    time.sleep(0.2)  # nothing more should come
    later = [d["content"]["event"]["seq"] for d in rec(w).deltas()]
    assert sorted(first + later) == list(range(1, last + 1))
    assert later == sorted(later)


def test_reconnect_catches_up_from_last_seen_seq(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = HandSession(store)
    for n in range(1, 13):
        s.step(n)  # 49 events
    w = widgets(Session(store, s.sid))
    answer = rec(w).page({"type": "hello", "last_seq": 20})
    assert answer["type"] == "events" and answer["mode"] == "after"
    assert [e["seq"] for e in answer["events"]] == list(range(21, 50))
    # the page went away while five more events happened; a new view says what it had
    for n in range(13, 14):
        s.step(n)
    s.append(EventKind.MESSAGE, {"text": "still there?"}, actor="ann")
    answer = rec(w).page({"type": "hello", "last_seq": 49})
    assert [e["seq"] for e in answer["events"]] == [50, 51, 52, 53, 54]
    assert answer["events"][-1]["p"]["text"] == "still there?"
    assert rec(w).page({"type": "hello", "last_seq": 54})["events"] == []


def test_a_view_too_far_behind_starts_again_from_the_newest_page(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = long_session(store, "far", 1000)
    w = widgets(Session(store, s.sid))
    answer = rec(w).page({"type": "hello", "last_seq": 3})
    assert answer["mode"] == "reset" and answer["has_more"] is True
    assert [e["seq"] for e in answer["events"]] == list(range(801, 1001))


def test_a_10000_event_session_opens_with_one_page(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = long_session(store, "big", 10_000)
    session = Session(store, s.sid)
    started = time.perf_counter()
    w = widgets(session)
    bundle = w._repr_mimebundle_()
    took = time.perf_counter() - started
    assert took < 0.5, f"opening took {took:.3f} s"
    assert bundle is not None and VIEW_MIME in bundle[0]
    state = rec(w).opening()
    page = state["initial_page"]
    assert [e["seq"] for e in page["events"]] == list(range(9801, 10_001))
    assert page["has_more"] is True
    state.pop("_esm"), state.pop("_css")
    assert len(json.dumps(state).encode()) < 100_000
    assert state["header"]["steps"] == s.state.steps and state["header"]["last_seq"] == 10_000
    assert rec(w).deltas() == []


def test_scrolling_up_fetches_older_events_in_pages(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = long_session(store, "pages", 1000)
    w = widgets(Session(store, s.sid))
    before, seen = 801, []
    while True:
        answer = rec(w).page({"type": "page", "before": before, "limit": 300})
        seqs = [e["seq"] for e in answer["events"]]
        assert seqs == list(range(max(1, before - 300), before))
        seen = seqs + seen
        if not answer["has_more"]:
            break
        before = seqs[0]
    assert seen == list(range(1, 801))
    capped = rec(w).page({"type": "page", "before": 1001, "limit": 10_000})
    assert len(capped["events"]) == 500


# -- values -------------------------------------------------------------------------------------


def test_value_updates_are_coalesced_to_20_hz_and_the_final_state_is_sent(
    db: Path, widgets: Any
) -> None:
    s = Agent("loop", model="demo:loop?steps=120", store=db).start("go round")
    w = widgets(s)
    stop = threading.Event()

    def stream() -> None:  # a model streaming its answer, far faster than 20 Hz
        n = 0
        while not stop.is_set():
            n += 1
            live_text.set(s.id, 1, f"token {n} " * 3)
            time.sleep(0.0005)

    streamer = threading.Thread(target=stream)
    streamer.start()
    assert s.wait(60) == "done"
    stop.set()
    streamer.join()
    live_text.set(s.id, 7, "the final words")
    until(lambda: w.live == {"step": 7, "text": "the final words"})
    until(lambda: w.header.get("status") == "done")
    time.sleep(0.2)

    updates = rec(w).updates()
    times = [t for t, _ in updates]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(updates) >= 3 and min(gaps) >= 0.045, min(gaps)
    assert len(rec(w).deltas()) > 2 * len(updates)  # values are not sent per event
    headers = [u["header"] for _, u in updates if "header" in u]
    lives = [u["live"] for _, u in updates if "live" in u]
    row = s.row
    assert headers[-1]["status"] == "done" and headers[-1]["steps"] == row.steps == 121
    assert headers[-1]["tool_calls"] == row.tool_calls
    assert lives[-1] == {"step": 7, "text": "the final words"}
    live_text.clear(s.id)


def test_header_plan_and_approval_values_follow_the_log(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = HandSession(store)
    w = widgets(Session(store, s.sid))
    plan = [{"step": "look", "status": "done"}, {"step": "fix", "status": "active"}]
    s.append(EventKind.PLAN_UPDATED, {"plan": plan})
    s.append(EventKind.MODEL_RESPONSE, response(1, "c1"))
    until(lambda: w.plan == plan and w.header["steps"] == 1)
    assert w.header["tokens"] == 110 and w.header["cost_usd"] == pytest.approx(0.001)
    assert w.header["budgets"] == []  # this hand-made session has no step limit


def test_the_header_totals_are_exact_while_the_sessions_row_lags(db: Path, widgets: Any) -> None:
    """A running engine writes its row's totals at most twice a second; the header folds the
    events, so it never shows a step behind."""
    store = open_store(db)
    s = HandSession(store)
    w = widgets(Session(store, s.sid))
    s.append(EventKind.MODEL_RESPONSE, response(1, "c1"))
    until(lambda: w.header["steps"] == 1)
    s.add(EventKind.MODEL_RESPONSE, response(2, "c2"))
    store.write(s.queued)  # the events without the row, as between two of an engine's refreshes
    s.queued = []
    assert store.get_session(s.sid).steps == 1 and store.get_session(s.sid).last_seq == 3
    until(lambda: w.header["steps"] == 2)
    assert w.header["tokens"] == 220 and w.header["last_seq"] == 3


# -- the static snapshot ------------------------------------------------------------------------


def test_static_html_snapshot_shows_the_timeline(db: Path) -> None:
    model = ScriptedModel([call("list_files"), reply("all done <b>for real</b>")])
    s = Agent("snap", model=model, store=db).run("look <around>")
    data, _ = session_mimebundle(s)  # outside a kernel: no widget, the snapshot and the text
    assert set(data) == {"text/plain", "text/html"}
    page = data["text/html"]
    assert "<script" not in page
    assert "snap" in page and "done" in page and "list_files" in page
    assert "&lt;b&gt;for real&lt;/b&gt;" in page and "<b>for real</b>" not in page
    assert page.count("<tr data-seq=") == len(s.timeline())
    assert data["text/plain"] == repr(s)


def test_a_snapshot_of_a_running_session_counts_what_its_rows_show(db: Path) -> None:
    store = open_store(db)
    s = HandSession(store)
    s.step(1)
    for n in (2, 3, 4):  # written as an engine writes between two updates of its row
        s.step(n, write=False)
    events, s.queued = s.queued, []
    store.write(events)
    assert store.get_session(s.sid).steps == 1  # the row lags
    page = snapshot_html(store, s.sid)
    assert "steps <b>4</b>" in page and "tool calls <b>4</b>" in page
    assert f"snapshot of event {events[-1].seq}," in page


def test_a_snapshot_of_a_paused_session_stops_its_clock_as_the_widget_does(db: Path) -> None:
    s, _ = paused_after_a_call(db, "paused")

    def elapsed() -> str:
        return snapshot_html(s.store, s.id).split("elapsed <b>")[1].split("<")[0]

    first, header = elapsed(), SessionFeed(s.store, s.id).summary()["header"]
    time.sleep(1.1)
    assert elapsed() == first
    assert SessionFeed(s.store, s.id).summary()["header"]["elapsed_s"] == header["elapsed_s"]


def test_the_widget_display_carries_the_view_the_snapshot_and_text(db: Path, widgets: Any) -> None:
    s = Agent("snap", model=ScriptedModel([reply("fine")]), store=db).run("go")
    w = widgets(s)
    bundle = w._repr_mimebundle_()
    assert bundle is not None
    data, _ = bundle
    assert data[VIEW_MIME]["model_id"] == w.model_id
    assert 'data-kind="result"' in data["text/html"] and "fine" in data["text/html"]
    assert data["text/plain"].startswith(f"<Session {s.id}")


# -- controls -----------------------------------------------------------------------------------


def control(w: SessionWidget, action: str, **args: Any) -> dict[str, Any]:
    return rec(w).page({"type": "control", "action": action, **args})


def test_controls_reach_the_session(db: Path, widgets: Any) -> None:
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), call("list_files"), reply("done")])
    s = Agent("a", model=model, store=db, tools=[wait_gate, "list_files"]).start("go")
    w = widgets(s)
    assert entered.wait(10)
    assert control(w, "pause")["ok"]
    gate.set()
    assert s.wait(10) == "paused"
    answer = control(w, "tell", text="also look at the logs")
    assert answer == {**answer, "ok": True, "notice": "message sent"}
    until(lambda: any(e["p"].get("text") == "also look at the logs" for e in seen_events(w)))
    assert control(w, "resume")["ok"]
    assert s.wait(10) == "done"
    said = [e for e in s.events if e.kind is EventKind.MESSAGE]
    assert said[0].payload["text"] == "also look at the logs"


def test_stop_from_the_widget_stops_the_session(db: Path, widgets: Any) -> None:
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), reply("x")])
    s = Agent("a", model=model, store=db, tools=[wait_gate]).start("go")
    w = widgets(s)
    assert entered.wait(10)
    assert control(w, "stop")["ok"]
    gate.set()
    assert s.wait(10) == "stopped"
    until(lambda: w.header["status"] == "stopped")


def seen_events(w: SessionWidget) -> list[dict[str, Any]]:
    return [d["content"]["event"] for d in rec(w).deltas()]


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_approvals_are_listed_and_decided_from_the_widget(
    db: Path, widgets: Any, decision: str
) -> None:
    ran: list[str] = []

    @tool(effect="side_effect")
    def charge_card() -> str:
        """Charges the card."""
        ran.append("charged")
        return "charged"

    model = ScriptedModel([call("charge_card"), reply("finished")])
    done = Agent("a", model=model, store=db, tools=[charge_card], max_steps=5).run("go")
    crashed = cut_log(done, after=EventKind.TOOL_CALL)  # the process died while it ran
    ran.clear()
    model = ScriptedModel([call("charge_card"), reply("finished")])
    s = open_session(done.id, store=crashed, tools=[charge_card], model=model)
    s.resume()
    assert s.wait(10) == "awaiting_approval"
    w = widgets(s)
    (waiting,) = w.approvals
    assert waiting["name"] == "charge_card" and waiting["reason"] == "in_doubt"
    assert control(w, decision, call_id=waiting["call_id"])["ok"]
    assert s.wait(10) == "done"
    assert ran == (["charged"] if decision == "approve" else [])
    until(lambda: w.approvals == [])


def test_a_control_error_shows_one_line(db: Path, widgets: Any) -> None:
    s = Agent("a", model=ScriptedModel([reply("over")]), store=db).run("go")
    w = widgets(s)
    answer = control(w, "pause")
    assert answer["ok"] is False
    assert answer["error"] == f"cannot pause session {s.id}: it is done"
    until(lambda: w.error == answer["error"])
    for action, args in [
        ("approve", {"call_id": "nope"}),
        ("approve", {}),
        ("launch", {}),
        ("fork", {}),
        ("restore", {"seq": 999}),
    ]:
        error = control(w, action, **args)["error"]
        assert error and "\n" not in error and "Traceback" not in error, error
    assert "select a row" in control(w, "fork")["error"]
    assert control(w, "tell", text="   ")["error"] == "tell() needs a non-empty message"
    unknown = rec(w).page({"type": "nonsense"})
    assert unknown["ok"] is False and unknown["error"] == "unknown request 'nonsense'"


def test_fork_and_restore_here_reach_the_session(db: Path, widgets: Any) -> None:
    if not hasattr(Session, "fork") or not hasattr(Session, "restore"):
        pytest.skip("Session.fork / Session.restore are not built yet")
    s = Agent("a", model="demo:loop?steps=3", store=db).run("go")
    w = widgets(s)
    answer = control(w, "fork", seq=4)
    assert answer["ok"], answer
    (forked,) = w.forks
    assert forked.id in answer["notice"]
    assert forked.row.parent_id == s.id and forked.row.fork_seq == 4
    fork_view = widgets(forked)  # the fork's own widget: its parent's history, then the fork
    assert fork_view.header["parent_id"] == s.id and fork_view.header["status"] == "paused"
    first_page = [(e["seq"], e["kind"]) for e in rec(fork_view).opening()["initial_page"]["events"]]
    assert first_page[-1] == (5, "fork") and [seq for seq, _ in first_page] == list(range(1, 6))
    answer = control(w, "restore", seq=4)
    assert answer == {**answer, "ok": True, "notice": "restored to event 4"}
    until(lambda: w.header["status"] == "paused")
    assert seen_events(w)[-1]["kind"] == "restore"


# -- detail on demand, closing --------------------------------------------------------------------


def test_a_row_expands_to_the_whole_event_on_demand(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = HandSession(store)
    s.step(1, output="y" * 60_000)
    s.append(EventKind.ERROR, {"code": "boom", "message": "it broke", "traceback": "T" * 5000})
    w = widgets(Session(store, s.sid))
    answer = rec(w).page({"type": "detail", "seqs": [4, 5, 6]})
    call_, result, error = answer["events"]
    assert call_["kind"] == "tool_call" and json.loads(call_["p"]["arguments"]) == {"path": "a.txt"}
    assert result["p"]["output"] == "y" * 60_000 and not result["clipped"]
    assert error["p"]["traceback"] == "T" * 5000


def test_closing_the_widget_stops_watching(db: Path, widgets: Any) -> None:
    store = open_store(db)
    s = HandSession(store)
    w = widgets(Session(store, s.sid))
    thread = watcher.thread
    assert watcher.watching == 1 and thread is not None and thread.is_alive()
    recorder = rec(w)
    w.close()
    assert watcher.watching == 0
    thread.join(2)
    assert not thread.is_alive()
    sent = len(recorder.sent)
    s.append(EventKind.MESSAGE, {"text": "anyone?"}, actor="ann")
    time.sleep(0.2)
    assert len(recorder.sent) == sent


# -- the page's fold agrees with the timeline -----------------------------------------------------


def page_rows(events: list[Any]) -> list[list[Any]]:
    """The rows the page's fold (widget.js, run in node) makes of these events: seq, kind,
    label, status, end_seq, and the restore that left it (on a branch no longer followed)."""
    row = "[r.seq, r.kind, r.label, r.status, r.end_seq, r.abandoned_by ?? null]"
    return page_fold(events, row)


def page_fold(events: list[Any], row: str) -> list[Any]:
    """The page's fold (widget.js ``foldEvents``, run in node) of these events, each of its
    rows as the JavaScript expression ``row`` (of ``r``) gives it."""
    script = textwrap.dedent(
        f"""
        import {{ foldEvents }} from {json.dumps(WIDGET_JS.as_uri())};
        let text = "";
        for await (const chunk of process.stdin) text += chunk;
        console.log(JSON.stringify(foldEvents(JSON.parse(text)).rows.map((r) => {row})));
        """
    )
    rows: list[Any] = run_node(script, json.dumps([compact_event(e) for e in events]))
    return rows


def run_node(script: str, stdin: str = "") -> Any:
    """Run a module script in node (the page's code, imported from widget.js); return what it
    printed, as JSON."""
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_call_a_restore_cut_off_is_shown_undone_not_running(db: Path) -> None:
    model = ScriptedModel([call("sleep", seconds=3600, reason="nap"), reply("woke")])
    s = Agent("napper", model=model, tools=["sleep"], store=db).start("nap")
    deadline = time.monotonic() + 30
    while s.status != "sleeping":
        assert time.monotonic() < deadline, f"the session is {s.status}"
        time.sleep(0.02)
    s.restore(at=1)  # (pauses it first: the sleep is cut short, its call left open)
    events = list(s.events)
    rows = timeline(events)
    (nap,) = [r for r in rows if r.kind == "tool"]
    assert nap.status == "skipped" and nap.detail.endswith("⇒ cut off by the restore")
    assert not [r for r in rows if r.status in ("running", "waiting")]
    page = page_rows(events)
    assert [r[:4] + r[5:] for r in page] == [
        [r.seq, r.kind, r.label, r.status, r.abandoned_by] for r in rows
    ]

    restore = events[-1]
    assert restore.kind is EventKind.RESTORE
    left = {r[0]: r[5] for r in page}  # the page greys the branch the restore left
    branch = {r.seq for r in rows if 1 < r.seq < restore.seq}
    assert {seq for seq, by in left.items() if by} == branch
    assert set(left.values()) == {None, restore.seq}
    s.restore(at=restore.seq - 1)  # undo the restore: the call is open again, as it was
    events = list(s.events)
    rows = timeline(events)
    (nap,) = [r for r in rows if r.kind == "tool"]
    assert nap.status == "running" and "undone" not in nap.detail
    page = page_rows(events)
    assert [r[:4] + r[5:] for r in page] == [
        [r.seq, r.kind, r.label, r.status, r.abandoned_by] for r in rows
    ]
    left = {r[0]: r[5] for r in page}  # the branch is taken back; the first restore is left
    again = events[-1].seq
    assert {seq for seq, by in left.items() if by} == {
        r.seq for r in rows if restore.seq <= r.seq < again
    }
    assert nap.seq in left and left[nap.seq] is None
    s.resume()  # it sleeps in that call again; its result completes the same row
    deadline = time.monotonic() + 30
    while s.status != "sleeping":
        assert time.monotonic() < deadline, f"the session is {s.status}"
        time.sleep(0.02)
    s.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_call_run_again_after_a_restore_completes_its_own_row_once(db: Path) -> None:
    """A restore to between a call's intent and its result leaves the call open: the resumed
    run does it again, and that result completes the call's row, which the restore opened
    again, rather than a second answer written after the first."""
    ran: list[int] = []

    @tool(effect="read_only")  # (one that changes something would wait for a person)
    def count() -> str:
        """Counts its calls, for long enough that each call's intent is written first."""
        ran.append(1)
        time.sleep(RECORD_RUNNING_AFTER_S * 3)
        return str(len(ran))

    model = ScriptedModel(lambda r: call("count") if r.step <= 2 else reply("done"))
    s = Agent("again", model=model, tools=[count], store=db).run("count")
    assert s.status == "done"
    first = next(e.seq for e in s.events if e.kind is EventKind.TOOL_CALL)
    s.restore(at=first)
    assert s.resume().wait(30) == "done"
    events = list(s.events)
    restore = next(e.seq for e in events if e.kind is EventKind.RESTORE)
    rows = [r for r in timeline(events) if r.kind == "tool"]
    assert [r.detail.count("⇒") for r in rows] == [1, 1, 1]
    again = rows[0]
    assert again.seq == first and again.detail == "(run again)  ⇒ 3" and again.status == "ok"
    assert rows[1].abandoned_by == restore and rows[2].seq > restore  # the second call's two
    both_folds(events)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_restore_to_before_an_approval_was_asked_shows_the_call_running_again(
    db: Path,
) -> None:
    model = ScriptedModel([call("shell", command="echo hi"), reply("done")])
    s = Agent("asker", model=model, store=db, policy={"shell": "ask"}).start("ask")
    assert s.wait(30) == "awaiting_approval"
    intent = next(e.seq for e in s.events if e.kind is EventKind.TOOL_CALL)
    s.restore(at=intent)  # the call is made, its approval not asked yet
    events = list(s.events)
    rows = timeline(events)
    (shell,) = [r for r in rows if r.kind == "tool"]
    (asked,) = [r for r in rows if r.kind == "approval"]
    assert (shell.status, asked.status) == ("running", "skipped")
    assert [r[:4] for r in page_rows(events)] == [[r.seq, r.kind, r.label, r.status] for r in rows]
    s.stop()


def both_folds(events: list[Any]) -> list[list[Any]]:
    """The rows of the timeline, as [seq, kind, label, status, detail, duration, left by], after
    checking that the page's fold (widget.js) makes the same."""
    page = page_fold(
        events,
        "[r.seq, r.kind, r.label, r.status, r.detail, r.duration_ms, r.abandoned_by ?? null]",
    )
    rows = [
        [r.seq, r.kind, r.label, r.status, r.detail, r.duration_ms, r.abandoned_by]
        for r in timeline(events)
    ]
    assert page == rows
    return rows


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_calls_whose_results_a_restore_left_are_open_again_and_run_again_in_their_rows(
    db: Path,
) -> None:
    model = ScriptedModel(
        [calls(call("list_files"), call("python", code="print(6 * 7)")), reply("done")]
    )
    s = Agent("again", model=model, store=db).run("two calls")
    done = both_folds(list(s.events))
    tools = [r for r in done if r[1] == "tool"]
    assert [r[3] for r in tools] == ["ok", "ok"] and "⇒ 42" in tools[1][4]
    answer = next(e for e in s.events if e.kind is EventKind.MODEL_RESPONSE)
    s.restore(at=answer.seq + 2)  # "Restore here" on the model's row: after the calls' intents
    restored = both_folds(list(s.events))
    reopened = [r for r in restored if r[1] == "tool"]
    assert [r[0] for r in reopened] == [r[0] for r in tools]  # the same rows, open again
    assert [(r[3], r[5]) for r in reopened] == [("running", None), ("running", None)]
    assert [r[4] for r in reopened] == ["", 'code="print(6 * 7)"']
    restore_seq = s.row.last_seq

    s.restore(at=restore_seq - 1)  # undone: the rows as they were
    back = both_folds(list(s.events))
    assert [r[3:6] for r in back if r[1] == "tool"] == [r[3:6] for r in tools]
    s.restore(at=answer.seq + 2)
    s.resume().wait(30)  # they run again and complete their own rows
    rerun = both_folds(list(s.events))
    assert [r[0] for r in rerun if r[1] == "tool"] == [r[0] for r in tools]
    assert [r[3] for r in rerun if r[1] == "tool"] == ["ok", "ok"]
    assert s.status == "done"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_call_recorded_with_its_result_shows_its_arguments_in_its_row(db: Path) -> None:
    model = ScriptedModel([call("read_file", path="notes.txt"), reply("done")])
    s = Agent("reader", model=model, store=db).run("read")
    assert EventKind.TOOL_CALL not in [e.kind for e in s.events]  # its result is its intent
    (row,) = [r for r in both_folds(list(s.events)) if r[1] == "tool"]
    assert row[2:4] == ["read_file", "error"]  # (there is no such file)
    assert row[4].startswith('path="notes.txt"  ⇒ ')


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_quick_calls_of_one_answer_are_rows_in_the_order_asked_from_when_they_began(
    db: Path,
) -> None:
    @tool(effect="read_only")
    async def look(n: int) -> str:
        """Looks, for a while (less than the time after which its intent is written)."""
        await anyio.sleep(RECORD_RUNNING_AFTER_S / 5)
        return f"saw {n}"

    model = ScriptedModel([calls(call("look", n=1), call("look", n=2)), reply("done")])
    s = Agent("looker", model=model, store=db, tools=[look]).run("look")
    events = list(s.events)
    tools = [r for r in both_folds(events) if r[1] == "tool"]
    assert [r[4].split("  ⇒ ")[0] for r in tools] == ["n=1", "n=2"]
    answer = next(e for e in events if e.kind is EventKind.MODEL_RESPONSE)
    first = next(e for e in events if e.kind is EventKind.TOOL_RESULT)
    assert "arguments" in first.payload  # its own intent, written when the call ended
    rows = {r.seq: r for r in timeline(events)}
    assert rows[first.seq].ts == answer.ts < first.ts  # its row begins when it was asked for
    page = page_fold(events, "[r.seq, r.ts]")
    assert page == [[r.seq, r.ts] for r in rows.values()]  # the page's fold times them alike


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_restore_to_a_point_between_two_restores_leaves_the_first_ones_branch_again(
    db: Path,
) -> None:
    s = Agent("thrice", model="demo:loop?steps=6", store=db).run("loop")
    results = [e.seq for e in s.events if e.kind is EventKind.TOOL_RESULT]
    s.restore(at=results[1])  # R1: leaves steps 3 on
    first = s.row.last_seq
    s.resume().wait(30)  # a second branch, after R1
    after_first = [e.seq for e in s.events if e.kind is EventKind.TOOL_RESULT and e.seq > first]
    s.restore(at=results[2])  # R2: back onto R1's branch, which it takes back up to there
    second = s.row.last_seq
    rows = both_folds(list(s.events))
    taken_back = [r for r in rows if results[1] < r[0] <= results[2]]
    assert taken_back and all(r[6] is None for r in taken_back)
    s.restore(at=after_first[0])  # R3: to the second branch: R1's is left again
    rows = both_folds(list(s.events))
    assert all(r[6] == first for r in rows if results[1] < r[0] < first), rows
    assert all(r[6] is None for r in rows if first <= r[0] <= after_first[0])
    assert all(r[6] == second for r in rows if after_first[0] < r[0] < second)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_an_approved_call_shows_running_until_its_result(db: Path) -> None:
    wait_gate, gate, entered = gated_tool()
    model = ScriptedModel([call("wait_gate"), reply("done")])
    s = Agent("gated", model=model, store=db, tools=[wait_gate], policy={"*": "ask"}).start("go")
    assert s.wait(30) == "awaiting_approval"
    s.approve(s.pending_approvals[0].call_id)
    assert entered.wait(10)  # it runs
    (gated,) = [r for r in both_folds(list(s.events)) if r[1] == "tool"]
    assert gated[3] == "running"
    gate.set()
    assert s.wait(30) == "done"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_restore_to_before_a_question_was_answered_asks_it_again(db: Path) -> None:
    model = ScriptedModel([call("shell", command="echo hi"), reply("done")])
    s = Agent("asked", model=model, store=db, policy={"shell": "ask"}).start("ask")
    assert s.wait(30) == "awaiting_approval"
    s.approve(s.pending_approvals[0].call_id)
    assert s.wait(30) == "done"
    asked = next(e.seq for e in s.events if e.kind is EventKind.APPROVAL_REQUESTED)
    s.restore(at=asked)  # asked, not answered yet
    rows = both_folds(list(s.events))
    (shell,) = [r for r in rows if r[1] == "tool"]
    (question,) = [r for r in rows if r[1] == "approval" and r[2] == "approval asked"]
    assert (shell[3], question[3]) == ("waiting", "waiting")
    assert s.pending_approvals  # (as the session has it: the question is open again)
    s.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_the_page_folds_events_into_the_same_rows_as_the_timeline(db: Path) -> None:
    model = ScriptedModel(
        [
            call("write_file", path="a.txt", content="A"),
            call("read_file", path="missing.txt"),
            call("update_plan", steps=[{"step": "write", "status": "done"}]),
            call("shell", command="echo asked"),
            call("shell", command="echo asked again"),
            reply("done"),
        ]
    )
    agent = Agent(
        "fold", model=model, store=db, workspace=db.parent / "ws", policy={"shell": "ask"}
    )
    s = agent.start("go")
    for decide in (s.approve, s.deny):
        assert s.wait(30) == "awaiting_approval"
        decide(s.pending_approvals[0].call_id)
    assert s.wait(30) == "done"
    events = list(s.store.iter_events(s.id))
    page = page_rows(events[4:])  # a window: a result without its call
    rows = [[r.seq, r.kind, r.label, r.status] for r in timeline(events[4:])]
    assert [r[:4] for r in page] == rows
    assert {r[1] for r in rows} >= {"model", "tool", "plan", "result", "approval"}
    approvals = [r[2:] for r in rows if r[1] == "approval"]
    me = current_identity()  # who decided: this user
    assert approvals == [
        ["approval asked", "ok"],
        [f"approved by {me}", "info"],
        ["approval asked", "skipped"],
        [f"denied by {me}", "info"],
    ]
    for *_, end_seq, _left in page:  # "Fork here" and "Restore here" on any row are taken
        check_point(s.store, s.id, end_seq, verb="fork")


# -- in a real kernel ------------------------------------------------------------------------------


def test_a_session_displays_itself_as_the_live_widget_in_a_kernel(tmp_path: Path, db: Path) -> None:
    from kernel_harness import Kernels

    store = open_store(db)
    s = HandSession(store, "kern")
    s.step(1)
    kernels = Kernels(tmp_path, db)
    try:
        k = kernels.start()
        msg_id = k.kc.execute("from jupyter_agent import open_session\nopen_session('kern')")
        shown: dict[str, Any] = {}
        opened: dict[str, Any] = {}
        deltas: list[int] = []
        deadline = time.monotonic() + 60
        appended = False
        while time.monotonic() < deadline and (not deltas or deltas[-1] < 10):
            try:
                msg = k.kc.get_iopub_msg(timeout=1)
            except Exception:
                msg = None
            if msg is not None:
                kind, content = msg["msg_type"], msg["content"]
                if kind in ("execute_result", "display_data"):
                    shown = content["data"]
                elif kind == "comm_open" and content["target_name"] == "jupyter.widget":
                    opened = content["data"]["state"]
                elif kind == "comm_msg" and content["data"].get("method") == "custom":
                    deltas.append(content["data"]["content"]["event"]["seq"])
                elif kind == "error":
                    raise AssertionError("\n".join(content["traceback"]))
                elif (
                    kind == "status"
                    and content["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id
                    and not appended
                ):
                    s.step(2)  # this process writes on while the kernel shows the session
                    s.append(EventKind.MESSAGE, {"text": "from another process"}, actor="ann")
                    appended = True
        assert VIEW_MIME in shown and "text/html" in shown and "text/plain" in shown
        assert shown[VIEW_MIME]["model_id"]
        assert opened["session_id"] == "kern" and opened["_esm"].startswith("// jupyter-agent")
        assert [e["seq"] for e in opened["initial_page"]["events"]] == [1, 2, 3, 4, 5]
        assert deltas == [6, 7, 8, 9, 10]
    finally:
        kernels.close()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_the_page_spells_a_cost_as_the_text_views_do() -> None:
    values = [None, 0.0, 0.00004, 0.00006, 0.0123, 0.5, 0.99, 0.99996, 1.0, 12.345678, 250.0]
    script = textwrap.dedent(
        f"""
        import {{ fmtCost }} from {json.dumps(WIDGET_JS.as_uri())};
        console.log(JSON.stringify({json.dumps(values)}.map(fmtCost)));
        """
    )
    rows = [SimpleNamespace(cost_usd=v, steps=1) for v in values]
    assert run_node(script) == [cost_text(row) for row in rows]
    spelled = [cost_text(row) for row in rows]
    assert spelled[2:4] == ["<$0.0001", "$0.0001"] and spelled[7:] == [
        "$1.00",
        "$1.00",
        "$12.35",
        "$250.00",
    ]


def test_a_call_left_open_in_a_session_at_rest_does_not_grow_in_the_chart() -> None:
    """A fork made after a model's answer holds its call open until it runs; paused, the
    chart drew that call growing with the clock."""
    script = textwrap.dedent(
        f"""
        import {{ ganttSpans }} from {json.dumps(WIDGET_JS.as_uri())};
        const rows = [{{ seq: 4, kind: "tool", ts: 10, duration_ms: null, status: "running" }}];
        const end = (live) => ganttSpans(rows, 100, {{ live }}).spans[0].end;
        console.log(JSON.stringify([end(true), end(false)]));
        """
    )
    assert run_node(script) == [100, 10]  # running: until now; at rest: no length


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_the_chart_draws_the_newest_calls_of_a_long_session_only() -> None:
    # it drew a bar for every call at every event: a quick session's page fell seconds behind
    script = textwrap.dedent(
        f"""
        import {{ ganttSpans }} from {json.dumps(WIDGET_JS.as_uri())};
        const rows = [];
        for (let i = 1; i <= 200000; i++)  // more than a spread (...) of arguments can take
          rows.push({{ seq: i, kind: i % 2 ? "model" : "tool", ts: i, duration_ms: 500,
                       status: "ok" }});
        rows.push({{ seq: 200001, kind: "result", ts: 200001, duration_ms: null, status: "ok" }});
        const {{ spans, t0, t1 }} = ganttSpans(rows, 0);
        console.log(JSON.stringify([spans.map((s) => s.row.seq), t0, t1]));
        """
    )
    seqs, t0, t1 = run_node(script)
    assert seqs == list(range(199_701, 200_001))  # the newest 300, oldest first
    assert (t0, t1) == (199_701 - 0.5, 200_000.5)  # a model bar ends at its answer
