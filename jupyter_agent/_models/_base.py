"""The ``Model`` protocol and the values that cross it.

A model takes the conversation so far and the tools it may call, and answers with text, tool
calls, or both. Providers (``openai:``, ``anthropic:``) translate these neutral values to their
wire formats; the engine never sees a provider's JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A call the model asked for. ``arguments`` is the raw JSON text the model produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one response used; ``cost_usd`` is ``None`` when the price is unknown."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None


NO_USAGE = Usage()  # a response's usage when the model says nothing of it


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation, in a provider-neutral shape.

    ``tool`` messages answer the assistant's call ``tool_call_id``; ``name`` is the tool's name
    there, and the person's identity on a ``user`` message from ``Session.tell``.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about a tool: name, description and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, object]


class ModelObserver(Protocol):
    """What the engine wants to hear while a model works: retries (recorded as events, so none
    is silent) and the text streamed so far (shown live, never written to the log)."""

    async def retrying(self, *, attempt: int, error: Exception, delay_s: float) -> None: ...

    def partial(self, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """The conversation so far and the tools on offer.

    ``step`` is the session's model turn this request is for (1, 2, ...), set by the engine;
    it stays true when older messages are compacted out of ``messages``. ``observer`` hears
    about retries and streamed text (models that do neither may ignore it).
    """

    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    step: int | None = None
    observer: ModelObserver | None = None


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    usage: Usage = NO_USAGE  # frozen: one shared default, not a new one per response
    stop_reason: str = "end_turn"
    model: str = ""


class Model(Protocol):
    """Anything that answers a ``ModelRequest``: a provider, the demo model, a test script."""

    @property
    def name(self) -> str:
        """``provider:model``, as recorded in the session."""
        ...

    async def complete(self, request: ModelRequest) -> ModelResponse: ...


# -- quick constructors, for hot paths: every field given, no defaults --------------------


def new_message(
    role: Role,
    content: str,
    tool_calls: tuple[ToolCallRequest, ...],
    tool_call_id: str | None,
    name: str | None,
    is_error: bool,
) -> Message:
    """``Message(...)`` with every field given, in about half the time: the frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, this sets the slots directly
    (the state folds a message out of every answer and result)."""
    message: Message = _new(Message)
    _m_role(message, role)
    _m_content(message, content)
    _m_tool_calls(message, tool_calls)
    _m_tool_call_id(message, tool_call_id)
    _m_name(message, name)
    _m_is_error(message, is_error)
    return message


def new_tool_call(id: str, name: str, arguments: str) -> ToolCallRequest:
    """``ToolCallRequest(id, name, arguments)``, as ``new_message`` makes a message."""
    call: ToolCallRequest = _new(ToolCallRequest)
    _c_id(call, id)
    _c_name(call, name)
    _c_arguments(call, arguments)
    return call


def new_response(
    text: str,
    tool_calls: tuple[ToolCallRequest, ...],
    usage: Usage,
    stop_reason: str,
    model: str,
) -> ModelResponse:
    """``ModelResponse(...)`` with every field given, as ``new_message`` makes a message (the
    scripted model answers every turn of a test or benchmark with one)."""
    response: ModelResponse = _new(ModelResponse)
    _r_text(response, text)
    _r_tool_calls(response, tool_calls)
    _r_usage(response, usage)
    _r_stop_reason(response, stop_reason)
    _r_model(response, model)
    return response


_new = object.__new__


def _setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    """The slot setters of ``cls``'s fields ``names``, by name (the constructors above give
    every field, so ``names`` must be all of them)."""
    if set(names) != {f.name for f in fields(cls)}:
        raise TypeError(f"the fields of {cls.__name__} are not {', '.join(names)}")
    return tuple(getattr(cls, name).__set__ for name in names)


_m_role, _m_content, _m_tool_calls, _m_tool_call_id, _m_name, _m_is_error = _setters(
    Message, "role", "content", "tool_calls", "tool_call_id", "name", "is_error"
)
_c_id, _c_name, _c_arguments = _setters(ToolCallRequest, "id", "name", "arguments")
_r_text, _r_tool_calls, _r_usage, _r_stop_reason, _r_model = _setters(
    ModelResponse, "text", "tool_calls", "usage", "stop_reason", "model"
)
