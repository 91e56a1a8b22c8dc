"""``Session``: a handle on one session in the store, running here or not.

Everything a handle reports comes from the store, so a handle made in another process (or after
a crash) shows the same thing. Controls reach a session running in this process through its
inbox, taken at the next step boundary.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._branch import check_point, fork_session
from ._clock import SystemClock
from ._engine import record_message, record_outside, record_stop
from ._errors import ConfigError, InvalidSessionState
from ._events import Event, EventKind
from ._give_way import GIVE_WAY
from ._identity import current_identity
from ._inbox import Decision, decided_already
from ._live import PartialText, live_text
from ._runtime import get_runtime
from ._state import TERMINAL, ApprovalRequest, SessionState, load_state
from ._store import SessionRow, SqliteStore
from ._store._leases import LIVE_STATUSES, SessionLeased
from ._timeline import TimelineRow, counted, format_rows, timeline
from ._tools._context import PlanItem
from ._worker import current_worker

if TYPE_CHECKING:
    from ._agent import Agent
    from ._widget import SessionWidget


WAIT_SLICE_S = 0.05  # how often wait() looks for a call waiting for a person
SENT_SETTLE_S = 5.0  # how long wait() waits for another process to act on a control
RECORDED_WAIT_S = 5.0  # how long a decision waits for the run it resumed to record it
RESTORE_TIMEOUT_S = 120.0  # a running session's pause, then the rewind of its files
STARTED_WAIT_S = 2.0  # how long resume() waits for the run it launched to say it runs
STARTED_POLL_S = 0.002
FINISHING_WAIT_S = 3.0  # how long a control waits for a run that has come to rest to end


class Timeline(list[TimelineRow]):
    """The session's timeline rows; ``str()`` gives the same text as ``jupyter-agent show``."""

    def __str__(self) -> str:
        return "\n".join(format_rows(self))


class EventList(list[Event]):
    """The session's events, oldest first; ``to_pandas()`` when pandas is installed."""

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None

        return pd.DataFrame([e.to_dict() for e in self])


