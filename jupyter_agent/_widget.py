"""The live session widget: an anywidget view of one session, fed from the store in small deltas.

Traffic, kernel to page (custom messages; ``req`` echoes the request being answered):

- ``{"type": "event", "event": {seq, ts, kind, actor, p, clipped}}``: one per new event, at most
  2 KB (long fields cut; the whole event comes on demand);
- ``{"type": "events", "mode": "after" | "reset", "events", ...}``: the answer to ``hello``;
- ``{"type": "page", "before", "events", "has_more"}``, ``{"type": "detail", "events"}``,
  ``{"type": "control", "ok", "error" | "notice"}``.

Page to kernel: ``hello`` (``last_seq``), ``page`` (``before``, ``limit``), ``detail``
(``seqs``), ``control`` (``action``: pause, resume, stop, tell, approve, deny, fork, restore).

Values (``header``, ``plan``, ``approvals``, ``live``, ``error``, ``notice``) are synced traits,
coalesced: latest wins, at most 20 updates a second, the final state always sent. The newest
page of events rides in the opening state (``initial_page``), so a widget shows its history at
once even if the next cell already keeps the kernel busy (messages from the page wait for it).
"""

from __future__ import annotations

import pathlib
import threading
import time
from typing import TYPE_CHECKING, Any

import anywidget
import comm
import traitlets

from ._errors import JupyterAgentError
from ._give_way import current_kernel
from ._live import PartialText, live_text
from ._snapshot import snapshot_html
from ._watch import PAGE_SIZE, SessionFeed, Watcher, compact_event, watcher

if TYPE_CHECKING:
    from ._session import Session

_STATIC = pathlib.Path(__file__).parent / "static"
LIVE_CHARS = 2000  # the tail of a streaming answer that the widget shows
MIN_INTERVAL_S = 0.05  # value updates: at most 20 a second per widget
_CONTROLS = ("pause", "resume", "stop", "tell", "approve", "deny", "fork", "restore")


