"""What both wire formats share: the ``Wire`` interface, SSE framing, and how answers are cut.

A wire renders a neutral ``ModelResponse`` as one provider's JSON (``body``) or server-sent
events (``events``), and a failure as that provider's error body. The server picks the wire from
the request's path and never looks inside the JSON it sends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal, Protocol

from .._models._base import ModelResponse

WireName = Literal["openai", "anthropic"]
JSONObject = dict[str, object]

MALFORMED_JSON = b'{"id": "fake", "object": '
"""A body that is not JSON: a truncated object, as a proxy cutting an answer would leave it."""

TEXT_PIECES = 3
"""Streamed text and tool-call argument text each arrive in up to this many pieces."""


class WireError(Exception):
    """A script item that cannot be rendered in the asked wire format; answered as ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Wire(Protocol):
    """One provider's wire format, as the fake server speaks it."""

    name: WireName
    request_id_header: str

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        """Whether the (lower-cased) request headers carry ``api_key`` the provider's way."""
        ...

    def body(self, response: ModelResponse, request: JSONObject, item: int) -> JSONObject:
        """The non-streaming answer; ``item`` is the script position (for stable ids)."""
        ...

    def events(self, response: ModelResponse, request: JSONObject, item: int) -> list[bytes]:
        """The streaming answer as encoded SSE events; the last one ends the stream."""
        ...

    def malformed_event(self) -> bytes:
        """An SSE event whose data line is not JSON."""
        ...

    def error(self, status: int, message: str, request_id: str) -> JSONObject:
        """The provider's error body for ``status``."""
        ...


def sse(data: JSONObject | str, *, event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line, one ``data:`` line, a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def pieces(text: str, parts: int = TEXT_PIECES) -> list[str]:
    """``text`` split into up to ``parts`` consecutive, non-empty pieces (none for "")."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def neutral_stop_reason(response: ModelResponse) -> str:
    """The response's stop reason, ``tool_use`` when it calls tools but kept the default."""
    if response.stop_reason == "end_turn" and response.tool_calls:
        return "tool_use"
    return response.stop_reason


def model_name(response: ModelResponse, request: JSONObject) -> str:
    """The model to report: the response's own, else the one the request asked for."""
    asked = request.get("model")
    return response.model or (asked if isinstance(asked, str) and asked else "fake-model")
