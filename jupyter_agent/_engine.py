"""The agent loop as events in, events out.

    build context -> model -> record response + tool-call intents (durable) -> run each tool
    -> record its result (durable) -> repeat, until the model answers without tool calls,
    a person stops or pauses the session, or a limit is hit.

The engine's state is always the fold of the events it recorded (``SessionState.apply``), and
every event is durable before the engine acts on it. So a crash anywhere loses nothing, and a
resumed engine never re-runs a tool call whose result is recorded. A call whose intent is
recorded but whose result is not is *in doubt*: re-run when its tool is read-only or idempotent,
otherwise listed in ``pending_approvals`` until a person approves (run it again) or denies (skip).

Calls that change nothing (read-only tools the policy allows) do not wait for their intent to
be durable: the model's answer and the intents are written with the first result, one commit a
step instead of two, or as soon as a call has run for ``RECORD_RUNNING_AFTER_S`` (so a long call
shows as running). A crash before that asks the model again, as a crash during the model's
answer would. A call whose intent would be written in the same commit as its result has no
intent event: its result carries the intent's ``arguments`` and ``effect``
(``_with_own_intent``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import anyio

from ._clock import Clock
from ._errors import JupyterAgentError, SessionConflict, StoreError, ToolArgsInvalid
from ._events import GENESIS_HASH, Event, EventChain, EventKind
from ._give_way import GIVE_WAY
from ._identity import current_notebook
from ._inbox import Decision, Inbox
from ._live import live_text
from ._models._base import Model, ModelRequest, ModelResponse, ToolCallRequest
from ._models._redact import redact
from ._policy import Limits, rule_for
from ._schedule import Schedule
from ._state import (
    TERMINAL,
    Conversation,
    ConversationView,
    SessionState,
    chunk_of,
    encode_messages,
    load_state_from_snapshot,
    note_chunk,
    session_totals,
)
from ._store import SqliteStore
from ._store._sqlite import blob_digest
from ._tools import Tool, ToolOutput
from ._tools._context import Effect, FileChange, PlanItem, ToolContext

SNAPSHOT_EVERY = 100
DECISION_POLL_S = 0.05  # how often a call waiting for approval looks for a decision
BLOB_THRESHOLD = 32_000  # characters of tool output kept inline in an event
RETRY_LOOKBACK = 200  # events back from the newest where a retry still waited for its time
WORKSPACE_CHECK_S = 1.0  # how often a tool call makes sure the workspace folder exists
RECORD_RUNNING_AFTER_S = 0.05  # a re-runnable call's intent is durable by then (see above)
SESSION_ROW_EVERY_S = 0.5  # how long a running session's totals in its row may lag its log
ASKED_WAIT_S = 1.0  # at a run's end, the longest it waits for a control's write to land
YIELD_EVERY_S = 0.001  # the longest the engine runs steps without letting the loop run others
_RERUNNABLE = frozenset({Effect.READ_ONLY.value, Effect.IDEMPOTENT.value})
# kinds whose payloads the engine builds from plain JSON values (str, numbers, lists, dicts)
_PLAIN = frozenset({EventKind.MODEL_RESPONSE, EventKind.TOOL_CALL, EventKind.TOOL_RESULT})
_UNSET = object()
# what a run writes when it comes to rest (a run waiting for a person rests only when it ends)
_RESTING = TERMINAL | {"paused", "interrupted"}

Draft = tuple[EventKind, Mapping[str, Any], str]  # kind, payload, actor


def create_session(
    store: SqliteStore,
    *,
    session_id: str,
    owner: str,
    clock: Clock,
    started: Mapping[str, Any],
    runtime_id: str | None = None,
) -> None:
    """Record a new session: its row (leased to ``runtime_id``, so a process that dies before
    running it still leaves it findable) and its ``session_started`` event, in one commit."""
    event = EventChain(session_id).next(
        EventKind.SESSION_STARTED, started, ts=clock.now(), actor=owner
    )
    store.write(
        [event],
        session={
            "id": session_id,
            "name": started["name"],
            "owner": owner,
            "model": started["model"],
            "goal": started["goal"],
            "status": "running",
            "created_at": event.ts,
            "updated_at": event.ts,
            "last_seq": event.seq,
            "last_hash": event.hash,
            "runtime_id": runtime_id,
            "notebook": current_notebook(),
        },
    )


def record_message(
    store: SqliteStore,
    session_id: str,
    text: str,
    *,
    actor: str,
    clock: Clock,
    runtime_id: str | None = None,
) -> None:
    """Append a person's message to a session no engine is running (it is read on resume)."""
    record_outside(
        store,
        session_id,
        EventKind.MESSAGE,
        {"text": text},
        actor=actor,
        clock=clock,
        runtime_id=runtime_id,
    )


def record_stop(
    store: SqliteStore, session_id: str, *, actor: str, clock: Clock, runtime_id: str | None = None
) -> None:
    """Stop for good a session no engine is running (paused, waiting, interrupted)."""
    record_outside(
        store,
        session_id,
        EventKind.STATUS_CHANGED,
        {"status": "stopped", "reason": f"stopped by {actor}"},
        actor=actor,
        clock=clock,
        runtime_id=runtime_id,
    )


