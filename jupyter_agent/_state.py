"""A session's state is the fold of its events: ``SessionState.apply`` is the only way it changes.

The live engine applies each event as it records it; a resumed session loads the newest snapshot
and applies the tail. Both must arrive at the same state, which tests check event for event.
The conversation (``messages``) is not part of a snapshot, so a snapshot stays small however
long the session runs: it is stored beside it in chunks, each holding only the messages said
since the one before (``Conversation``), and rebuilt from the events after the newest chunk.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import gc
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, overload

from ._events import GENESIS_HASH, Event, EventKind
from ._models._base import Message, ToolCallRequest, new_message, new_tool_call
from ._tools._context import PlanItem

TERMINAL = frozenset({"done", "failed", "stopped"})
# the statuses whose elapsed clock runs: the session works or waits for a person, not rests
# (widget.js has the same set)
COUNTING = frozenset({"running", "sleeping", "awaiting_approval"})
MESSAGE_KINDS = (
    EventKind.SESSION_STARTED,
    EventKind.MESSAGE,
    EventKind.MODEL_RESPONSE,
    EventKind.TOOL_RESULT,
)
# What a restore keeps from the branch it leaves: money and tokens spent stay spent.
SPENT = ("input_tokens", "output_tokens", "cached_tokens", "cost_usd", "cost_known")
# What a restore keeps of the session itself: a fork restored to before its fork point is
# still the fork (its own name and workspace), not its parent.
IDENTITY = ("id", "name", "owner", "workspace")

Rewind = Callable[[int], "SessionState"]  # seq -> the session's state right after that event


class ConversationView(Sequence[Message]):
    """The first ``n`` messages of a growing list: an O(1), unchanging view for a model request.

    The conversation only grows by appending, so a request keeps seeing exactly what was sent
    even after the session moves on, without copying the history at every step.
    """

    __slots__ = ("_items", "_n")

    def __init__(self, items: list[Message]) -> None:
        self._items, self._n = items, len(items)

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Message: ...

    @overload
    def __getitem__(self, i: slice) -> list[Message]: ...

    def __getitem__(self, i: int | slice) -> Message | list[Message]:
        if isinstance(i, slice):
            return self._items[: self._n][i]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("message index out of range")
        return self._items[i]

    def __iter__(self) -> Iterator[Message]:
        items = self._items
        for k in range(self._n):
            yield items[k]


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A tool call whose intent is recorded and whose result is not (yet)."""

    call_id: str
    name: str
    arguments: Any
    effect: str
    seq: int


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A call waiting for a person: ``approve`` runs it (again), ``deny`` skips it."""

    call_id: str
    name: str
    arguments: Any
    reason: str
    seq: int


@dataclass
class SessionState:
    """Everything the engine needs to continue a session, derived from its events."""

    id: str
    name: str = ""
    model: str = ""
    goal: str = ""
    instructions: str = ""
    workspace: str = ""
    tools: list[str] = field(default_factory=list)
    max_steps: int = 0
    policy: dict[str, str] = field(default_factory=dict)
    owner: str = ""
    status: str = "created"
    steps: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    plan: list[PlanItem] = field(default_factory=list)
    open_calls: dict[str, ToolCallRecord] = field(default_factory=dict)
    approvals: dict[str, ApprovalRequest] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)
    fired_timers: list[str] = field(default_factory=list)
    result: str | None = None
    started_at: float = 0.0
    schedule: dict[str, Any] | None = None
    worker: bool = False  # its agent was made with worker=True: a resume runs it there too
    model_object: bool = False  # its model had options its name does not carry (see Agent)
    ticks_fired: int = 0
    answered: bool = False  # the newest model turn was a final answer (no tool calls)
    error: dict[str, Any] | None = None
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    messages: list[Message] = field(default_factory=lambda: Conversation())

    @classmethod
    def fold(cls, session_id: str, events: Iterable[Event]) -> SessionState:
        """The state after ``events`` (all of a session's events from seq 1), from nothing."""
        return cls._fold(session_id, events, {})

    @classmethod
    def _fold(
        cls, session_id: str, events: Iterable[Event], states: dict[int, SessionState]
    ) -> SessionState:
        """``fold``, sharing ``states`` (the state after each restore target folded so far)
        with the folds its restores need: each point is folded once, however many restores
        go back and forth over it."""
        state = cls(id=session_id)
        seen: list[Event] = []

        def rewind(seq: int) -> SessionState:
            if seq not in states:
                states[seq] = cls._fold(session_id, seen[:seq], states)
            return copy.deepcopy(states[seq])  # the restored state goes on changing

        for event in events:
            state.apply(event, rewind=rewind)
            seen.append(event)
        return state

    def apply(
        self,
        event: Event,
        *,
        rewind: Rewind | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Move on by one event. A ``restore`` needs ``rewind``: the state it goes back to.

        ``payload`` spares decoding ``event.payload_json`` when the caller holds it already
        (the engine, which just encoded it); it must be equal to what the JSON decodes to."""
        if event.seq != self.last_seq + 1:
            raise ValueError(f"event {event.seq} of {self.id} follows {self.last_seq}")
        if payload is None:
            payload = event.payload
        if event.kind is EventKind.RESTORE:
            if rewind is None:
                raise ValueError(f"event {event.seq} of {self.id} is a restore: give rewind=")
            self._restore(rewind(payload["to_seq"]))
        self.apply_to_messages(event, payload)
        self._apply_rest(event, payload)
        self.last_seq, self.last_hash = event.seq, event.hash

    def _restore(self, earlier: SessionState) -> None:
        """Become ``earlier`` (the state at the restore point), keeping what was spent since
        and who the session is."""
        keep = {name: getattr(self, name) for name in (*IDENTITY, *SPENT)}
        for f in fields(self):
            setattr(self, f.name, getattr(earlier, f.name))
        for name, value in keep.items():
            setattr(self, name, value)

    def apply_to_messages(self, event: Event, payload: Mapping[str, Any] | None = None) -> None:
        """The part of ``apply`` that builds the conversation (used when loading a snapshot)."""
        if event.kind in MESSAGE_KINDS:
            p = event.payload if payload is None else payload
            _say(self.messages, event.kind.value, event.actor, p)

    def _apply_rest(self, event: Event, p: Mapping[str, Any]) -> None:
        kind = event.kind
        # the kinds of every step first: this chain runs for each event folded
        if kind is EventKind.MODEL_RESPONSE:
            self.steps += 1
            self.answered = not p["tool_calls"]
            usage = p["usage"]
            self.input_tokens += usage.get("input_tokens", 0)
            self.output_tokens += usage.get("output_tokens", 0)
            self.cached_tokens += usage.get("cached_tokens", 0)
            if usage.get("cost_usd") is None:
                self.cost_known = False
            else:
                self.cost_usd += usage["cost_usd"]
        elif kind is EventKind.TOOL_CALL:
            self.tool_calls += 1
            self.open_calls[p["call_id"]] = ToolCallRecord(
                p["call_id"], p["name"], p["arguments"], p["effect"], event.seq
            )
        elif kind is EventKind.TOOL_RESULT:
            call_id = p["call_id"]
            self.open_calls.pop(call_id, None)
            if "effect" in p:  # its own intent (recorded with it): a call counted here
                self.tool_calls += 1
            self.approvals.pop(call_id, None)
            if self.fired_timers or self.timers:  # the call is over: so are its timers, and a
                self._forget_timers_of(call_id)  # later call given the same id sets its own
        elif kind is EventKind.MODEL_REQUEST:
            pass  # what it says is in the model_response after it
        elif kind is EventKind.SESSION_STARTED:
            self.name, self.model, self.goal = p["name"], p["model"], p["goal"]
            self.instructions = p.get("instructions", "")
            self.workspace, self.tools = p["workspace"], list(p["tools"])
            self.max_steps, self.owner = p.get("max_steps", 0), p.get("owner", event.actor)
            self.policy = dict(p.get("policy") or {})
            self.status = "running"
            self.started_at, self.schedule = event.ts, p.get("schedule")
            self.worker = bool(p.get("worker", False))
            self.model_object = bool(p.get("model_object", False))
        elif kind is EventKind.MESSAGE and event.actor != "schedule":
            self.answered = False  # a person spoke: the model answers before the next tick
        elif kind is EventKind.APPROVAL_REQUESTED:
            call = self.open_calls[p["call_id"]]
            self.approvals[call.call_id] = ApprovalRequest(
                call.call_id, call.name, call.arguments, p["reason"], event.seq
            )
        elif kind is EventKind.APPROVAL_DECIDED:
            self.approvals.pop(p["call_id"], None)
        elif kind is EventKind.PLAN_UPDATED:
            self.plan = [PlanItem(i["step"], i["status"]) for i in p["plan"]]
        elif kind is EventKind.TIMER_SET:
            self.timers[p["timer_id"]] = p["wake_at"]
        elif kind is EventKind.TIMER_FIRED:
            self.timers.pop(p["timer_id"], None)
            if "tick" not in p:
                self.fired_timers.append(p["timer_id"])
            if "tick" in p:
                self.ticks_fired, self.answered = p["tick"], False
        elif kind is EventKind.STATUS_CHANGED:
            self.status = p["status"]
        elif kind is EventKind.SESSION_FINISHED:
            self.result, self.status = p["result"], "done"
        elif kind is EventKind.SESSION_FAILED:
            self.error, self.status = p["error"], "failed"
        elif kind is EventKind.FORK:
            self.id, self.name, self.owner = event.session_id, p["name"], event.actor
            self.workspace = p.get("workspace", self.workspace)
            self.status, self.result, self.error = "paused", None, None
        elif kind is EventKind.RESTORE:
            self.status, self.result, self.error = "paused", None, None

    def _forget_timers_of(self, call_id: str) -> None:
        """Drop the timers of a call (``timer-<call>``, ``timer-<call>#<n>``)."""
        own, numbered = f"timer-{call_id}", f"timer-{call_id}#"
        mine = [t for t in (*self.timers, *self.fired_timers) if t == own or t.startswith(numbered)]
        for t in mine:
            self.timers.pop(t, None)
        if mine:
            self.fired_timers = [t for t in self.fired_timers if t not in mine]

    # -- snapshots ---------------------------------------------------------------------------

    def to_snapshot(self) -> str:
        """Everything but the conversation (stored in chunks beside it), as JSON."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "messages"}
        data["plan"] = [asdict(i) for i in self.plan]
        data["open_calls"] = {k: asdict(v) for k, v in self.open_calls.items()}
        data["approvals"] = {k: asdict(v) for k, v in self.approvals.items()}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_snapshot(cls, text: str) -> SessionState:
        data = json.loads(text)
        data["plan"] = [PlanItem(**i) for i in data["plan"]]
        data["open_calls"] = {k: ToolCallRecord(**v) for k, v in data["open_calls"].items()}
        data["approvals"] = {k: ApprovalRequest(**v) for k, v in data["approvals"].items()}
        return cls(**data)

    def comparable(self) -> dict[str, Any]:
        """A plain-data view for equality checks between two ways of reaching a state."""
        return asdict(self)


def session_totals(s: SessionState) -> dict[str, Any]:
    """The session row's columns that follow from its state: its id and status, then its
    position and totals (which a running engine writes at most every ``SESSION_ROW_EVERY_S``)."""
    return {
        "id": s.id,
        "status": s.status,
        "last_seq": s.last_seq,
        "last_hash": s.last_hash,
        "steps": s.steps,
        "tool_calls": s.tool_calls,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "cached_tokens": s.cached_tokens,
        "cost_usd": s.cost_usd if s.cost_known else None,
    }


def load_state(store: Any, session_id: str, *, at: int | None = None) -> SessionState:
    """Rebuild a session's state from the store: newest snapshot + the events after it.

    With ``at``, the state right after event ``at`` (what a restore or a fork goes back to).
    Costs O(events since the snapshot) for the state, plus reading the conversation's chunks
    (or, with none, one pass over its events) to rebuild ``messages``; in a process that
    rebuilt it before, only the newer events (see ``_Conversation``). A fork reads its
    parent's events and chunks up to the fork point.
    """

    return load_state_from_snapshot(store, session_id, at=at)[0]


def load_state_from_snapshot(
    store: Any, session_id: str, *, at: int | None = None
) -> tuple[SessionState, int]:
    """``load_state``, and the seq of the snapshot it started from (0: none; a fork's may be
    its parent's)."""

    def rewind(seq: int) -> SessionState:
        return load_state(store, session_id, at=seq)

    snap = store.latest_snapshot(session_id, at_most=at)
    if snap is None:
        return SessionState.fold(session_id, store.iter_events(session_id, until=at)), 0
    seq, text = snap
    state = SessionState.from_snapshot(text)
    state.id = session_id  # a fork starts from its parent's snapshots
    state.messages = _conversation(store, session_id, seq)
    for event in store.iter_events(session_id, after=seq, until=at):
        state.apply(event, rewind=rewind)
    return state, seq


def load_state_lean(store: Any, session_id: str) -> SessionState:
    """The session's state without its conversation (``messages`` stays empty): the newest
    snapshot and the events after it. For views and totals, which never need what was said;
    no conversation is rebuilt or kept."""
    snap = store.latest_snapshot(session_id)
    state = SessionState(id=session_id) if snap is None else SessionState.from_snapshot(snap[1])
    state.id = session_id  # a fork starts from its parent's snapshots
    try:
        for event in store.iter_events(session_id, after=state.last_seq):
            state.apply(event, rewind=lambda seq: load_state(store, session_id, at=seq))
            state.messages.clear()
    except ValueError:  # a log this quick fold does not follow: the canonical one does
        state = load_state(store, session_id)
        state.messages.clear()
    return state


def _say(messages: list[Message], kind: str, actor: str, p: Mapping[str, Any]) -> None:
    """Add what an event of ``kind`` says to the conversation (nothing for other kinds)."""
    if kind == "tool_result":
        messages.append(
            new_message("tool", p["output"], (), p["call_id"], p["name"], p["is_error"])
        )
    elif kind == "model_response":
        calls = tuple([new_tool_call(c["id"], c["name"], c["arguments"]) for c in p["tool_calls"]])
        messages.append(new_message("assistant", p["text"], calls, None, None, False))
    elif kind == "message":
        messages.append(Message("user", p["text"], (), None, actor))
    elif kind == "session_started":
        if p.get("instructions"):
            messages.append(Message("system", p["instructions"]))
        messages.append(Message("user", p["goal"]))


class Conversation(list[Message]):
    """A session's messages, and which stored conversation chunk their beginning is.

    ``chunk`` is ``(owner, seq, n)``: the first ``n`` messages are the conversation after event
    ``seq`` of session ``owner`` as stored with its snapshot (``None``: not known). The engine
    then stores only the messages said since, at its next snapshot. The conversation only grows
    by appending (a restore replaces the whole list), so that stays true."""

    __slots__ = ("chunk",)

    def __init__(self, items: Iterable[Message] = (), chunk: Chunk | None = None) -> None:
        super().__init__(items)
        self.chunk = chunk


Chunk = tuple[str, int, int]  # (owner, seq, n): see Conversation


def chunk_of(messages: list[Message]) -> Chunk | None:
    """Where ``messages`` begin in the store (see ``Conversation``), if known."""
    chunk: Chunk | None = getattr(messages, "chunk", None)
    return chunk if chunk is not None and chunk[2] <= len(messages) else None


def encode_messages(messages: Iterable[Message]) -> str:
    """Messages as a compact JSON array of rows (a conversation chunk): each row the fields of
    ``Message`` in order, trailing defaults left out."""
    rows: list[list[Any]] = []
    for m in messages:
        calls = [[c.id, c.name, c.arguments] for c in m.tool_calls]
        row: list[Any] = [m.role, m.content, calls, m.tool_call_id, m.name, m.is_error]
        while len(row) > 2 and row[-1] == _ROW_DEFAULTS[len(row) - 1]:
            row.pop()
        rows.append(row)
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. an undecodable file name): escape it
        text = json.dumps(rows, separators=(",", ":"))
    return text


_ROW_DEFAULTS: tuple[Any, ...] = ("", "", [], None, None, False)


def decode_messages(text: str, into: list[Message]) -> None:
    """Append the messages of a chunk (``encode_messages``) to ``into``."""
    call, message, append = ToolCallRequest, Message, into.append
    for row in json.loads(text):
        if len(row) > 2:
            row[2] = tuple([call(*c) for c in row[2]]) if row[2] else ()
        append(message(*row))


# The conversation as a persistent stack: each message points at the conversation before it,
# so the conversation after any earlier event stays at hand however later events change it.
_Said = tuple[Message, "_Said"] | None


@dataclass(frozen=True, slots=True)
class _Conversation:
    """The conversation after each message or restore event from ``floor`` up to ``upto``
    (``heads[i]`` after event ``seqs[i]``). What the log says never changes (it is
    append-only), so a process rebuilds a session's conversation once and then reads only newer
    events: a resume loads the state twice; ``Session.state``, restores and views load it
    often. ``floor`` is the stored chunk it started from (0: from the first event), ``chunk``
    that chunk (see ``Conversation``), ``restores`` the restore events after it."""

    upto: int
    seqs: tuple[int, ...]
    heads: tuple[_Said, ...]
    floor: int = 0
    chunk: Chunk | None = None
    restores: tuple[int, ...] = ()

    def until(self, upto: int) -> tuple[list[int], list[_Said]]:
        """``seqs`` and ``heads`` for the events up to ``upto`` (``floor <= upto``; at most
        ``self.upto``)."""
        if upto >= self.upto:
            return list(self.seqs), list(self.heads)
        i = bisect.bisect_right(self.seqs, upto)
        return list(self.seqs[:i]), list(self.heads[:i])

    def chunk_until(self, upto: int) -> Chunk | None:
        """``chunk``, if no restore came after it up to ``upto``."""
        return None if any(r <= upto for r in self.restores) else self.chunk


def _head(seqs: list[int], heads: list[_Said], seq: int) -> _Said:
    """The conversation right after event ``seq``: as the last event at or before it left it."""
    i = bisect.bisect_right(seqs, seq)
    return heads[i - 1] if i else None


# json.loads without its per-call checks (~2x quicker); typeshed does not list the attribute
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _decode(payload: str) -> dict[str, Any]:
    """A payload from the store (canonical JSON: no whitespace around it)."""
    try:
        value: dict[str, Any] = _SCAN(payload, 0)[0]
    except StopIteration:  # not JSON at all: let json say what is wrong
        value = json.loads(payload)
    return value


def _messages(head: _Said, chunk: Chunk | None = None) -> Conversation:
    out = Conversation(chunk=chunk)
    while head is not None:
        message, head = head
        out.append(message)
    out.reverse()
    return out


def _stack(messages: Iterable[Message]) -> _Said:
    head: _Said = None
    for message in messages:
        head = (message, head)
    return head


_CONVERSATIONS: weakref.WeakKeyDictionary[Any, dict[str, _Conversation]] = (
    weakref.WeakKeyDictionary()
)
_CONVERSATIONS_LOCK = threading.Lock()
_KEEP_CONVERSATIONS = 32  # sessions per store


def _parents_conversation(
    store: Any, memo: dict[str, _Conversation], session_id: str
) -> _Conversation | None:
    """For a fork: what its parent said up to the fork point (said in the fork too)."""
    lineage = store.lineage(session_id) if hasattr(store, "lineage") else []
    if len(lineage) < 2 or lineage[-2][1] is None:
        return None
    parent, fork_seq = lineage[-2]
    known = memo.get(parent)
    if known is None or known.upto <= fork_seq:
        return known
    if fork_seq < known.floor:
        return None
    seqs, heads = known.until(fork_seq)
    return _Conversation(
        fork_seq, tuple(seqs), tuple(heads), known.floor, known.chunk_until(fork_seq)
    )


def _stored(store: Any, session_id: str, upto: int) -> _Conversation | None:
    """The conversation as of the newest chunk stored at or before ``upto``, if any."""
    found = store.latest_conversation(session_id, at_most=upto)
    if found is None:
        return None
    owner, seq, chunks = found
    said: list[Message] = []
    for text in chunks:
        decode_messages(text, said)
    return _Conversation(seq, (seq,), (_stack(said),), seq, (owner, seq, len(said)))


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Hold off the cyclic garbage collector while tens of thousands of objects are made that
    all stay alive: each generation-2 pass would walk them all again (it doubles the time of
    rebuilding a long conversation). Nothing made here is cyclic garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _conversation(store: Any, session_id: str, upto: int) -> Conversation:
    """The conversation from its events up to ``upto``. A restore makes it what it was right
    after the restore's target, whatever happened in between (even a restore back, undone).

    Starts from what this process rebuilt before, else from the newest stored chunk, else
    from the first event."""
    with _no_gc():
        return _rebuild(store, session_id, upto)


def _rebuild(store: Any, session_id: str, upto: int) -> Conversation:
    with _CONVERSATIONS_LOCK:
        try:
            memo = _CONVERSATIONS.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced: no memo
            memo = {}
        known = memo.get(session_id)
    if known is not None and upto < known.floor:
        known = None  # from before the chunk it started at: start from an older one
    remembered = known
    if known is None and hasattr(store, "latest_conversation"):
        known = _stored(store, session_id, upto)
    if known is None:
        known = _parents_conversation(store, memo, session_id)
        if known is not None and upto < known.floor:
            known = None
    seqs: list[int]
    heads: list[_Said]
    floor: int = 0
    chunk: Chunk | None = None
    restores: list[int] = []
    if known is not None:
        seqs, heads = known.until(upto)
        after = min(known.upto, upto)
        floor, chunk = known.floor, known.chunk
        restores = [r for r in known.restores if r <= upto]
    else:
        seqs, heads, after = [], [], 0
    kinds = (*MESSAGE_KINDS, EventKind.RESTORE)
    rows: Iterable[tuple[int, str, str, str]]
    if hasattr(store, "iter_rows"):
        rows = store.iter_rows(session_id, after=after, until=upto, kinds=kinds)
    else:
        events = store.iter_events(session_id, after=after, until=upto, kinds=kinds)
        rows = ((e.seq, e.kind.value, e.actor, e.payload_json) for e in events)
    head = heads[-1] if heads else None
    said: list[Message] = []
    for seq, kind, actor, payload in rows:  # the hot loop of a resume: ~20,000 rows per 10k steps
        p = _decode(payload)
        if kind == "tool_result":
            message = new_message("tool", p["output"], (), p["call_id"], p["name"], p["is_error"])
            head = (message, head)
        elif kind == "restore":
            to = p["to_seq"]
            if to >= floor:
                head = _head(seqs, heads, to)
            else:  # back to before the chunk this started from
                head = _stack(_conversation(store, session_id, to))
            restores.append(seq)
        else:
            _say(said, kind, actor, p)
            for message in said:
                head = (message, head)
            said.clear()
        seqs.append(seq)
        heads.append(head)
    if remembered is None or remembered.upto < upto:
        with _CONVERSATIONS_LOCK:
            newest = memo.get(session_id)
            if newest is None or newest.upto <= upto:
                memo.pop(session_id, None)
                while len(memo) >= _KEEP_CONVERSATIONS:
                    memo.pop(next(iter(memo)))
                memo[session_id] = _Conversation(
                    upto, tuple(seqs), tuple(heads), floor, chunk, tuple(restores)
                )
    return _messages(head, _newest_chunk(store, session_id, upto, floor, chunk, restores))


# The newest chunk each session's engine in this process wrote: (seq, messages in it and before)
_WRITTEN: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, int]]] = weakref.WeakKeyDictionary()


def note_chunk(store: Any, session_id: str, seq: int, n: int) -> None:
    """Remember that the conversation after event ``seq`` (``n`` messages) is stored: the next
    engine to run the session in this process goes on from it, not from the older chunk its
    conversation was rebuilt from."""
    with _CONVERSATIONS_LOCK, contextlib.suppress(TypeError):  # TypeError: not weakly referable
        _WRITTEN.setdefault(store, {})[session_id] = (seq, n)


def _newest_chunk(
    store: Any,
    session_id: str,
    upto: int,
    floor: int,
    chunk: Chunk | None,
    restores: list[int],
) -> Chunk | None:
    """The newest stored chunk the conversation after ``upto`` begins with, if known: the one
    it was rebuilt from, or a newer one written here, with no restore after it."""
    try:
        written = _WRITTEN.get(store, {}).get(session_id)
    except TypeError:  # a store that cannot be weakly referenced
        written = None
    newest = chunk
    newer_than = -1 if chunk is None else chunk[1]
    if written is not None and max(floor, newer_than + 1) <= written[0] <= upto:
        newest = (session_id, *written)
    if newest is None or any(newest[1] < r <= upto for r in restores):
        return None
    return newest
