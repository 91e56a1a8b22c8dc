"""Watching sessions in the store for views: pages of compact events, summaries, a poller thread.

A view (the notebook widget, later the server's REST handlers) shows a session that may run in
this process or in another one sharing the store, so the store is the only source: ``SessionFeed``
reads it in pages and in small deltas, and ``Watcher`` polls every watched session from one
daemon thread per process (~20 Hz). Nothing here imports IPython or ipywidgets.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from ._events import Event
from ._state import COUNTING, TERMINAL, SessionState, load_state, load_state_lean
from ._store import SessionRow, SqliteStore

PAGE_SIZE = 200
MAX_PAGE = 500
DELTA_BYTES = 1900  # one event's delta message, JSON; leaves room for the comm envelope (2 KB)
DETAIL_CHARS = 100_000  # a string in a full event fetched on demand
_CLIP_STEPS = (1000, 400, 160, 60, 20)
_ON_DEMAND_ONLY = frozenset({"traceback"})


def message_size(content: object) -> int:
    """Bytes of ``content`` as JSON on the wire (jupyter_client's spacing, UTF-8)."""
    return len(json.dumps(content, ensure_ascii=False).encode())


def compact_event(event: Event, *, budget: int = DELTA_BYTES) -> dict[str, Any]:
    """The event as a view's timeline needs it, its message ``{"type": "event", ...}`` at most
    ``budget`` bytes: long strings and lists are cut (``clipped``), tracebacks left out. The
    whole event is fetched on demand (``SessionFeed.detail``)."""
    payload = {k: v for k, v in event.payload.items() if k not in _ON_DEMAND_ONLY}
    base = {"seq": event.seq, "ts": event.ts, "kind": event.kind.value, "actor": event.actor[:80]}
    for limit in _CLIP_STEPS:
        clipped, cut = _clip(payload, limit)
        compact = {**base, "p": clipped, "clipped": cut or len(payload) < len(event.payload)}
        if message_size({"type": "event", "event": compact}) <= budget:
            return compact
    return {**base, "p": {}, "clipped": True}


def full_event(event: Event) -> dict[str, Any]:
    """The whole event for a view's detail pane (strings over ``DETAIL_CHARS`` are cut)."""
    payload, cut = _clip(event.payload, DETAIL_CHARS, max_items=10_000)
    return {
        "seq": event.seq,
        "ts": event.ts,
        "kind": event.kind.value,
        "actor": event.actor,
        "p": payload,
        "clipped": cut,
    }


def _clip(value: Any, limit: int, *, max_items: int | None = None) -> tuple[Any, bool]:
    """``value`` with strings cut to ``limit`` characters and lists to a few items."""
    items = max_items if max_items is not None else max(3, limit // 20)
    if isinstance(value, str):
        return (value, False) if len(value) <= limit else (value[:limit] + "…", True)
    if isinstance(value, list):
        out = [_clip(v, limit, max_items=max_items) for v in value[:items]]
        return [v for v, _ in out], len(value) > items or any(c for _, c in out)
    if isinstance(value, dict):
        pairs = {k: _clip(v, limit, max_items=max_items) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(c for _, c in pairs.values())
    return value, False


class SessionFeed:
    """One session as a view reads it: pages, events after a seq, and its summary values.

    Keeps the session's state folded incrementally (from the newest snapshot, without the
    conversation), so opening a long session and following it stay cheap; the fold is made on
    first need, so a feed that only serves pages of events (a REST request) never makes it.
    """

    def __init__(self, store: SqliteStore, session_id: str) -> None:
        self.store, self.session_id = store, session_id
        self._folded: SessionState | None = None

    @property
    def _state(self) -> SessionState:
        if self._folded is None:
            self._folded = load_state_lean(self.store, self.session_id)
        return self._folded

    @_state.setter
    def _state(self, state: SessionState) -> None:
        self._folded = state

    @property
    def last_seq(self) -> int:
        return self._state.last_seq

    def newest_page(self, limit: int = PAGE_SIZE, *, folded: bool = False) -> dict[str, Any]:
        """The newest ``limit`` events, compact, and whether older ones exist. With ``folded``,
        the newest this feed has folded: the first page of a view that gets the rest from
        ``new_events``, each event exactly once."""
        top = self.last_seq if folded else self.store.get_session(self.session_id).last_seq
        return self.page(before=top + 1, limit=limit)

    def page(self, *, before: int, limit: int = PAGE_SIZE) -> dict[str, Any]:
        """Up to ``limit`` compact events with seq < ``before``, oldest first."""
        limit = max(1, min(int(limit), MAX_PAGE))
        first = max(0, before - 1 - limit)
        events = [compact_event(e) for e in self._events(after=first, until=before - 1)]
        start = events[0]["seq"] if events else before
        older = next(self._events(after=max(0, start - 2), until=start - 1), None)
        return {"events": events, "has_more": older is not None}

    def after(self, seq: int, *, limit: int = PAGE_SIZE) -> dict[str, Any]:
        """What a view that has everything up to ``seq`` is missing: the events after it, or,
        if more than ``limit`` are missing, the newest page to start again from (``reset``)."""
        events = list(self._events(after=seq, until=seq + limit + 1))
        if len(events) > limit:
            return {"mode": "reset", **self.newest_page(limit)}
        return {"mode": "after", "after": seq, "events": [compact_event(e) for e in events]}

    def detail(self, seqs: list[int]) -> list[dict[str, Any]]:
        """Whole events by seq (at most 10), for a view's expanded row."""
        wanted = sorted({int(s) for s in seqs})[:10]
        found: list[dict[str, Any]] = []
        for seq in wanted:
            found.extend(full_event(e) for e in self._events(after=seq - 1, until=seq))
        return found

    def new_events(self, *, limit: int = MAX_PAGE) -> list[Event]:
        """Events appended since the last call (one indexed query when there are none)."""
        events = list(self._events(after=self._state.last_seq, until=self.last_seq + limit))
        for event in events:
            self._apply(event)
        return events

    def summary(self) -> dict[str, Any]:
        """The values a view shows beside its timeline: header totals, plan, approvals."""
        st = self._state
        row = with_totals(self.store.get_session(self.session_id), st)
        header = {
            "name": row.name or st.name,
            "status": row.status,
            "model": row.model or st.model,
            "owner": row.owner or st.owner,
            "goal": row.goal or st.goal,
            "started_at": row.created_at,
            "updated_at": row.updated_at,
            "elapsed_s": elapsed_s(row.status, row.created_at, row.updated_at),
            "terminal": row.status in TERMINAL,
            "steps": row.steps,
            "tool_calls": row.tool_calls,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cached_tokens": row.cached_tokens,
            "tokens": row.input_tokens + row.output_tokens,
            "cost_usd": known_cost(row),
            "last_seq": row.last_seq,
            "parent_id": row.parent_id,
            "fork_seq": row.fork_seq,
            "budgets": [{"kind": "steps", "used": row.steps, "limit": st.max_steps}]
            if st.max_steps
            else [],
        }
        plan = [{"step": i.step, "status": i.status} for i in st.plan]
        approvals = [
            {
                "call_id": a.call_id,
                "name": a.name,
                "arguments": _clip(_text(a.arguments), 300)[0],
                "reason": a.reason,
                "seq": a.seq,
            }
            for a in st.approvals.values()
            if row.status not in TERMINAL  # a stopped session's calls wait for nobody
        ]
        return {"header": header, "plan": plan, "approvals": approvals}

    def _events(self, *, after: int, until: int) -> Iterator[Event]:
        if until <= after:
            return iter(())
        return self.store.iter_events(self.session_id, after=after, until=until)

    def _apply(self, event: Event) -> None:
        store, sid = self.store, self.session_id
        try:
            self._state.apply(event, rewind=lambda seq: load_state(store, sid, at=seq))
        except ValueError:  # not the next event of this fold: fold again from the store
            self._state = load_state_lean(store, sid)
        self._state.messages.clear()  # views never need the conversation


def with_totals(row: SessionRow, st: SessionState) -> SessionRow:
    """The session's row with the totals of ``st`` if that fold has every event the row
    counts: a running session's row may lag them by up to SESSION_ROW_EVERY_S."""
    if st.last_seq < row.last_seq:
        return row
    return dataclasses.replace(
        row,
        steps=st.steps,
        tool_calls=st.tool_calls,
        input_tokens=st.input_tokens,
        output_tokens=st.output_tokens,
        cached_tokens=st.cached_tokens,
        cost_usd=st.cost_usd if st.cost_known else None,
    )


def known_cost(row: SessionRow) -> float | None:
    """The session's cost in USD, ``None`` when a response's cost was unknown (none yet: 0)."""
    return 0.0 if row.cost_usd is None and not row.steps else row.cost_usd


def cost_text(row: SessionRow) -> str:
    """The session's cost as every view shows it: ``$0.0123`` (under a dollar), ``$12.34``,
    ``<$0.0001`` (spent, but less), or ``unknown`` (the widget and the lab's sidebar spell it
    so too)."""
    usd = known_cost(row)
    if usd is None:
        return "unknown"
    if 0 < usd < 0.00005:
        return "<$0.0001"
    return f"${usd:.4f}" if round(usd, 4) < 1 else f"${usd:.2f}"


def elapsed_s(status: str, started: float, updated: float) -> float:
    """Seconds from the start to now while the session works or waits for a person, to its
    last change while it rests (as every view counts it)."""
    end = time.time() if status in COUNTING else updated
    return max(0.0, end - started)


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class Poller(Protocol):
    def poll(self) -> bool:
        """Look for news and send it; ``False`` when done (the watcher forgets it)."""
        ...


class Watcher:
    """One daemon thread per process calling ``poll()`` on every live view at ~20 Hz.

    The thread starts with the first view and ends when the last one goes, so a process
    that shows no session runs no thread. Pollers handle their own errors: the thread never
    prints (output from a thread lands in whichever cell ran last).
    """

    def __init__(self, *, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._pollers: list[Poller] = []
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None

    def add(self, poller: Poller) -> None:
        with self._lock:
            if poller not in self._pollers:
                self._pollers.append(poller)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="jupyter-agent-watcher", daemon=True
                )
                self._thread.start()

    def remove(self, poller: Poller) -> None:
        with self._lock:
            if poller in self._pollers:
                self._pollers.remove(poller)

    @property
    def watching(self) -> int:
        with self._lock:
            return len(self._pollers)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _run(self) -> None:
        while True:
            with self._lock:
                pollers = list(self._pollers)
                if not pollers:
                    self._thread = None
                    return
            started = time.monotonic()
            for poller in pollers:
                try:
                    keep = poller.poll()
                except Exception:  # a poller's bug must not stop the others, nor print
                    keep = False
                if not keep:
                    self.remove(poller)
            time.sleep(max(0.005, self.interval_s - (time.monotonic() - started)))


watcher = Watcher()
