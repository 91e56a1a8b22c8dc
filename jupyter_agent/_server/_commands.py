"""What a control from the REST API does: queue it for the live process that holds the session,
or, when none does, do what can be done without one (a message, a stop, a fork, a restore), and
keep a decision on a waiting call for the process that resumes it.

Kept apart from the tornado handlers so that it is plain code over a store, tested as such.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .._branch import check_restore_point, fork_session, restore_session
from .._clock import SystemClock
from .._engine import record_message, record_stop
from .._errors import InvalidSessionState
from .._inbox import decided_already
from .._state import TERMINAL, load_state
from .._store import SqliteStore
from .._store._leases import is_alive

VERBS = ("pause", "resume", "stop", "tell", "approve", "deny", "fork", "restore")


class CommandRefused(Exception):
    """A control that cannot be done now; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, *, no_process: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.no_process = no_process  # a process that has the agent could do it (a kernel)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a control: ``queued`` for a live process, or ``done`` here."""

    state: str  # queued | done
    command_id: int | None = None
    runtime_id: str | None = None
    session_id: str | None = None  # a fork's new session

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "command_id": self.command_id,
            "runtime_id": self.runtime_id,
            "session_id": self.session_id,
        }


def parse(body: object) -> tuple[str, dict[str, Any]]:
    """``{"verb": ..., <arguments>}`` checked: the verb and its arguments, or ``ValueError``."""
    if not isinstance(body, dict):
        raise ValueError('send a JSON object like {"verb": "pause"}')
    verb = body.get("verb")
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}; use one of: {', '.join(VERBS)}")
    args = {k: v for k, v in body.items() if k != "verb"}
    if verb == "tell" and not (isinstance(args.get("text"), str) and args["text"].strip()):
        raise ValueError('tell needs "text": the message for the agent')
    if verb in ("approve", "deny") and not isinstance(args.get("call_id"), str):
        raise ValueError(f'{verb} needs "call_id": the id of the waiting call')
    if verb == "deny" and not isinstance(args.setdefault("reason", ""), str):
        raise ValueError('"reason" must be text')
    if verb == "restore" or (verb == "fork" and "at" in args):
        at = args.get("at")
        if isinstance(at, bool) or not isinstance(at, int):
            raise ValueError(f'{verb} needs "at": the number of an event')
    for key in ("name", "workspace") if verb == "fork" else ():
        if not isinstance(args.get(key, ""), str):
            raise ValueError(f'"{key}" must be text')
    return verb, args


_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def apply(
    store: SqliteStore, session_id: str, verb: str, args: dict[str, Any], *, actor: str
) -> Outcome:
    """Do one control on behalf of ``actor`` (the Jupyter user). The server's controls of
    one session take turns: two restores at once would each put files back."""
    with _locks_lock:
        lock = _locks.setdefault(f"{store.path}\0{session_id}", threading.Lock())
    with lock:
        return _apply(store, session_id, verb, args, actor=actor)


def _apply(
    store: SqliteStore, session_id: str, verb: str, args: dict[str, Any], *, actor: str
) -> Outcome:
    row = store.get_session(session_id)
    if verb == "fork":
        at = int(args.get("at", row.last_seq))
        new_id = fork_session(
            store,
            session_id,
            at,
            actor=actor,
            clock=SystemClock(),
            name=args.get("name") or None,
            workspace=args.get("workspace") or None,
        )
        return Outcome("done", session_id=new_id)
    if row.status in TERMINAL and verb != "restore":
        raise CommandRefused(409, f"session {session_id} is {row.status}: cannot {verb} it")
    holder = live_holder(store, session_id)
    if verb in ("approve", "deny"):
        args = {**args, "asked": _check_waiting(store, session_id, args["call_id"])}
        _check_undecided(store, session_id, args["call_id"], args["asked"])
    if verb == "restore":  # before it is queued: the holder could only drop it
        check_restore_point(store, session_id, int(args["at"]))
    if holder is not None:  # its kernel does it, busy or not (a restore pauses it first)
        command_id = store.send_command(session_id, verb, args, actor=actor)
        return Outcome("queued", command_id=command_id, runtime_id=holder)
    return _without_a_runtime(store, session_id, verb, args, actor=actor)


def _without_a_runtime(
    store: SqliteStore, session_id: str, verb: str, args: dict[str, Any], *, actor: str
) -> Outcome:
    clock = SystemClock()
    if verb == "tell":
        record_message(store, session_id, args["text"], actor=actor, clock=clock)
    elif verb == "stop":
        record_stop(store, session_id, actor=actor, clock=clock)
    elif verb == "restore":
        try:
            restore_session(store, session_id, int(args["at"]), actor=actor, clock=clock)
        except InvalidSessionState as exc:
            raise CommandRefused(409, str(exc)) from exc
    elif verb in ("approve", "deny"):  # the process that resumes the session acts on it
        return Outcome("queued", command_id=store.send_command(session_id, verb, args, actor=actor))
    else:
        raise CommandRefused(
            409,
            f"no live process runs session {session_id}: resume it from a notebook "
            f"(open_session('{session_id}').resume()) or with `jupyter-agent resume {session_id}`",
            no_process=True,
        )
    return Outcome("done")


def _check_waiting(store: SqliteStore, session_id: str, call_id: str) -> int:
    """The seq of the request the call waits on (a decision answers that one only)."""
    waiting = load_state(store, session_id).approvals
    if call_id not in waiting:
        listed = ", ".join(sorted(waiting)) or "none"
        raise CommandRefused(
            409,
            f"no call {call_id!r} waits for approval in session {session_id} (waiting: {listed})",
        )
    return waiting[call_id].seq


def _check_undecided(store: SqliteStore, session_id: str, call_id: str, asked: int) -> None:
    """Refuse a second decision on a request while the first waits to be taken: the first
    one given is the one the session acts on."""
    cmd = store.queued_decision(session_id, call_id, asked)
    if cmd is not None:
        approve = cmd.verb == "approve"
        raise CommandRefused(409, decided_already(session_id, call_id, approve, cmd.actor))


def live_holder(store: SqliteStore, session_id: str) -> str | None:
    """The live runtime holding the session's lease, if any."""
    holder = store.get_session(session_id).runtime_id
    if not holder:
        return None
    info = store.get_runtime(holder)
    return holder if info is not None and is_alive(info, time.time()) else None
