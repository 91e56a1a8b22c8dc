"""What the fake provider plays and keeps: script items, faults, and the requests it received."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .._models._base import ModelResponse
from ._wire import JSONObject, WireName


@dataclass(frozen=True, slots=True)
class Fault:
    """A script item that answers badly, to test a client's retries and error handling.

    - ``status``: answer this HTTP status with the provider's error body (``message`` in it,
      or a stock one), and a ``Retry-After: retry_after`` header when that is set.
    - ``delay_s``: wait this long before answering (to trip a client's timeout); combines with
      everything else, and without anything else answers ``then`` (or an empty reply).
    - ``drop_after``: send this many stream events (bytes of the body, for a non-streaming
      request), then close the connection without ending the answer.
    - ``malformed``: answer 200 with a body that is not JSON; in a stream, one ``data:`` line
      that is not JSON, after the first event, among the events of ``then``.
    - ``then``: the response whose events ``delay_s``, ``drop_after`` and ``malformed`` send.

    Example:
        >>> script = [Fault(status=429, retry_after=0.1), Fault(drop_after=3, then=reply("Hi"))]
    """

    status: int | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    drop_after: int | None = None
    malformed: bool = False
    then: ModelResponse | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        nothing = self.drop_after is None and not (self.delay_s or self.malformed)
        if self.status is None and nothing:
            raise ValueError("a Fault needs status=, delay_s=, drop_after= or malformed=True")
        if self.status is not None:
            self._check_status(self.status)
        elif self.retry_after is not None or self.message is not None:
            raise ValueError("retry_after= and message= go with status=")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError(f"delay_s must be a finite number of seconds >= 0, not {self.delay_s}")
        if self.retry_after is not None and not self.retry_after >= 0:
            raise ValueError(f"retry_after must be >= 0 seconds, not {self.retry_after}")
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError(f"drop_after must be >= 0, not {self.drop_after}")
        if self.drop_after is not None and self.malformed:
            raise ValueError("choose one of drop_after= and malformed=True")
        if self.then is not None and not isinstance(self.then, ModelResponse):
            raise TypeError(f"then= must be a ModelResponse, not {self.then!r}")

    def _check_status(self, status: int) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), not {status}")
        if self.then is not None or self.drop_after is not None or self.malformed:
            raise ValueError(
                "status= answers an error: it cannot also send then=/drop_after=/malformed"
            )


ScriptItem = ModelResponse | Fault
"""One answer of the fake provider: a response (in the asked wire format) or a fault."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One POST the fake provider received: path, headers (lower-cased keys), parsed JSON body,
    which wire format the path asked for, and whether the body asked for a stream."""

    path: str
    headers: dict[str, str]
    body: JSONObject
    wire: WireName
    stream: bool


class Script:
    """The items left to play and the requests received, shared by the server's threads."""

    def __init__(self, items: Iterable[ScriptItem]) -> None:
        listed = list(items)
        for item in listed:
            if not isinstance(item, ModelResponse | Fault):
                raise TypeError(f"a script item is a ModelResponse or a Fault, not {item!r}")
        self._items = deque(enumerate(listed))
        self.size = len(listed)
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    def next_item(self) -> tuple[int, ScriptItem] | None:
        """The next item with its position in the script, or ``None`` when none is left."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._items)