class Session:
    """A session in the store. Made by ``Agent.start``, ``open_session`` or ``sessions()``."""

    def __init__(
        self,
        store: SqliteStore,
        session_id: str,
        *,
        agent_factory: Callable[[], Agent] | None = None,
    ) -> None:
        self.store = store
        self.id = store.get_session(session_id).id
        self._agent_factory = agent_factory
        self._sent: tuple[int, float] | None = None  # (last_seq, when) of a control sent away

    def __repr__(self) -> str:
        row = self.row
        return (
            f"<Session {row.id} {row.name!r} {row.status}: {counted(row.steps, 'step')}, "
            f"{counted(row.tool_calls, 'tool call')}>"
        )

    # -- what it is --------------------------------------------------------------------------

    @property
    def row(self) -> SessionRow:
        """The session's row in the store: status, owner, model, running totals."""
        return self.store.get_session(self.id)

    @property
    def name(self) -> str:
        return self.row.name or ""

    @property
    def status(self) -> str:
        """running, paused, awaiting_approval, sleeping, done, failed, interrupted or stopped."""
        return self.row.status

    @property
    def state(self) -> SessionState:
        """The fold of the session's events (snapshot + tail)."""
        return load_state(self.store, self.id)

    @property
    def events(self) -> EventList:
        return EventList(self.store.iter_events(self.id))

    def timeline(self) -> Timeline:
        """One row per model turn, tool call, message and change; ``print()`` it to read it."""
        return Timeline(timeline(self.store.iter_events(self.id)))

    def widget(self) -> SessionWidget:
        """The live widget (one per session in this process); a notebook shows it for ``s``."""
        from ._widget import widget_for

        return widget_for(self)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> Any:
        from ._widget import session_mimebundle  # views load only when a notebook asks

        return session_mimebundle(self)

    @property
    def result(self) -> str | None:
        """The model's final answer once the session is done."""
        return self.state.result

    @property
    def plan(self) -> list[PlanItem]:
        return self.state.plan

    @property
    def pending_approvals(self) -> list[ApprovalRequest]:
        return list(self.state.approvals.values())

    @property
    def partial_text(self) -> PartialText | None:
        """The model's answer as streamed so far (live only; the log gets the whole answer)."""
        return live_text.get(self.id)

    @property
    def running_here(self) -> bool:
        """Whether a run of this process is running the session. A run that has come to rest
        (paused, ended) is still writing its last words for a moment: it is waited for
        (``FINISHING_WAIT_S`` at most), so a person who saw the session paused can resume or
        release it at once."""
        runtime = get_runtime()
        if not runtime.is_running(self.id):
            return False
        inbox = runtime.inbox(self.id)
        if inbox.resting and not runtime.on_loop_thread():
            inbox.wait_while_resting(FINISHING_WAIT_S)
        return runtime.is_running(self.id)

    # -- what a person does ------------------------------------------------------------------

    def tell(self, text: str) -> None:
        """Send the agent a message, recorded with your name and read at the next step boundary.

        A session running in another process gets it through the store; one that is paused
        or waiting gets it recorded at once, and reads it on resume.
        """
        if not text.strip():
            raise ValueError("tell() needs a non-empty message")
        self._require_open("tell")
        actor = current_identity()
        if self._send_elsewhere("tell", {"text": text}, actor):
            return
        get_runtime().inbox(self.id).post_message(
            text,
            actor,
            otherwise=lambda: record_message(
                self.store,
                self.id,
                text,
                actor=actor,
                clock=SystemClock(),
                runtime_id=get_runtime().id,
            ),
        )
        get_runtime().interrupt(self.id, only="tick")  # a scheduled agent hears it now

    def pause(self) -> None:
        """Pause at the next step boundary, cutting short a model call or sleep in progress.

        An ``interrupted`` session (its process ended) is marked paused at once: it then stays
        put until resumed, where ``resume_interrupted()`` would run it on."""
        self._require_open("pause")
        actor = current_identity()
        if self._send_elsewhere("pause", {}, actor):
            return
        if not self.running_here and self.status == "interrupted":
            record_outside(
                self.store,
                self.id,
                EventKind.STATUS_CHANGED,
                {"status": "paused", "reason": f"paused by {actor}"},
                actor=actor,
                clock=SystemClock(),
                runtime_id=get_runtime().id,
            )
            return
        self._require_running_here("pause")
        get_runtime().ask(self.store, self.id, "pause", actor)

    def stop(self) -> None:
        """Stop: at the next step boundary, or at once if nothing runs it. It runs no more,
        unless a restore takes it back to before the stop."""
        self._require_open("stop")
        actor = current_identity()
        if self._send_elsewhere("stop", {}, actor):
            return
        if not self.running_here:
            record_stop(
                self.store, self.id, actor=actor, clock=SystemClock(), runtime_id=get_runtime().id
            )
            get_runtime().forget(self.id)  # a session paused here: let its lease go
            return
        get_runtime().ask(self.store, self.id, "stop", actor)

    def resume(self) -> Session:
        """Run the session again in this process from what the store holds."""
        self._require_open("resume")
        if self.running_here:
            return self
        runtime = get_runtime()
        holder = runtime.owner_elsewhere(self.store, self.id)
        if holder is not None:
            status = self.status
            if status == "awaiting_approval":  # it runs there, waiting for a decision
                return self
            if status == "paused":  # idle there: ask it to go on
                self._send("resume", {}, current_identity())
                return self
            worker = current_worker()
            if worker is not None and worker.runtime_id == holder and status in LIVE_STATUSES:
                return self  # it runs in this kernel's worker: as if here
            owner = self.store.get_runtime(holder)
            assert owner is not None
            raise SessionLeased(self.id, owner)
        before = self.row.last_seq
        if runtime.relaunch(self.id):  # paused or waiting here: the agent it ran with goes on
            self._until_started(before)
            return self
        if self._agent_factory is None:
            raise InvalidSessionState(
                "this handle cannot run the session; use open_session(id, tools=[...]) to resume it"
            )
        agent = self._agent_factory()
        if agent.worker:  # the run is the worker's: wait() waits until it shows in the log
            self._sent = (before, time.monotonic())
            agent._launch(self.id)
            return self
        agent._launch(self.id)
        self._until_started(before)
        return self

    def _until_started(self, before: int) -> None:
        """Wait for the run just launched here to write that it runs (or to end), so that
        ``status`` right after ``resume()`` says so; ``STARTED_WAIT_S`` at most."""
        runtime = get_runtime()
        task = runtime.task(self.id)
        if task is None or runtime.on_loop_thread():  # (waiting there would hold the run up)
            return
        GIVE_WAY.give_back()  # in a kernel, the cell waiting here lets the agents run
        deadline = time.monotonic() + STARTED_WAIT_S
        while not task.done() and time.monotonic() < deadline:
            row = self.row
            if row.last_seq != before or row.status in LIVE_STATUSES:
                return  # (a row left 'running' by a dead holder writes nothing new at first)
            time.sleep(STARTED_POLL_S)

    def release(self) -> None:
        """Let go of a session paused or waiting here, so another process may resume it.

        (This process keeps a session it paused until it exits, so that nobody else runs it
        meanwhile; controls from elsewhere still reach it through the store.) A session this
        kernel's worker holds is let go there.
        """
        if self.running_here:
            raise InvalidSessionState(f"session {self.id} is running here: pause or stop it first")
        worker, row = current_worker(), self.row
        if worker is not None and row.runtime_id and worker.runtime_id == row.runtime_id:
            if row.status in LIVE_STATUSES or row.status == "awaiting_approval":
                raise InvalidSessionState(
                    f"session {self.id} is running in the worker: pause or stop it first"
                )
            self._send("release", {}, current_identity())
            return
        get_runtime().forget(self.id)

    def fork(
        self,
        at: int | None = None,
        *,
        name: str | None = None,
        workspace: str | Path | None = None,
    ) -> Session:
        """A new session that branches off after event ``at`` (default: the newest); this one
        is untouched. The fork is paused: ``tell`` it something and ``resume`` it.

        It works in this session's workspace, or, given ``workspace`` (a new folder), in a
        copy whose files are as they were at the fork point.

        Example:
            >>> f = s.fork(at=42, name="try the other fix"); f.tell("use a cache"); f.resume()
        """
        point = self.row.last_seq if at is None else at
        fork_id = fork_session(
            self.store,
            self.id,
            point,
            actor=current_identity(),
            clock=SystemClock(),
            name=name,
            workspace=workspace,
        )
        parent_agent = self._agent_factory

        def fork_agent() -> Agent:  # the parent's tools and model, a namespace of its own
            assert parent_agent is not None
            agent = copy.copy(parent_agent())
            agent.namespace = {}
            return agent

        return Session(self.store, fork_id, agent_factory=fork_agent if parent_agent else None)

    def restore(self, at: int) -> bool:
        """Rewind this session to right after event ``at``: its state, plan and conversation
        become what they were then, and files the file tools wrote since are put back. Nothing
        is deleted: the events after ``at`` stay in the log. The session is left paused.

        A session running here is paused first, then rewound. One held by another live process
        is rewound there (paused first if it runs), through the store: this returns at once.
        Returns True when the session was rewound here, False when the restore was sent on.
        """
        check_point(self.store, self.id, at, verb="restore")
        actor = current_identity()
        runtime = get_runtime()
        if not self.running_here and runtime.owner_elsewhere(self.store, self.id):
            row = self.row
            if at == row.last_seq and row.status not in LIVE_STATUSES:  # refused there too
                raise ValueError(f"session {self.id} is already at event {at}: nothing to restore")
            self._send("restore", {"at": at}, actor)
            return False
        done = runtime.restore(self.store, self.id, at, actor)
        GIVE_WAY.give_back()  # the engine must come to rest first: let it run
        done.result(timeout=RESTORE_TIMEOUT_S)
        return True

    def approve(self, call_id: str, *, run_here: bool = True) -> None:
        """Let a waiting call run (for an in-doubt call: run it again).

        The process that runs the session acts on it. If none does, this handle runs it here
        when it can (``wait()`` for it in a script: the run ends with the process); with
        ``run_here=False``, or a handle that cannot, the decision waits in the store for the
        process that resumes the session."""
        self._decide(call_id, Decision(True, current_identity()), run_here=run_here)

    def deny(self, call_id: str, reason: str = "", *, run_here: bool = True) -> None:
        """Skip a waiting call; the model is told it was not run, and why (see ``approve``
        for where it is acted on)."""
        self._decide(call_id, Decision(False, current_identity(), reason), run_here=run_here)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the session stops running (here, or in another live process) or waits
        for a person; return its status."""
        task = get_runtime().task(self.id)
        GIVE_WAY.give_back()  # a cell waiting on its agents lets them run
        deadline = None if timeout is None else time.monotonic() + timeout
        if task is not None and task.done() and not self.running_here:
            task = None  # a run here that ended: the session may run elsewhere now
        if task is None:  # it may run in another process (this kernel's worker): watch the row
            while self._busy_elsewhere():
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"session {self.id} still running after {timeout} s")
                time.sleep(WAIT_SLICE_S)
        while task is not None:
            slice_s = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            try:
                task.result(max(0.0, min(WAIT_SLICE_S, slice_s)))
                break
            except FutureTimeout:
                pass
            if get_runtime().inbox(self.id).rests_on_a_person():  # a call waits inside the
                break  # running session, and no decision on it has come yet
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"session {self.id} still running after {timeout} s") from None
        return self.status

    def _busy_elsewhere(self) -> bool:
        """Whether another live process runs the session, or has yet to act on a control this
        handle sent it (for at most ``SENT_SETTLE_S``): a ``resume().wait()`` waits for the run
        it asked for, not for the pause before it. If the process that held it is gone, the
        store is swept first, so the status says so."""
        row = self.row
        if self._sent is not None:
            seq, at = self._sent
            if row.last_seq > seq or time.monotonic() - at > SENT_SETTLE_S:
                self._sent = None
        if self._sent is None and row.status not in LIVE_STATUSES:
            return False
        if get_runtime().owner_elsewhere(self.store, self.id) is None:
            if row.status in LIVE_STATUSES and not self.running_here:
                self.store.sweep(now=time.time())  # its process died: mark it interrupted
            self._sent = None
            return False
        return True

    def _decide(self, call_id: str, decision: Decision, *, run_here: bool = True) -> None:
        pending = {a.call_id: a for a in self.pending_approvals}
        if call_id not in pending:
            listed = ", ".join(sorted(pending)) or "none"
            raise ValueError(
                f"no call {call_id!r} waits for approval in session {self.id} (waiting: {listed})"
            )
        # it answers this request: not another under the same id after a restore
        decision = dataclasses.replace(decision, asked=pending[call_id].seq)
        earlier = get_runtime().inbox(self.id).in_flight(call_id, decision.asked)
        if earlier is not None:  # the run here acts on that one; it is not recorded yet
            when = "it at its next step"
            raise ValueError(decided_already(self.id, call_id, earlier.approve, when=when))
        queued = self.store.queued_decision(self.id, call_id, decision.asked)
        if queued is not None:  # left by another client (the sidebar, another kernel)
            raise ValueError(
                decided_already(self.id, call_id, queued.verb == "approve", queued.actor)
            )
        verb = "approve" if decision.approve else "deny"
        args = {"call_id": call_id, "reason": decision.reason, "asked": decision.asked}
        if self._send_elsewhere(verb, args, decision.actor):
            return
        inbox = get_runtime().inbox(self.id)
        if inbox.post_decision(call_id, decision):
            return  # the run here takes it
        # nobody runs it: the decision is kept in the store (for whoever resumes it, if this
        # handle cannot), and the run started here takes it from there first of all; it is
        # in the log before this returns, so a process that ends at once loses nothing
        self.store.send_command(self.id, verb, args, actor=decision.actor)
        if not run_here:
            return
        try:
            self.resume()
        except (InvalidSessionState, ConfigError) as exc:
            if not self.running_here:  # (running: housekeeping took the command meanwhile)
                kept = "the decision is kept in the store for the process that resumes it"
                raise type(exc)(f"{exc} ({kept})") from exc
        deadline = time.monotonic() + RECORDED_WAIT_S
        GIVE_WAY.give_back()  # (a cell deciding lets the agents' loop record it)
        while inbox.in_flight(call_id, decision.asked) is not None:
            if time.monotonic() >= deadline:
                break  # (a store that stays locked: the run goes on trying)
            time.sleep(0.002)

    def _send_elsewhere(self, verb: str, args: Mapping[str, object], actor: str) -> bool:
        """If another live process runs the session, leave it a command; True if sent. (A run
        here that is coming to rest is not waited for: this process holds the session either
        way, and its inbox takes what it is given.)"""
        runtime = get_runtime()
        if runtime.is_running(self.id) or runtime.owner_elsewhere(self.store, self.id) is None:
            return False
        self._send(verb, args, actor)
        return True

    def _send(self, verb: str, args: Mapping[str, object], actor: str) -> None:
        """Leave a command in the store; this kernel's worker takes it at once if it holds the
        session (another process at its next housekeeping round)."""
        row = self.row
        self._sent = (row.last_seq, time.monotonic())
        self.store.send_command(self.id, verb, args, actor=actor)
        worker = current_worker()
        if worker is not None and worker.runtime_id == row.runtime_id:
            worker.poke(str(self.store.path.resolve()))

    def _require_open(self, verb: str) -> None:
        status = self.status
        if status in TERMINAL:
            more = ""
            if verb in ("resume", "tell"):  # what does go on from a finished session
                more = " (a fork of it goes on from its end; a restore takes it back to an event)"
            raise InvalidSessionState(f"cannot {verb} session {self.id}: it is {status}{more}")

    def _require_running_here(self, verb: str) -> None:
        self._require_open(verb)
        if not self.running_here:
            raise InvalidSessionState(
                f"cannot {verb} session {self.id}: it is not running in this process "
                f"(status {self.status})"
            )
