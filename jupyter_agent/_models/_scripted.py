"""``ScriptedModel``: a model that plays a script you write, for testing your own agents.

Each turn of the script is what the model answers at that point of the conversation: a
``ModelResponse``, a value built with ``reply``, ``call``, ``calls`` or ``call_raw``, or a
function of the ``ModelRequest``. The turn played is the request's ``step`` (counted from 0), or
for a request built by hand without one, the number of assistant messages already
in the request, so the model is stateless: a session resumed in a new process, with a fresh
``ScriptedModel``, plays on from where it stopped.

Example:
    >>> from jupyter_agent.testing import ScriptedModel, call, calls, reply
    >>> model = ScriptedModel([
    ...     call("read_file", path="notes.md"),
    ...     calls(call("python", code="1 + 1"), call("list_files"), text="Two at once."),
    ...     reply("All done."),
    ... ])
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence

from .._errors import ModelError
from .._events import reused_encoder
from ._base import NO_USAGE, ModelRequest, ModelResponse, new_response, new_tool_call

REQUESTS_KEPT = 1000  # see ScriptedModel.requests

TurnFunction = Callable[[ModelRequest], ModelResponse | Awaitable[ModelResponse]]
"""A turn computed from the request: return (or await to) the response."""

Turn = ModelResponse | str | TurnFunction
"""One turn of a script; a plain string is short for ``reply(text)``."""


def reply(text: str) -> ModelResponse:
    """A final answer: text and no tool calls, which ends the run."""
    return ModelResponse(text=text, stop_reason="end_turn")


def call(name: str, /, **arguments: object) -> ModelResponse:
    """A turn calling tool ``name`` with ``arguments`` (sent as JSON text).

    The call id is filled in when the turn is played: ``call_<turn>_<k>``.
    """
    return call_raw(name, _DUMPS(arguments))


_DUMPS = reused_encoder(json.JSONEncoder())  # ``json.dumps``, without a new encoder per call


def call_raw(name: str, arguments: str, /) -> ModelResponse:
    """A call with the argument text exactly as given, e.g. invalid JSON to test the engine."""
    return new_response("", (new_tool_call("", name, arguments),), NO_USAGE, "tool_use", "")


def calls(*turns: ModelResponse, text: str = "") -> ModelResponse:
    """One turn making every tool call of ``turns`` (built with ``call``), with optional text."""
    merged = tuple(c for turn in turns for c in turn.tool_calls)
    if not merged:
        raise ValueError("calls() needs at least one call(...)")
    return ModelResponse(text=text, tool_calls=merged, stop_reason="tool_use")


def _turn(request: ModelRequest) -> int:
    """The 0-based turn: from the engine's step number, else by counting assistant messages."""
    if request.step is not None:
        return request.step - 1
    return sum(1 for m in request.messages if m.role == "assistant")


class ScriptedModel:
    """A ``Model`` answering from a script; public, for tests of your own tools and agents.

    ``turns`` is a list of ``Turn`` (turn N answers step N + 1, or a request with N assistant
    messages in it) or one ``TurnFunction`` used for every turn. Past the end of the list the
    model answers ``reply("done")``, so a run always ends; with ``strict=True`` it raises
    ``ModelError`` instead, to catch a script shorter than the run. Tool calls without an id
    get ``call_<turn>_<k>``; ``model`` is filled in with ``name``. The requests received are
    kept in ``requests`` (in this process only), for assertions: all of them up to
    ``REQUESTS_KEPT * 2``, then the newest ``REQUESTS_KEPT``, so that a scripted agent left
    running for days does not keep every request it was sent.

    Example:
        >>> model = ScriptedModel([call("shell", command="ls"), "Listed the files."])
        >>> model.name
        'scripted'
    """

    def __init__(
        self,
        turns: Sequence[Turn] | TurnFunction,
        *,
        name: str = "scripted",
        strict: bool = False,
    ) -> None:
        if isinstance(turns, str | ModelResponse):
            raise TypeError("turns must be a list of turns or a function; wrap one turn in [...]")
        self._turns = turns
        self._name = name
        self._strict = strict
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    def __getstate__(self) -> dict[str, object]:
        """A copy sent to another process (a worker) takes the script, not the requests (they
        hold this process's sessions)."""
        return {**self.__dict__, "requests": []}

    async def complete(self, request: ModelRequest) -> ModelResponse:
        said = self.requests
        said.append(request)
        if len(said) > 2 * REQUESTS_KEPT:
            del said[:-REQUESTS_KEPT]
        turn = _turn(request)
        played = self._turn(turn)
        if isinstance(played, str):
            response = reply(played)
        elif isinstance(played, ModelResponse):
            response = played
        else:
            result = played(request)
            if type(result) is ModelResponse:
                response = result
            else:
                response = await result if inspect.isawaitable(result) else result
        return self._finish(response, turn)

    def _turn(self, turn: int) -> Turn:
        if callable(self._turns):
            return self._turns
        if turn < len(self._turns):
            return self._turns[turn]
        if self._strict:
            raise ModelError(
                f"the script of model {self._name!r} has {len(self._turns)} turns; "
                f"turn {turn + 1} was asked for (add turns, or drop strict=True)"
            )
        return reply("done")

    def _finish(self, response: ModelResponse, turn: int) -> ModelResponse:
        if not isinstance(response, ModelResponse):
            raise TypeError(f"a scripted turn must give a ModelResponse, not {response!r}")
        calls = response.tool_calls
        if response.model and type(calls) is tuple and all(c.id for c in calls):
            return response
        # built directly: ``dataclasses.replace`` looks up the fields on every call
        ids = tuple(
            [
                c if c.id else new_tool_call(f"call_{turn}_{k}", c.name, c.arguments)
                for k, c in enumerate(calls)
            ]
        )
        r = response
        return new_response(r.text, ids, r.usage, r.stop_reason, r.model or self._name)
