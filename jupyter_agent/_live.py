"""Live, non-durable views of a running session: the text of the model's answer so far.

Streamed text is shown while it arrives but never written to the log (the log gets the whole
answer once, in ``model_response``). Views subscribe here; the widget coalesces what it sends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

Listener = Callable[["PartialText | None"], None]


@dataclass(frozen=True, slots=True)
class PartialText:
    """The answer to model turn ``step`` as streamed so far."""

    step: int
    text: str


class LiveText:
    """The latest partial answer per session, and who wants to hear about it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, PartialText] = {}
        self._listeners: dict[str, list[Listener]] = {}
        # every change, for a process that runs sessions for another (a kernel's worker)
        self.mirror: Callable[[str, PartialText | None], None] | None = None

    def get(self, session_id: str) -> PartialText | None:
        return self._latest.get(session_id)

    def set(self, session_id: str, step: int, text: str) -> None:
        self._publish(session_id, PartialText(step, text))

    def clear(self, session_id: str) -> None:
        if session_id in self._latest:
            self._publish(session_id, None)

    def subscribe(self, session_id: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every new partial text (``None`` once the answer is whole).

        Returns a function that unsubscribes. Listeners run on the runtime's thread: keep them
        quick and let them hand work elsewhere.
        """
        with self._lock:
            self._listeners.setdefault(session_id, []).append(listener)

        def unsubscribe() -> None:
            with self._lock:
                listeners = self._listeners.get(session_id, [])
                if listener in listeners:
                    listeners.remove(listener)

        return unsubscribe

    def _publish(self, session_id: str, value: PartialText | None) -> None:
        with self._lock:
            if value is None:
                self._latest.pop(session_id, None)
            else:
                self._latest[session_id] = value
            listeners = list(self._listeners.get(session_id, ()))
        for listener in listeners:
            listener(value)
        if self.mirror is not None:
            self.mirror(session_id, value)


live_text = LiveText()
