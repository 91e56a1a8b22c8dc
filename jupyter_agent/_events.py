"""The event vocabulary: a closed set of typed, versioned records, chained by hash.

Every step of a session is an ``Event``. A session's state is the fold of its events
(``_state.SessionState``), so the log is the truth and everything else is a view of it.

Each event carries its session id, its sequence number in that session (1, 2, ...), its time,
its actor (``agent`` or a person's identity), a payload, the version of its kind's payload
shape, and ``hash = sha256(prev_hash + canonical(event))``, so editing or dropping any event
breaks the chain from there on (``verify_chain``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import json.encoder
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeAlias

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
Payload: TypeAlias = dict[str, JSON]

GENESIS_HASH = "0" * 64


class EventKind(enum.StrEnum):
    SESSION_STARTED = "session_started"
    SESSION_FINISHED = "session_finished"
    SESSION_FAILED = "session_failed"
    MODEL_REQUEST = "model_request"
    MODEL_RESPONSE = "model_response"
    MODEL_RETRY = "model_retry"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_DECIDED = "approval_decided"
    PLAN_UPDATED = "plan_updated"
    MESSAGE = "message"
    TIMER_SET = "timer_set"
    TIMER_FIRED = "timer_fired"
    STATUS_CHANGED = "status_changed"
    BUDGET_EXCEEDED = "budget_exceeded"
    ERROR = "error"
    FORK = "fork"
    RESTORE = "restore"


# kind -> (payload version, required payload keys). Bump the version when a kind's shape changes,
# and teach ``_state`` to read every version it may meet in old stores.
SCHEMA: dict[EventKind, tuple[int, frozenset[str]]] = {
    EventKind.SESSION_STARTED: (1, frozenset({"name", "model", "goal", "tools", "workspace"})),
    EventKind.SESSION_FINISHED: (1, frozenset({"result"})),
    EventKind.SESSION_FAILED: (1, frozenset({"error"})),
    EventKind.MODEL_REQUEST: (1, frozenset({"step", "messages"})),
    EventKind.MODEL_RESPONSE: (1, frozenset({"step", "text", "tool_calls", "usage"})),
    EventKind.MODEL_RETRY: (1, frozenset({"step", "attempt", "error", "delay_s"})),
    EventKind.TOOL_CALL: (1, frozenset({"call_id", "name", "arguments", "effect"})),
    EventKind.TOOL_RESULT: (1, frozenset({"call_id", "name", "output", "is_error"})),
    EventKind.APPROVAL_REQUESTED: (1, frozenset({"call_id", "reason"})),
    EventKind.APPROVAL_DECIDED: (1, frozenset({"call_id", "decision"})),
    EventKind.PLAN_UPDATED: (1, frozenset({"plan"})),
    EventKind.MESSAGE: (1, frozenset({"text"})),
    EventKind.TIMER_SET: (1, frozenset({"timer_id", "wake_at"})),
    EventKind.TIMER_FIRED: (1, frozenset({"timer_id"})),
    EventKind.STATUS_CHANGED: (1, frozenset({"status"})),
    EventKind.BUDGET_EXCEEDED: (1, frozenset({"kind", "limit", "used"})),
    EventKind.ERROR: (1, frozenset({"code", "message"})),
    EventKind.FORK: (1, frozenset({"parent_id", "fork_seq", "name"})),
    EventKind.RESTORE: (1, frozenset({"to_seq", "files"})),
}


def reused_encoder(encoder: json.JSONEncoder) -> Callable[[object], str]:
    """``encoder.encode``, through one C encoder made here: ``encode`` makes a new one on every
    call, most of its time for a small payload. Same text, same errors: this one has no cycle
    check (its bookkeeping would outlive a failed call, and threads would share it), so a cycle
    ends in ``RecursionError``, and then ``encoder.encode`` runs to raise its usual error."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # not CPython
        return encoder.encode
    spell = (
        json.encoder.encode_basestring_ascii
        if encoder.ensure_ascii
        else json.encoder.encode_basestring
    )
    chunks = make(
        None,
        encoder.default,
        spell,
        encoder.indent,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )

    def encode(value: object) -> str:
        try:
            return "".join(chunks(value, 0))
        except RecursionError:
            return encoder.encode(value)

    return encode


_CANONICAL = reused_encoder(
    json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
)
_CANONICAL_ASCII = reused_encoder(
    json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
)