def record_outside(
    store: SqliteStore,
    session_id: str,
    kind: EventKind,
    payload: Mapping[str, Any],
    *,
    actor: str,
    clock: Clock,
    runtime_id: str | None = None,
) -> None:
    """Append one event to a session that no engine runs (a message, a stop), chained from the
    session row; a ``status_changed`` event updates the row's status too. Refused with
    ``SessionLeased`` if a live process other than ``runtime_id`` holds the session."""
    row = store.get_session(session_id)
    chain = EventChain(session_id, last_seq=row.last_seq, last_hash=row.last_hash or GENESIS_HASH)
    ts = max(clock.now(), row.updated_at)  # the session's own clock may run ahead of this one
    event = chain.next(kind, payload, ts=ts, actor=actor)
    update: dict[str, Any] = {
        "id": session_id,
        "updated_at": event.ts,
        "last_seq": event.seq,
        "last_hash": event.hash,
    }
    if kind is EventKind.STATUS_CHANGED:
        update["status"] = payload["status"]
    store.write([event], session=update, free_for=runtime_id or "")


class _ModelFailed(Exception):
    pass


class _Interrupted(Exception):
    """A person's pause or stop cut a wait short; the step boundary takes it from here."""


class _Observer:
    """Hears the model's retries (recorded: no retry is silent) and its streamed text (live)."""

    def __init__(self, engine: Engine, step: int) -> None:
        self._engine, self._step = engine, step

    async def retrying(self, *, attempt: int, error: Exception, delay_s: float) -> None:
        live_text.clear(self._engine.session_id)  # that attempt's text is not its answer
        info = (
            error.to_dict()
            if isinstance(error, JupyterAgentError)
            else {"code": "model", "message": f"{type(error).__name__}: {error}"}
        )
        await self._engine._record(
            (
                EventKind.MODEL_RETRY,
                {
                    "step": self._step,
                    "attempt": attempt,
                    "error": info,
                    "delay_s": round(delay_s, 3),
                },
                "agent",
            )
        )

    def partial(self, text: str) -> None:
        live_text.set(self._engine.session_id, self._step, text)


class _Interruptible:
    """``with engine._interruptible(kind):`` a wait that ``interrupt()`` cuts short.

    Usually it cancels the cancel scope of the stretch of steps the wait is in
    (``Engine._go_on``), only while the wait lasts, and leaving the wait with that scope
    cancelled raises ``_Interrupted``, which ends the stretch before anything else is awaited
    in it. (One scope for many steps rather than one per wait: a scope entered and left around
    each model call cost ~8.5 µs of a ~96 µs step.) A model's answer that came just as the
    interrupt did is kept (``Engine._step`` finishes that step shielded); a wait inside that
    step has a scope of its own, as every wait had before. (A class, not a generator: it
    frames every model call.)"""

    __slots__ = ("_engine", "_kind", "_scope")

    def __init__(self, engine: Engine, kind: str) -> None:
        self._engine, self._kind = engine, kind
        self._scope: anyio.CancelScope | None = None

    def __enter__(self) -> None:
        engine = self._engine
        if engine._stretch is None or engine._cut_short():  # (the shielded end of a step)
            self._scope = anyio.CancelScope()
            self._scope.__enter__()
            engine._wait_scope = self._scope
        engine._wait_kind = self._kind

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        engine = self._engine
        engine._wait_kind = None
        scope = self._scope
        if scope is not None:
            engine._wait_scope = None
            scope.__exit__(exc_type, *exc)  # it swallows only the cancellation it caught
            if scope.cancelled_caught:
                raise _Interrupted
            return
        if engine._cut_short():
            if exc_type is None and self._kind == "model":
                return  # an answer that came as the interrupt did: _step keeps it
            raise _Interrupted  # (cut short: the scope's cancellation became this)