class SessionWidget(anywidget.AnyWidget):
    """A session's live view: header, timeline, Gantt strip, plan, approvals and controls.

    Example:
        >>> s = Agent("demo", model="demo:loop?steps=5").start("go")
        >>> s.widget()        # or just ``s`` as the last line of a cell
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    session_id = traitlets.Unicode("").tag(sync=True)
    header = traitlets.Dict().tag(sync=True)
    plan: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    approvals: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    live = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    initial_page = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        session: Session,
        *,
        watch: Watcher = watcher,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self._session = session
        self._feed = SessionFeed(session.store, session.id)
        self._lock = threading.RLock()
        self._pending: dict[str, Any] = {}
        self._min_interval_s = min_interval_s
        self._last_flush = 0.0
        self._live_value: PartialText | None = session.partial_text
        self._live_dirty = False
        self._watcher: Watcher | None = None
        self._unsubscribe_live: Any = None
        self.forks: list[Session] = []  # sessions forked from this widget, newest last
        super().__init__(
            session_id=session.id,
            initial_page=self._feed.newest_page(PAGE_SIZE, folded=True),
            live=_live(self._live_value),
            **self._feed.summary(),
        )
        self.on_msg(self._on_custom)
        if self.has_frontend:
            self._unsubscribe_live = live_text.subscribe(session.id, self._on_live)
            self._watcher = watch
            watch.add(self)

    @property
    def session(self) -> Session:
        return self._session

    @property
    def has_frontend(self) -> bool:
        """False outside a kernel (the comm goes nowhere): then nothing is watched."""
        return self.comm is not None and not isinstance(self.comm, comm.DummyComm)

    def close(self) -> None:
        """Stop watching the session and close the comm (the views go away)."""
        watching = getattr(self, "_watcher", None)
        if watching is not None:
            watching.remove(self)
            self._watcher = None
        unsubscribe = getattr(self, "_unsubscribe_live", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe_live = None
        _forget(self)
        lock = getattr(self, "_lock", None)
        if lock is None:
            super().close()
            return
        with lock:  # not in the middle of a poll on the watcher's thread
            super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data["text/plain"] = repr(self._session)
        data["text/html"] = snapshot_html(self._session.store, self._session.id)
        return data, metadata

    # -- following the store (on the watcher's thread) ---------------------------------------

    def poll(self) -> bool:
        """Send the session's new events as deltas and flush coalesced values."""
        if self.comm is None:
            return False
        with self._lock:
            try:
                events = self._feed.new_events()
                for event in events:
                    self.send({"type": "event", "event": compact_event(event)})
                if events:
                    self._pending.update(self._feed.summary())
            except Exception as exc:  # shown in the widget; a thread must never print
                self._pending["error"] = f"cannot follow session {self.session_id}: {one_line(exc)}"
            if self._live_dirty:
                self._live_dirty = False
                self._pending["live"] = _live(self._live_value)
            self._flush()
        return self.comm is not None

    def _on_live(self, value: PartialText | None) -> None:
        self._live_value, self._live_dirty = value, True  # sent by the next poll

    def _flush(self) -> None:
        now = time.monotonic()
        if not self._pending or now - self._last_flush < self._min_interval_s:
            return
        pending, self._pending = self._pending, {}
        changed = {k: v for k, v in pending.items() if getattr(self, k) != v}
        if changed and self.comm is not None:
            with self.hold_sync():
                for name, value in changed.items():
                    setattr(self, name, value)
            self._last_flush = time.monotonic()  # the next update goes out 50 ms after this one

    # -- requests from the page (on the kernel's shell thread) -------------------------------

    def _on_custom(self, _widget: object, content: object, _buffers: object) -> None:
        if not isinstance(content, dict):
            return
        kind = str(content.get("type", ""))
        try:
            reply = self._answer(kind, content)
        except Exception as exc:  # a person sees one line, never a traceback
            reply = {"type": kind, "ok": False, "error": one_line(exc)}
        reply["req"] = content.get("req")
        with self._lock:
            if self.comm is not None:
                self.send(reply)

    def _answer(self, kind: str, content: dict[str, Any]) -> dict[str, Any]:
        feed = self._feed
        if kind == "hello":
            return {"type": "events", **feed.after(int(content.get("last_seq") or 0))}
        if kind == "page":
            before = int(content["before"])
            limit = int(content.get("limit") or PAGE_SIZE)
            return {"type": "page", "before": before, **feed.page(before=before, limit=limit)}
        if kind == "detail":
            return {"type": "detail", "events": feed.detail(list(content.get("seqs") or []))}
        if kind == "control":
            return self._control(content)
        raise ValueError(f"unknown request {kind!r}")

    def _control(self, content: dict[str, Any]) -> dict[str, Any]:
        action = str(content.get("action", ""))
        try:
            notice = self._act(action, content)
        except Exception as exc:
            error = one_line(exc)
            self._set_value(error=error, notice="")
            return {"type": "control", "action": action, "ok": False, "error": error}
        self._set_value(error="", notice=notice)
        return {"type": "control", "action": action, "ok": True, "notice": notice}

    def _act(self, action: str, content: dict[str, Any]) -> str:
        s = self._session
        if action not in _CONTROLS:
            raise ValueError(f"unknown control {action!r} (one of: {', '.join(_CONTROLS)})")
        if action in ("approve", "deny"):
            call_id = str(content.get("call_id") or "")
            if not call_id:
                raise ValueError(f"{action} needs the call_id of a waiting call")
            if action == "approve":
                s.approve(call_id)
            else:
                s.deny(call_id, reason=str(content.get("reason") or ""))
            return f"{action}d {call_id}"
        if action == "tell":
            s.tell(str(content.get("text") or ""))
            return "message sent"
        if action in ("fork", "restore"):
            return self._branch(action, content)
        getattr(s, action)()
        return f"{action} requested"

    def _branch(self, action: str, content: dict[str, Any]) -> str:
        seq = content.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"select a row in the timeline first, then {action} there")
        if action == "restore":
            if self._session.restore(at=seq):
                return f"restored to event {seq}"
            return f"restore to event {seq} sent to the process that runs the session"
        forked = self._session.fork(at=seq)
        self.forks.append(forked)
        return f"forked after event {seq} as session {forked.id}: open_session({forked.id!r})"

    def _set_value(self, **values: Any) -> None:
        with self._lock:
            self._pending.update(values)
            if self._watcher is None:  # nothing polls: send now
                self._last_flush = 0.0
                self._flush()


def _live(value: PartialText | None) -> dict[str, Any]:
    if value is None:
        return {}
    text = value.text if len(value.text) <= LIVE_CHARS else "…" + value.text[-LIVE_CHARS:]
    return {"step": value.step, "text": text}


def one_line(exc: BaseException) -> str:
    """A control's error as a person reads it: one line, never a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if not isinstance(exc, JupyterAgentError | ValueError | TypeError | NotImplementedError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:299] + "…"


# -- one widget per session per process --------------------------------------------------------

_widgets: dict[tuple[str, str], SessionWidget] = {}
_widgets_lock = threading.RLock()  # re-entrant: a widget may be collected (and closed) under it


def widget_for(session: Session) -> SessionWidget:
    """The session's widget, shared by every display of it in this process."""
    key = (str(session.store.path), session.id)
    with _widgets_lock:
        found = _widgets.get(key)
        if found is not None and found.comm is not None:
            found._session = session  # the newest handle (it may be able to resume)
            return found
    made = SessionWidget(session)
    if made.has_frontend:
        with _widgets_lock:
            _widgets[key] = made
    return made


def _forget(widget: SessionWidget) -> None:
    session = getattr(widget, "_session", None)
    if session is None:
        return
    key = (str(session.store.path), session.id)
    with _widgets_lock:
        if _widgets.get(key) is widget:
            del _widgets[key]


def session_mimebundle(session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a session displays as: the live widget in a kernel, and always a static snapshot
    (``text/html``) that nbviewer, GitHub and a kernel-less notebook show."""
    if current_kernel() is not None:
        bundle = widget_for(session)._repr_mimebundle_()
        if bundle is not None:
            return bundle
    return {
        "text/plain": repr(session),
        "text/html": snapshot_html(session.store, session.id),
    }, {}
