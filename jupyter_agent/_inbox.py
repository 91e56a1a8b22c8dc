"""A session's mailbox in this process: what people send it while (or before) it runs.

The notebook's thread writes; the engine reads at its next step boundary. ``active`` says
whether an engine of this process will still read the box; it changes only under ``lock``, so
a message or decision is either taken by the running engine or handled by the sender (recorded
at once, or the session resumed), never left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer to a waiting call: ``approve`` runs it, otherwise it is skipped."""

    approve: bool
    actor: str
    reason: str = ""
    asked: int | None = None  # the approval_requested event it answers (None: whichever)


class Inbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)  # active or resting changed
        self.active = False
        # the run has come to rest (paused, ended) and is writing its last words: a control
        # that needs it gone waits for it (``Session.running_here``)
        self.resting = False
        self.pause_requested: str | None = None  # who asked
        self.stop_requested: str | None = None
        self._messages: list[tuple[str, str]] = []
        self._decisions: dict[str, Decision] = {}
        self._taken: dict[str, Decision] = {}  # taken by the running engine, not yet recorded
        self._awaited: str | None = None  # the call the running engine waits on a person for
        self._requests: set[int] = set()  # pause and stop commands applied, left open till done
        self._asking: list[Future[int]] = []  # those given here, being written to the store

    def post_message(self, text: str, actor: str, *, otherwise: Callable[[], None]) -> None:
        """Queue a message for the running engine, or, if none runs, call ``otherwise()``.

        ``otherwise`` runs under the lock, so no engine can start between the check and it.
        """
        with self.lock:
            if self.active:
                self._messages.append((text, actor))
            else:
                otherwise()

    def in_flight(self, call_id: str, asked: int | None) -> Decision | None:
        """A decision on request ``asked`` of ``call_id`` that the engine running here will act
        on: queued for it, or taken and not yet recorded (see ``recorded``)."""
        with self.lock:
            if not self.active:
                return None  # nobody here will take it: a new one goes (and resumes the run)
            for decision in (self._decisions.get(call_id), self._taken.get(call_id)):
                if decision is not None and decision.asked == asked:
                    return decision
            return None

    def post_decision(self, call_id: str, decision: Decision) -> bool:
        """Queue a decision; returns whether a running engine will take it. A later decision
        on the same request than one still queued is dropped: the first given is the one."""
        with self.lock:
            earlier = self._decisions.get(call_id)
            if earlier is None or earlier.asked != decision.asked:
                self._decisions[call_id] = decision
            return self.active

    def has_messages(self) -> bool:
        return bool(self._messages)  # (a list's truth is read atomically)

    def take_messages(self) -> list[tuple[str, str]]:
        with self.lock:
            taken, self._messages = self._messages, []
        return taken

    def take_decision(self, call_id: str, *, awaiting: bool = False) -> Decision | None:
        """The decision on ``call_id``, if one came. With ``awaiting``, the engine waits for
        it: until it takes one, the session rests on a person (see ``rests_on_a_person``)."""
        with self.lock:
            decision = self._decisions.pop(call_id, None)
            self._awaited = call_id if awaiting and decision is None else None
            if decision is not None:
                self._taken[call_id] = decision
            return decision

    def give_back(self, call_id: str, decision: Decision) -> None:
        """A decision the engine took and will not act on now (its wait was cut short): the
        next run takes it, unless a newer one came meanwhile."""
        with self.lock:
            self._taken.pop(call_id, None)
            self._decisions.setdefault(call_id, decision)

    def recorded(self, call_id: str) -> None:
        """The engine recorded its decision on ``call_id`` (or dropped it)."""
        with self.lock:
            self._taken.pop(call_id, None)

    def stop_awaiting(self) -> None:
        with self.lock:
            self._awaited = None

    def rests_on_a_person(self) -> bool:
        """Whether the running engine waits for a decision that has not come: not once it
        has been posted, though the engine may not have taken it yet (``Session.wait``)."""
        with self.lock:
            return self._awaited is not None and self._awaited not in self._decisions

    def take_decisions(self) -> dict[str, Decision]:
        """Every decision queued, taken out (for a run that another process makes)."""
        with self.lock:
            taken, self._decisions = self._decisions, {}
        return taken

    def has_decision(self, call_ids: Iterable[str]) -> bool:
        with self.lock:
            return any(c in self._decisions for c in call_ids)

    def activate(self) -> bool:
        """Mark an engine as running; False if one already is."""
        with self.lock:
            if self.active:
                return False
            self.active, self.resting = True, False
            self._changed.notify_all()
            self.pause_requested = self.stop_requested = None
            self._taken.clear()  # (an ended run's: in_flight reads them only while one runs)
            return True

    def deactivate_if_idle(
        self, waiting_calls: Iterable[str]
    ) -> tuple[bool, list[tuple[str, str]]]:
        """At the end of a run: stop being active unless there is still something to do.

        Returns ``(done, messages)``: ``messages`` were sent after the last boundary and must
        still be recorded; ``done`` is False when a decision for a waiting call arrived, so the
        engine should run again.
        """
        with self.lock:
            messages, self._messages = self._messages, []
            again = any(c in self._decisions for c in waiting_calls)
            if not messages and not again:
                self.active = self.resting = False
                self._changed.notify_all()
            return not again and not messages, messages

    def deactivate(self) -> None:
        with self.lock:
            self.active = self.resting = False
            self._changed.notify_all()

    def rest(self, resting: bool = True) -> None:
        """The run has come to rest (its last status is being written), or runs again."""
        with self.lock:
            self.resting = resting
            self._changed.notify_all()

    def wait_while_resting(self, timeout: float) -> None:
        """Wait, ``timeout`` at most, until a run that has come to rest has ended (or runs
        again)."""
        with self.lock:
            self._changed.wait_for(lambda: not (self.active and self.resting), timeout)

    def applied_before(self, command_id: int, *, still_open: bool) -> bool:
        """Whether a pause or stop command was applied here in an earlier round (the store
        gives it again while it is open); it is forgotten once it is not."""
        with self.lock:
            if command_id not in self._requests:
                if still_open:
                    self._requests.add(command_id)
                return False
            if not still_open:
                self._requests.discard(command_id)
            return True

    def asking(self, written: Future[int]) -> None:
        """A pause or stop given here, whose command is being written (its id to come)."""
        with self.lock:
            self._asking.append(written)

    def take_asking(self) -> list[Future[int]]:
        with self.lock:
            asking, self._asking = self._asking, []
            return asking

    def requests(self) -> list[int]:
        """The pause and stop commands applied here and left open (when the run has ended,
        they are done, acted on or moot: for the store to close, then ``closed``)."""
        with self.lock:
            return sorted(self._requests)

    def closed(self, command_ids: Iterable[int]) -> None:
        """Forget commands the store has closed (only then: until it has, a round or a new
        run that reads them again must know them)."""
        with self.lock:
            self._requests.difference_update(command_ids)


def decided_already(
    session_id: str, call_id: str, approve: bool, by: str = "", *, when: str = "that when it runs"
) -> str:
    """What a second decision on a request is told: the first given is the one."""
    done = "approved" if approve else "denied"
    who = f" (by {by})" if by else ""
    head = f"call {call_id!r} of session {session_id} is {done} already{who}"
    return f"{head}; the session acts on {when}"