class Engine:
    """Runs one session until it finishes or must wait; ``run`` may be called again to resume."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        session_id: str,
        model: Model,
        tools: Mapping[str, Tool],
        clock: Clock,
        limits: Limits,
        namespace: dict[str, object],
        inbox: Inbox,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.store, self.session_id, self.model = store, session_id, model
        self.tools, self.clock, self.limits = tools, clock, limits
        self.namespace, self.inbox = namespace, inbox
        self.snapshot_every = snapshot_every
        self.state = SessionState(id=session_id)
        self._chain = EventChain(session_id)
        self._last_snapshot = 0
        self._specs = [t.spec() for t in tools.values()]
        self.lease: str | None = None  # the runtime holding the session; fences every write
        self._schedule: Schedule | None = None
        self._stretch: anyio.CancelScope | None = None  # see _Interruptible
        self._wait_scope: anyio.CancelScope | None = None  # a wait's own, in a shielded end
        self._wait_kind: str | None = None
        self._deferred: list[tuple[Draft, float]] = []
        self._recording = asyncio.Lock()  # one write at a time (see _write_in_background)
        self._flush_error: BaseException | None = None
        self._model_not_before: float | None = None  # see _retry_due
        self._background: set[asyncio.Task[None]] = set()  # held so that they are not collected
        self._row_timer: asyncio.TimerHandle | None = None  # writes totals the last writes left
        self._call_timer: asyncio.TimerHandle | None = None  # see _watch_call
        self._call_started: float | None = None  # the call whose intent waits to be written
        self._row_written: dict[str, Any] = {}  # the session row as last written by this run
        self._row_due = 0.0  # when the row's running totals are next written (monotonic)
        self._workspaces: dict[str, tuple[Path, float]] = {}  # -> (path, when looked for)
        self._sleeps: dict[str, int] = {}  # call id -> timers it set in this run of it

    async def run_to_rest(self) -> SessionState:
        """``run()``, again while decisions arrive for waiting calls; then release the inbox.

        Messages sent after the last step boundary are recorded before the run ends, so a
        message is never dropped because the session finished or paused meanwhile.
        """
        try:
            while True:
                self.inbox.rest(False)
                state = await self.run()
                self.inbox.rest()
                await self._close_requests()
                while True:
                    done, late = self.inbox.deactivate_if_idle(self._awaited_first())
                    if late:
                        await self._record(*((EventKind.MESSAGE, {"text": t}, a) for t, a in late))
                    if done:
                        return state
                    if not late:
                        break  # a decision arrived: run again
        except BaseException:
            self.inbox.deactivate()
            raise
        finally:
            self._stop_background()  # (the late messages' write may have armed the row timer)

    async def _close_requests(self) -> None:
        """The run has come to rest: the pause or stop commands it was given are done (acted
        on, or moot), so the store may close them (see ``Runtime._apply_commands``); until it
        has, the inbox keeps knowing them, so that none is applied twice."""
        asking, lease = self.inbox.take_asking(), self.lease
        if asking:  # given here, and perhaps acted on before its write landed: wait for it
            await anyio.to_thread.run_sync(lambda: futures.wait(asking, timeout=ASKED_WAIT_S))
        written = [f.result() for f in asking if f.done() and f.exception() is None]
        done = sorted({*self.inbox.requests(), *written})
        if not done or lease is None:
            return
        try:
            await anyio.to_thread.run_sync(lambda: self.store.close_commands(done, taken_by=lease))
        except JupyterAgentError:
            return  # the next round of the runtime's housekeeping takes them
        self.inbox.closed(done)

    async def run(self) -> SessionState:
        """Continue the session from what the store holds; return the state it stopped in."""
        # the next snapshot is due ``snapshot_every`` events after the newest, however many
        # runs that spans (a session paused more often would otherwise never take one, and
        # every resume would read its whole log)
        self.state, self._last_snapshot = await anyio.to_thread.run_sync(
            load_state_from_snapshot, self.store, self.session_id
        )
        self._model_not_before = await anyio.to_thread.run_sync(self._retry_due)
        state = self.state
        self._chain = EventChain(
            self.session_id, last_seq=state.last_seq, last_hash=state.last_hash
        )
        self._row_written, self._row_due = {}, 0.0
        self._schedule = Schedule.from_payload(state.schedule)
        self._flush_error = None
        if state.status in TERMINAL:
            return state
        try:
            try:
                await self._set_status("running")
                while not await self._go_on():
                    pass
            except (SessionConflict, StoreError):
                raise
            except _ModelFailed as exc:
                await self._fail(exc.__cause__ or exc, where="model")
            except Exception as exc:
                await self._fail(exc, where="engine")
            if self._deferred:  # e.g. an intent whose call a pause or an error cut short
                await self._record()
        finally:
            self._stop_background()
        return state

    def _stop_background(self) -> None:
        """Cancel the row and call timers and the writes in the background: a run that ends
        (by an error too) writes no more, and a later run of this session starts its own."""
        for timer in (self._row_timer, self._call_timer):
            if timer is not None:
                timer.cancel()
        self._row_timer = self._call_timer = None
        self._call_started = None
        for task in list(self._background):
            task.cancel()

    def interrupt(self, *, only: str | None = None) -> None:
        """Cut short the wait in progress (a model answer, a sleep; with ``only``, just that
        kind of wait); call on the loop thread. A pause or stop asked for between two waits
        is seen when the next one starts."""
        if self._wait_kind is None or only not in (None, self._wait_kind):
            return
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        elif self._stretch is not None:
            self._stretch.cancel()  # the engine is suspended in the wait: it lands there

    def _cut_short(self) -> bool:
        """Whether an interrupt cancelled the stretch of steps in progress."""
        return self._stretch is not None and self._stretch.cancel_called

    def _interruptible(self, kind: str) -> _Interruptible:
        """A wait that ``interrupt()`` ends by raising ``_Interrupted`` (nothing recorded)."""
        if self.inbox.pause_requested or self.inbox.stop_requested:
            raise _Interrupted
        if kind == "tick" and self.inbox.has_messages():  # told before the sleep began
            raise _Interrupted
        return _Interruptible(self, kind)

    # -- recording ---------------------------------------------------------------------------

    def _defer(self, *drafts: Draft) -> None:
        """Queue events that need not be durable before the engine goes on (a read-only call's
        intent): they are written, in order, with the next recorded events. Saves a commit per
        step."""
        now = self.clock.now()
        self._deferred += [(d, now) for d in drafts]

    async def _record(self, *drafts: Draft, blobs: Sequence[bytes] = ()) -> list[Event]:
        """Append events (and any deferred ones before them) durably, then let the engine act.

        The chain moves on only once the write succeeded; a failed write ends the run with a
        ``StoreError`` (the in-memory state is thrown away, the log stays whole).
        """
        GIVE_WAY()  # in a kernel, its requests come first (see _give_way)
        async with self._recording:
            if self._flush_error is not None:
                raise self._flush_error
            return await self._write(drafts, blobs)

    def _watch_call(self, started: float) -> None:
        """Have the deferred events written if the call starting now runs for
        ``RECORD_RUNNING_AFTER_S``. One timer serves call after call: armed when none is, it
        re-arms itself for the call running when it fires (a timer made and cancelled for
        every call is a good share of a step's cost). ``started`` is ``time.monotonic()``, the
        asyncio loop's own clock."""
        self._call_started = started
        if self._call_timer is None:
            due = started + RECORD_RUNNING_AFTER_S
            self._call_timer = asyncio.get_running_loop().call_at(due, self._check_call, started)

    def _check_call(self, armed_for: float) -> None:
        """The call timer's callback: write the deferred events if the call it was armed for
        still runs (it is due: the loop says so); re-arm for a later call that runs."""
        self._call_timer = None
        started = self._call_started
        if started is None:
            return  # no call waits on its intent: the next one arms the timer again
        if started == armed_for:  # (a later call that started at the same time is due too)
            self._write_in_background(lambda: bool(self._deferred))
        else:
            due = started + RECORD_RUNNING_AFTER_S
            self._call_timer = asyncio.get_running_loop().call_at(due, self._check_call, started)

    def _refresh_row_soon(self) -> None:
        """Write the row's totals that the last writes left out (a timer's callback), so that
        a long model answer or tool call does not leave them behind the log."""
        self._row_timer = None
        self._write_in_background(lambda: session_totals(self.state) != self._row_written)

    def _write_in_background(self, needed: Callable[[], bool]) -> None:
        """A write of what is pending (deferred events, the row), if still ``needed()`` once
        it has the turn to write; its error is raised by the engine's next record."""

        async def write() -> None:
            try:
                async with self._recording:
                    if needed() and self._flush_error is None:
                        await self._write((), ())
            except Exception as exc:
                self._flush_error = exc

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)  # held so that it is not collected
        task.add_done_callback(self._background.discard)

    async def _write(self, drafts: Sequence[Draft], blobs: Sequence[bytes]) -> list[Event]:
        ts = self.clock.now()
        if self._deferred and drafts and drafts[0][0] is EventKind.TOOL_RESULT:
            timed = [*self._with_own_intent(drafts[0], ts), *((d, ts) for d in drafts[1:])]
        else:
            timed = [*self._deferred, *((d, ts) for d in drafts)]
        self._deferred = []
        chain = self._chain.copy()
        events, was = [], self.state.status
        for (kind, payload, actor), at in timed:
            event = chain.next(kind, payload, ts=at, actor=actor)
            events.append(event)
            # the hot kinds' payloads are plain JSON values built here: no need to decode them
            self.state.apply(event, payload=payload if kind in _PLAIN else None)
        if self.state.status != was and self.state.status in _RESTING:
            self.inbox.rest()  # before the status is in the store: see Session.running_here
        snapshot = conversation = None
        if self.state.last_seq - self._last_snapshot >= self.snapshot_every:
            snapshot = (self.state.last_seq, self.state.to_snapshot())
            conversation = self._conversation_chunk()
        now = time.monotonic()
        # the row is a summary for lists: its totals may lag a running session by up to
        # SESSION_ROW_EVERY_S (its position never does: readers take it from the newest event),
        # which saves a page per commit; a status change is written at once
        written, state = self._row_written, self.state
        session: dict[str, Any] | None = None
        if (
            not events
            or snapshot
            or now >= self._row_due
            or written.get("status", _UNSET) != state.status  # the columns besides
            or written.get("id", _UNSET) != state.id  # the running totals
        ):
            row = session_totals(state)
            changed = {k: v for k, v in row.items() if written.get(k, _UNSET) != v}
            session = {**changed, "id": self.session_id, "updated_at": ts}
        try:
            await self.store.write_async(  # shielded: a pause may not cut a write in half
                events,
                session=session,
                snapshot=snapshot,
                lease=self.lease,
                blobs=blobs,
                conversation=conversation,
            )
        except (StoreError, SessionConflict):
            raise
        except Exception as exc:  # the state holds events the log does not: end the run
            what = f"events {events[0].seq}-{events[-1].seq}" if events else "the row"
            raise StoreError(
                f"could not write {what} of session {self.session_id}: {type(exc).__name__}: {exc}"
            ) from exc
        self._chain = chain
        if session is not None:
            self._row_written, self._row_due = row, now + SESSION_ROW_EVERY_S
            if self._row_timer is not None:
                self._row_timer.cancel()
                self._row_timer = None
        elif self._row_timer is None:
            loop = asyncio.get_running_loop()
            self._row_timer = loop.call_later(self._row_due - now, self._refresh_row_soon)
        if snapshot:
            self._last_snapshot = snapshot[0]
            said = self.state.messages
            note_chunk(self.store, self.session_id, snapshot[0], len(said))
            if isinstance(said, Conversation):
                said.chunk = (self.session_id, snapshot[0], len(said))
        return events

    def _with_own_intent(self, result: Draft, ts: float) -> list[tuple[Draft, float]]:
        """The deferred events and ``result``, timed. A result whose call's intent is still
        deferred (it would be written in the same commit) carries the intent's arguments and
        effect itself and takes the intent's place: an event less a step, and the calls of the
        answer stay in the order asked. Readers take such a result as its own intent. The
        intents after it are of calls that start only now: they are timed now."""
        kind, payload, actor = result
        call_id = payload["call_id"]
        deferred = self._deferred
        for i, ((deferred_kind, intent, _actor), _at) in enumerate(deferred):
            if deferred_kind is EventKind.TOOL_CALL and intent["call_id"] == call_id:
                own = {**payload, "arguments": intent["arguments"], "effect": intent["effect"]}
                later = ((draft, ts) for draft, _at in deferred[i + 1 :])
                return [*deferred[:i], ((kind, own, actor), ts), *later]
        return [*deferred, (result, ts)]

    def _conversation_chunk(self) -> tuple[int | None, str]:
        """What to store of the conversation with a snapshot: the messages said since the
        chunk stored with an earlier one, or (not known: after a restore, or the first time)
        all of them."""
        said = self.state.messages
        chunk = chunk_of(said)
        if chunk is not None and chunk[0] == self.session_id:
            return chunk[1], encode_messages(said[chunk[2] :])
        return None, encode_messages(said)

    async def _set_status(self, status: str, reason: str = "", actor: str = "agent") -> None:
        if self.state.status != status:
            payload = {"status": status, "reason": reason} if reason else {"status": status}
            await self._record((EventKind.STATUS_CHANGED, payload, actor))

    async def _fail(self, exc: BaseException, *, where: str) -> None:
        info = exc.to_dict() if isinstance(exc, JupyterAgentError) else {}
        code = info.get("code", "internal")
        message = redact(f"{type(exc).__name__}: {exc}")
        tb = redact("".join(traceback.format_exception(exc))[-8000:])
        details = {k: v for k, v in info.items() if k not in ("code", "message")}
        await self._record(
            (
                EventKind.ERROR,
                {**details, "code": code, "message": message, "where": where, "traceback": tb},
                "agent",
            ),
            (EventKind.SESSION_FAILED, {"error": {"code": code, "message": message}}, "agent"),
        )

    # -- the loop ----------------------------------------------------------------------------

    async def _go_on(self) -> bool:
        """Run until the session must stop (True), or until a wait was cut short (False)."""
        with anyio.CancelScope() as stretch:  # what interrupt() cancels (see _Interruptible)
            self._stretch = stretch
            try:
                return await self._stretch_of_steps()
            except _Interrupted:
                pass
            finally:
                self._stretch = None
        return await self._at_boundary()  # (outside the scope: nothing here is cut short)

    async def _stretch_of_steps(self) -> bool:
        if not await self._settle_open_calls():
            return True
        if self._schedule_pending() and await self._wait_for_tick():
            return True
        turn_ends = time.perf_counter() + YIELD_EVERY_S
        while not await self._at_boundary():
            if self.state.answered and self._schedule is None:
                # the newest turn is a final answer the log does not end with (a restore to
                # it, or a process that ended before the end was written): it ends the
                # session, as it would have, rather than a new turn paid for again
                result = {"result": self._last_text()}
                await self._record((EventKind.SESSION_FINISHED, result, "agent"))
                return True
            if await self._step():
                return True
            if time.perf_counter() >= turn_ends:
                # steps whose model and tools answer at once never wait: let the other
                # sessions (and the commands that pause or stop this one) have the loop
                await asyncio.sleep(0)
                turn_ends = time.perf_counter() + YIELD_EVERY_S
        return True

    def _schedule_pending(self) -> bool:
        """A scheduled session that answered and now waits for its next tick."""
        return self._schedule is not None and self.state.answered

    async def _wait_for_tick(self) -> bool:
        """Sleep until the next tick and record it; True if the schedule is over (finished)."""
        schedule, state = self._schedule, self.state
        assert schedule is not None
        tick = state.ticks_fired + 1
        if not schedule.has_tick(state.started_at, tick):
            await self._record((EventKind.SESSION_FINISHED, {"result": self._last_text()}, "agent"))
            return True
        # what came while the model answered goes first: a message is recorded and answered
        # now (not a tick later, and not lost with the process), a pause or stop or a limit
        # reached ends the run here, before another tick is set
        if await self._at_boundary():
            return True
        if not state.answered:
            return False
        timer_id = f"tick-{tick}"
        wake_at = state.timers.get(timer_id, schedule.wake_at(state.started_at, tick))
        if timer_id not in state.timers:
            await self._record(
                (
                    EventKind.TIMER_SET,
                    {"timer_id": timer_id, "wake_at": wake_at, "tick": tick},
                    "schedule",
                )
            )
        await self._set_status("sleeping")
        with self._interruptible("tick"):
            await self.clock.sleep_until(wake_at)
        now = self.clock.now()
        fire = schedule.tick_to_fire(state.started_at, tick, now)
        skipped = fire - tick
        text = f"Scheduled check {fire}" + (f" of {schedule.times}" if schedule.times else "")
        text += f", at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC."
        if skipped:
            checks = "check" if skipped == 1 else "checks"
            text += f" {skipped} earlier {checks} fell due while the agent was busy or not running."
        await self._record(
            (
                EventKind.TIMER_FIRED,
                {"timer_id": timer_id, "tick": fire, "skipped": skipped},
                "schedule",
            ),
            (EventKind.MESSAGE, {"text": text}, "schedule"),
            (EventKind.STATUS_CHANGED, {"status": "running"}, "schedule"),
        )
        return False

    def _last_text(self) -> str:
        for m in reversed(self.state.messages):
            if m.role == "assistant":
                return m.content
        return ""

    async def _settle_open_calls(self) -> bool:
        """Deal with calls left without a result, in order; False if the session must wait for
        a person. Calls run one after another, so only the first open call can have been cut
        short (by a crash, or a pause in its sleep): it runs again if that is safe, else a
        person decides. The calls after it never started: they wait behind it while it waits
        for a person, then run as if just asked for (a call that waited for the policy's
        approval never started either)."""
        fresh = False  # the calls from here on never started
        for call in list(self.state.open_calls.values()):
            if call.call_id in self.state.approvals:
                decision = self._take_decision(call.call_id)
                if decision is None:
                    break  # it waits for a person, and the calls after it wait behind it
                await self._apply_decision(call.call_id, call.name, call.arguments, decision)
            elif fresh:
                await self._run_as_policy_says(call.call_id, call.name, call.arguments)
            elif (rule := rule_for(self.state.policy, call.name)) == "deny":
                await self._skip_call(call.call_id, call.name, "the policy does not allow it")
            elif call.effect in _RERUNNABLE and call.name in self.tools and rule == "allow":
                await self._run_call(call.call_id, call.name, call.arguments, rerun=True)
            else:  # a person decides: it may have had an effect, or the policy asks anyway
                reason = "in_doubt" if call.effect not in _RERUNNABLE else "policy"
                await self._record(
                    (
                        EventKind.APPROVAL_REQUESTED,
                        {"call_id": call.call_id, "name": call.name, "reason": reason},
                        "agent",
                    )
                )
                break
            fresh = True
        if self.state.approvals:
            await self._set_status("awaiting_approval")
            return False
        await self._set_status("running")
        return True

    def _take_decision(self, call_id: str, *, awaiting: bool = False) -> Decision | None:
        """The decision on the call's request, if one came; one given for an earlier request
        under the same id (a restore since, and the model asked again) is dropped."""
        decision = self.inbox.take_decision(call_id, awaiting=awaiting)
        if decision is not None and decision.asked not in (None, self.state.approvals[call_id].seq):
            return self.inbox.take_decision(call_id, awaiting=awaiting)  # (what came since)
        return decision

    def _awaited_first(self) -> list[str]:
        """The waiting call a decision lets the session go on from: the first. (A log of an
        older version may ask about several; a decision on a later one waits behind it.)"""
        state = self.state
        first = next((c for c in state.open_calls if c in state.approvals), None)
        return [first] if first is not None else list(state.approvals)

    async def _apply_decision(
        self, call_id: str, name: str, arguments: str, decision: Decision
    ) -> None:
        in_doubt = self.state.approvals[call_id].reason == "in_doubt"
        decided: Draft = (
            EventKind.APPROVAL_DECIDED,
            {
                "call_id": call_id,
                "decision": "approve" if decision.approve else "deny",
                "reason": decision.reason,
            },
            decision.actor,
        )
        if decision.approve:
            await self._record(decided)
            self.inbox.recorded(call_id)
            await self._run_call(call_id, name, arguments, rerun=in_doubt)
            return
        self._defer(decided)  # written with the call's skipped result: one commit, both or none
        why = f" ({decision.reason})" if decision.reason else ""
        if in_doubt:
            await self._skip_call(
                call_id,
                name,
                f"{decision.actor} chose not to run it again{why}. It was interrupted before "
                "its result was recorded, so it may or may not have taken effect.",
            )
        else:
            await self._skip_call(call_id, name, f"{decision.actor} denied it{why}")
        self.inbox.recorded(call_id)

    async def _at_boundary(self) -> bool:
        """Take people's messages and requests; True if the session must stop here."""
        messages = self.inbox.take_messages()
        if messages:
            await self._record(*((EventKind.MESSAGE, {"text": t}, a) for t, a in messages))
        if self.inbox.stop_requested:
            who = self.inbox.stop_requested
            await self._set_status("stopped", f"stopped by {who}", actor=who)
            return True
        if self.inbox.pause_requested:
            who, self.inbox.pause_requested = self.inbox.pause_requested, None
            await self._set_status("paused", f"paused by {who}", actor=who)
            return True
        hit = self.limits.check(self.state)
        if hit is not None:
            await self._record(
                (
                    EventKind.BUDGET_EXCEEDED,
                    {"kind": hit.kind, "limit": hit.limit, "used": hit.used},
                    "agent",
                ),
                (
                    EventKind.STATUS_CHANGED,
                    {"status": "stopped", "reason": f"{hit.kind} limit {hit.limit:g} reached"},
                    "agent",
                ),
            )
            return True
        return False

    async def _step(self) -> bool:
        """One model turn and its tool calls; True when the session is finished."""
        GIVE_WAY()
        step = self.state.steps + 1
        sent = len(self.state.messages)
        started = time.monotonic()
        try:
            request = ModelRequest(
                ConversationView(self.state.messages), self._specs, step, _Observer(self, step)
            )
            with self._interruptible("model"):
                if self._model_not_before is not None:  # a retry's wait a pause cut short
                    due, self._model_not_before = self._model_not_before, None
                    await self.clock.sleep_until(due)
                response = await self.model.complete(request)
        except _Interrupted:
            raise  # no answer recorded: the stretch ends, its boundary pauses or stops it
        except (SessionConflict, StoreError):
            raise  # recording a retry failed: the store is the problem, not the model
        except Exception as exc:
            raise _ModelFailed(str(exc)) from exc
        finally:
            live_text.clear(self.session_id)
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        if self._cut_short():
            # the answer came just as an interrupt did: the step goes on as it would have
            # (shielded from the stretch's cancellation; its waits have scopes of their own),
            # then the stretch ends and its boundary pauses or stops the session
            with anyio.CancelScope(shield=True):
                if await self._act_on(step, sent, response, duration_ms):
                    return True
            raise _Interrupted
        return await self._act_on(step, sent, response, duration_ms)

    async def _act_on(
        self, step: int, sent: int, response: ModelResponse, duration_ms: float
    ) -> bool:
        """Record the model's answer and run the calls it asks for; True when finished."""
        if len(response.tool_calls) > 1:
            response = _unique_call_ids(response)
        drafts = (
            self._response_draft(step, sent, response, duration_ms),
            *self._intent_drafts(response),
        )
        if response.tool_calls and all(
            self._runs_before_recorded(c.name) for c in response.tool_calls
        ):
            self._defer(*drafts)  # written with the first result (see the module's docstring)
        else:
            await self._record(*drafts)
        if not response.tool_calls:
            if self._schedule is not None:
                return await self._wait_for_tick()
            await self._record((EventKind.SESSION_FINISHED, {"result": response.text}, "agent"))
            return True
        # a wait in a call cut short (_Interrupted) ends the stretch: the call stays open (in
        # doubt, or waiting) and is settled on resume
        for call in response.tool_calls:
            await self._run_as_policy_says(call.id, call.name, call.arguments)
        return False

    def _retry_due(self) -> float | None:
        """When the model may be asked again, if the log's last word on it is a retry whose
        wait the provider set (Retry-After) and a pause or a crash cut short. (A backoff of
        our own choosing is not waited out again: a person resumed the session.)"""
        kinds = [EventKind.MODEL_RETRY, EventKind.MODEL_RESPONSE]
        after = max(0, self.state.last_seq - RETRY_LOOKBACK)
        last = collections.deque(
            self.store.iter_events(self.session_id, after=after, kinds=kinds), maxlen=1
        )
        if not last or last[0].kind is not EventKind.MODEL_RETRY:
            return None
        after_s = last[0].payload["error"].get("retry_after_s")
        return None if after_s is None else last[0].ts + float(after_s)

    def _runs_before_recorded(self, name: str) -> bool:
        """A call that may start before its intent is durable: one that changes nothing, so a
        crash that loses it loses nothing (a read-only tool the policy allows). An idempotent
        tool writes (files, the plan): its intent stays first, so a crash leaves it in doubt
        and a restore can put its files back."""
        tool = self.tools.get(name)
        return (
            tool is not None
            and tool.effect is Effect.READ_ONLY
            and rule_for(self.state.policy, name) == "allow"
        )

    async def _run_as_policy_says(self, call_id: str, name: str, arguments: str) -> None:
        rule = rule_for(self.state.policy, name)
        if rule == "allow":
            await self._run_call(call_id, name, arguments)
        elif rule == "deny":
            await self._skip_call(call_id, name, f"the policy does not allow the tool {name}")
        else:
            await self._record(
                (
                    EventKind.APPROVAL_REQUESTED,
                    {"call_id": call_id, "name": name, "reason": "policy"},
                    "agent",
                ),
                (EventKind.STATUS_CHANGED, {"status": "awaiting_approval"}, "agent"),
            )
            decision = await self._await_decision(call_id)
            await self._set_status("running")
            await self._apply_decision(call_id, name, arguments, decision)

    async def _await_decision(self, call_id: str) -> Decision:
        """Wait for a person's decision on a call (a pause or stop cuts the wait short)."""
        take, decision = self._take_decision, None
        try:
            with self._interruptible("approval"):
                # decisions arrive from other threads (a cell, the runtime's command reader)
                while (decision := take(call_id, awaiting=True)) is None:  # noqa: ASYNC110
                    await anyio.sleep(DECISION_POLL_S)
        except _Interrupted:
            if decision is not None:  # taken just as the interrupt came: the next run's
                self.inbox.give_back(call_id, decision)
            raise
        finally:
            self.inbox.stop_awaiting()
        return decision

    async def _skip_call(self, call_id: str, name: str, why: str) -> None:
        await self._record(
            (
                EventKind.TOOL_RESULT,
                {
                    "call_id": call_id,
                    "name": name,
                    "is_error": True,
                    "skipped": True,
                    "output": f"not run: {why}",
                },
                "agent",
            )
        )

    def _response_draft(self, step: int, sent: int, r: ModelResponse, duration_ms: float) -> Draft:
        u = r.usage
        return (
            EventKind.MODEL_RESPONSE,
            {
                "step": step,
                "messages": sent,
                "text": r.text,
                "stop_reason": r.stop_reason,
                "model": r.model,
                "duration_ms": duration_ms,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments} for c in r.tool_calls
                ],
                "usage": {
                    "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens,
                    "cached_tokens": u.cached_tokens,
                    "cost_usd": u.cost_usd,
                },
            },
            "agent",
        )

    def _intent_drafts(self, r: ModelResponse) -> list[Draft]:
        drafts: list[Draft] = []
        for c in r.tool_calls:
            tool = self.tools.get(c.name)
            effect = tool.effect.value if tool else Effect.SIDE_EFFECT.value
            drafts.append(
                (
                    EventKind.TOOL_CALL,
                    {"call_id": c.id, "name": c.name, "arguments": c.arguments, "effect": effect},
                    "agent",
                )
            )
        return drafts

    # -- tools -------------------------------------------------------------------------------

    async def _run_call(
        self, call_id: str, name: str, arguments: str, *, rerun: bool = False
    ) -> None:
        started = time.monotonic()
        if self._deferred:  # its intent is not written yet: write it if the call takes long
            self._watch_call(started)
        try:
            output, error, changes = await self._invoke(call_id, name, arguments)
        finally:
            self._call_started = None
            if self._sleeps:
                self._sleeps.pop(call_id, None)
        payload: dict[str, Any] = {
            "call_id": call_id,
            "name": name,
            "is_error": output.is_error,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            "output": output.text,
        }
        if rerun:
            payload["rerun"] = True
        if error:
            payload["error"] = error
        blobs: list[bytes] = []
        if changes:  # file versions, so that a restore can put the files back
            blobs = [b for c in changes for b in (c.before, c.after) if b is not None]
            payload["files"] = [
                {"path": c.path, "before": _digest(c.before), "after": _digest(c.after)}
                for c in changes
            ]
        if self._cut_short():
            # the tool caught the interrupt meant for a wait in it and went on to an end: its
            # result is recorded as it would have been (shielded from the stretch's
            # cancellation), then the stretch ends
            with anyio.CancelScope(shield=True):
                await self._record_result(payload, output.text, blobs)
            raise _Interrupted
        await self._record_result(payload, output.text, blobs)

    async def _record_result(self, payload: dict[str, Any], text: str, blobs: list[bytes]) -> None:
        if len(text) > BLOB_THRESHOLD:
            digest = await anyio.to_thread.run_sync(self.store.put_blob, text.encode())
            payload["output_blob"] = digest
            payload["output"] = (
                text[: BLOB_THRESHOLD // 2] + f"\n[... output cut: "
                f"{len(text)} characters in all, kept in blob {digest}]"
            )
        await self._record((EventKind.TOOL_RESULT, payload, "agent"), blobs=blobs)

    async def _invoke(
        self, call_id: str, name: str, arguments: str
    ) -> tuple[ToolOutput, str | None, list[FileChange]]:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return ToolOutput(f"unknown tool {name!r}; the tools are: {known}", True), None, []
        try:
            args = tool.validate(arguments)
        except ToolArgsInvalid as exc:
            return ToolOutput(f"invalid arguments for {name}: {exc}", True), None, []
        ctx = ToolContext(
            session_id=self.session_id,
            call_id=call_id,
            workspace=self._workspace(),
            namespace=self.namespace,
            clock=self.clock,
            plan=tuple(self.state.plan),
            set_plan=self._set_plan,
            sleep_until=lambda t: self._sleep_until(call_id, t),
        )
        limit = anyio.fail_after(tool.timeout_s) if tool.timeout_s else nullcontext()
        try:
            with limit:
                return await tool.invoke(args, ctx), None, ctx.file_changes
        except (_Interrupted, SessionConflict, StoreError):
            raise  # a pause, or the store failing under the tool: not the tool's own error
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a tool cannot end the runtime
            if isinstance(exc, BaseExceptionGroup) and exc.subgroup(_Interrupted) is not None:
                raise _Interrupted from exc  # (a wait in one of the tool's tasks, cut short)
            tb = "".join(traceback.format_exception(exc)[-3:])
            return ToolOutput(f"{type(exc).__name__}: {exc}", True), tb, ctx.file_changes

    def _workspace(self) -> Path:
        """The session's workspace folder, made if missing (it may have been removed; looked
        for at most every ``WORKSPACE_CHECK_S``: a stat per tool call is a good share of a
        step's cost)."""
        path, checked = self._workspaces.get(self.state.workspace, (None, 0.0))
        now = time.monotonic()
        if path is None or now - checked > WORKSPACE_CHECK_S:
            path = Path(self.state.workspace)
            if not os.path.isdir(path):
                path.mkdir(parents=True, exist_ok=True)
            self._workspaces[self.state.workspace] = (path, now)
        return path

    async def _set_plan(self, items: Sequence[PlanItem]) -> None:
        plan = [{"step": i.step, "status": i.status} for i in items]
        await self._record((EventKind.PLAN_UPDATED, {"plan": plan}, "agent"))

    async def _sleep_until(self, call_id: str, wake_at: float) -> None:
        """A durable timer: a resumed call keeps the wake time recorded before the crash.

        A call's timers are numbered in the order it sets them (its first keeps the plain
        ``timer-<call>``), so a call run again after a crash meets the same timers in turn:
        those that fired return at once, the one it was in keeps its wake time."""
        n = self._sleeps[call_id] = self._sleeps.get(call_id, 0) + 1
        timer_id = f"timer-{call_id}" if n == 1 else f"timer-{call_id}#{n}"
        if timer_id in self.state.fired_timers:
            return  # it fired before a crash cut the call short: the wait is over
        if timer_id in self.state.timers:
            wake_at = self.state.timers[timer_id]
        else:
            await self._record(
                (
                    EventKind.TIMER_SET,
                    {"timer_id": timer_id, "wake_at": wake_at, "call_id": call_id},
                    "agent",
                )
            )
        await self._set_status("sleeping")
        with self._interruptible("sleep"):
            await self.clock.sleep_until(wake_at)
        await self._record((EventKind.TIMER_FIRED, {"timer_id": timer_id}, "agent"))
        await self._set_status("running")


def _unique_call_ids(response: ModelResponse) -> ModelResponse:
    """The response with a call id that repeats within it made unique (``id-2``): some
    servers send one id for several calls, and each call's result goes back under its id."""
    ids = [c.id for c in response.tool_calls]
    if len(set(ids)) == len(ids):
        return response
    calls, seen = [], set()
    for c in response.tool_calls:
        call_id, n = c.id, 1
        while call_id in seen:
            n += 1
            call_id = f"{c.id}-{n}"  # (the characters every provider takes in an id)
        seen.add(call_id)
        calls.append(c if call_id == c.id else ToolCallRequest(call_id, c.name, c.arguments))
    return dataclasses.replace(response, tool_calls=tuple(calls))


def _digest(data: bytes | None) -> str | None:
    return None if data is None else blob_digest(data)