def canonical_json(value: object) -> str:
    """The one JSON spelling used for payloads and hashes: sorted keys, no spaces, UTF-8.

    Text that is not valid Unicode (lone surrogates, e.g. from an undecodable file name) is
    written with ``\\u`` escapes instead, so it round-trips exactly. NaN and infinity are refused:
    the log stays standard JSON that any tool (and SQLite's ``json_extract``) can read.
    """
    text = _CANONICAL(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _CANONICAL_ASCII(value)
    return text


@dataclass(frozen=True, slots=True)
class Event:
    """One durable record. ``payload_json`` is exactly what the store holds and the hash covers."""

    session_id: str
    seq: int
    ts: float
    kind: EventKind
    actor: str
    v: int
    payload_json: str
    hash: str

    @property
    def payload(self) -> dict[str, Any]:
        """The payload, decoded (a fresh dict each time)."""
        value: dict[str, Any] = json.loads(self.payload_json)
        return value

    def to_dict(self) -> dict[str, JSON]:
        return {
            "session_id": self.session_id,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind.value,
            "actor": self.actor,
            "v": self.v,
            "payload": self.payload,
            "hash": self.hash,
        }


# Each field's slot setter, in field order: ``_event`` builds an Event through them.
_SETTERS = tuple(getattr(Event, f.name).__set__ for f in fields(Event))


def _event(
    session_id: str,
    seq: int,
    ts: float,
    kind: EventKind,
    actor: str,
    v: int,
    payload_json: str,
    digest: str,
) -> Event:
    """``Event(...)`` in about half the time: the frozen dataclass's ``__init__`` sets each field
    through ``object.__setattr__``, this sets the slots directly."""
    event: Event = object.__new__(Event)
    s0, s1, s2, s3, s4, s5, s6, s7 = _SETTERS
    s0(event, session_id)
    s1(event, seq)
    s2(event, ts)
    s3(event, kind)
    s4(event, actor)
    s5(event, v)
    s6(event, payload_json)
    s7(event, digest)
    return event


def event_hash(
    prev_hash: str,
    session_id: str,
    seq: int,
    ts: float,
    kind: str,
    actor: str,
    v: int,
    payload_json: str,
) -> str:
    try:
        return _hash(prev_hash, _head(session_id, seq, repr(ts), kind, actor, v), payload_json)
    except UnicodeEncodeError:  # not valid Unicode: the head is spelled with \\u escapes
        head = canonical_json([session_id, seq, repr(ts), kind, actor, v])
        return _hash(prev_hash, head, payload_json)


def _hash(prev_hash: str, head: str, payload_json: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{head}\n{payload_json}".encode()).hexdigest()


_STRINGS: dict[str, str] = {}  # session ids, kinds, actors: their JSON spelling


def _json_str(text: str) -> str:
    spelled = _STRINGS.get(text)
    if spelled is None:
        spelled = _CANONICAL(text)
        if len(_STRINGS) < 10_000:
            _STRINGS[text] = spelled
    return spelled


def _head(session_id: str, seq: int, ts_repr: str, kind: str, actor: str, v: int) -> str:
    """``canonical_json([session_id, seq, ts_repr, kind, actor, v])``, without building it
    through the encoder (a float's repr and an int need no escaping)."""
    if type(seq) is not int or type(v) is not int:
        return canonical_json([session_id, seq, ts_repr, kind, actor, v])
    return f'[{_json_str(session_id)},{seq},"{ts_repr}",{_json_str(kind)},{_json_str(actor)},{v}]'


def check_payload(kind: EventKind, payload: Mapping[str, object]) -> int:
    """Return the kind's payload version, or raise ``ValueError`` if required keys are missing."""
    version, required = SCHEMA[kind]
    if payload.keys() >= required:
        return version
    missing = required - payload.keys()
    raise ValueError(f"{kind.value} event is missing {', '.join(sorted(missing))}")


class EventChain:
    """Builds the next events of one session: numbers them and chains their hashes.

    Only the session's single writer holds a chain; the store refuses a sequence number that is
    already taken, so two writers can never interleave silently.
    """

    __slots__ = ("_ts", "_ts_repr", "last_hash", "last_seq", "session_id")

    def __init__(self, session_id: str, *, last_seq: int = 0, last_hash: str = GENESIS_HASH):
        self.session_id = session_id
        self.last_seq = last_seq
        self.last_hash = last_hash
        self._ts, self._ts_repr = 0.0, repr(0.0)  # the last time hashed, spelled

    def copy(self) -> EventChain:
        """The same chain, to move on without moving this one (the engine's every write)."""
        other: EventChain = object.__new__(EventChain)
        other.session_id, other.last_seq, other.last_hash = (
            self.session_id,
            self.last_seq,
            self.last_hash,
        )
        other._ts, other._ts_repr = self._ts, self._ts_repr
        return other

    def next(
        self, kind: EventKind, payload: Mapping[str, object], *, ts: float, actor: str = "agent"
    ) -> Event:
        version = check_payload(kind, payload)
        ts = float(ts)  # the hash covers repr(ts); SQLite's REAL gives back a float
        # events recorded together share one time object: spell it once (by identity, as
        # equal floats may be spelled differently: 0.0 and -0.0)
        if ts is not self._ts:
            self._ts, self._ts_repr = ts, repr(ts)
        seq = self.last_seq + 1
        payload_json = _CANONICAL(payload)
        try:  # encoding for the hash also proves the payload is valid Unicode
            head = _head(self.session_id, seq, self._ts_repr, kind, actor, version)
            digest = _hash(self.last_hash, head, payload_json)
        except UnicodeEncodeError:
            payload_json = canonical_json(payload)
            digest = event_hash(
                self.last_hash, self.session_id, seq, ts, kind.value, actor, version, payload_json
            )
        self.last_seq, self.last_hash = seq, digest
        return _event(self.session_id, seq, ts, kind, actor, version, payload_json, digest)


def verify_chain(events: Iterable[Event]) -> int | None:
    """Return the seq of the first event whose hash or numbering is wrong, or ``None`` if intact."""
    prev, expected_seq = GENESIS_HASH, 1
    for e in events:
        digest = event_hash(
            prev, e.session_id, e.seq, e.ts, e.kind.value, e.actor, e.v, e.payload_json
        )
        if e.seq != expected_seq or digest != e.hash:
            return e.seq
        prev, expected_seq = e.hash, expected_seq + 1
    return None
