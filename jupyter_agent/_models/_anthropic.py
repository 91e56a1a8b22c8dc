"""The ``anthropic:`` provider: Claude through the Messages API (``POST /v1/messages``).

``anthropic:claude-sonnet-4-5``, or ``anthropic:claude-sonnet-4-5@http://127.0.0.1:8080`` for a
proxy or a local fake. The key and base URL come from the arguments, else ``ANTHROPIC_API_KEY``
/ ``ANTHROPIC_BASE_URL`` (as the official SDK reads them).

Neutral messages become Anthropic's alternating turns: system messages go to ``system``, tool
results become ``tool_result`` blocks of a user turn, and neighbours of the same role merge into
one turn. One attempt (the request and, when streaming, the whole stream) is retried as a unit.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar, Unpack

import anyio
import httpx

from .._errors import ConfigError, ModelHTTPError, ModelProtocolError
from ._base import (
    Message,
    ModelObserver,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
    ToolSpec,
    Usage,
)
from ._http import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    HTTPModel,
    ProviderClient,
    RetryPolicy,
    endpoint,
    made_by_name,
)
from ._prices import cost_usd

T = TypeVar("T")

OFFICIAL_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
PARTIAL_INTERVAL_S = 0.05  # streamed text reaches the observer at most 20 times a second

# A spec's base URL starts at "@http(s)://", so "@" may appear in a model name (Vertex style).
_SPEC = re.compile(r"(?P<model>.*?)@(?P<base_url>https?://.+)")
# Anthropic's error types and the HTTP status each stands for (an `error` event has no status).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_SECRET_HEADER = re.compile(r"authorization|key|token|secret", re.I)


class AnthropicOptions(TypedDict, total=False):
    """The keyword options of ``AnthropicModel``, as ``from_spec`` takes them."""

    api_key: str | None
    base_url: str | None
    headers: Mapping[str, str] | None
    stream: bool
    max_tokens: int
    retry: RetryPolicy
    timeout: httpx.Timeout
    http_client: httpx.AsyncClient | None
    sleep: Callable[[float], Awaitable[None]]


DEFAULT_MAX_TOKENS = 8192


class AnthropicModel(HTTPModel):
    """Claude behind Anthropic's Messages API, named ``anthropic:<model>``.

    ``headers`` go with every request (e.g. ``anthropic-beta``); a base URL other than the
    official one may do without a key. ``http_client`` (e.g. with ``httpx.MockTransport``) and
    ``sleep`` (how retries wait) are the seams tests plug into.

    Example:
        >>> model = AnthropicModel("claude-sonnet-4-5", api_key="sk-ant-...", stream=True)
        >>> model.name
        'anthropic:claude-sonnet-4-5'
    """

    official_base_url = OFFICIAL_BASE_URL

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not model:
            raise ValueError("name the model, e.g. AnthropicModel('claude-sonnet-4-5')")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, not {max_tokens!r}")
        self.model, self.stream, self.max_tokens = model, stream, max_tokens
        self.retry, self._sleep = retry, sleep
        self.spec_is_whole = (
            made_by_name(
                api_key=api_key,
                base_url=base_url,
                headers=headers,
                stream=stream,
                retry=retry,
                timeout=timeout,
                http_client=http_client,
            )
            and max_tokens == DEFAULT_MAX_TOKENS
        )
        base, key = endpoint(
            base_url=base_url, api_key=api_key, official=OFFICIAL_BASE_URL, env="ANTHROPIC"
        )
        if key is None and base == OFFICIAL_BASE_URL:
            raise ConfigError(
                "no Anthropic API key: set ANTHROPIC_API_KEY or pass api_key=..., or "
                "give a base URL for a proxy or local server (anthropic:MODEL@URL)"
            )
        sent = httpx.Headers({"anthropic-version": API_VERSION, "content-type": "application/json"})
        if key:
            sent["x-api-key"] = key
        sent.update(headers or {})
        secrets = (key, *(v for k, v in sent.items() if _SECRET_HEADER.search(k)))
        self._client = ProviderClient(
            provider="anthropic",
            base_url=base,
            headers=sent,
            secrets=secrets,
            timeout=timeout,
            http_client=http_client,
        )

    @classmethod
    def from_spec(cls, spec: str, **options: Unpack[AnthropicOptions]) -> AnthropicModel:
        """From what follows ``anthropic:``: ``MODEL`` or ``MODEL@BASE_URL``.

        >>> AnthropicModel.from_spec("claude-haiku-4-5@http://127.0.0.1:8080").base_url
        'http://127.0.0.1:8080'
        """
        match = _SPEC.fullmatch(spec.strip())
        model = match["model"] if match else spec.strip()
        if not model:
            raise ConfigError("name the model after anthropic:, e.g. anthropic:claude-sonnet-4-5")
        if match:
            options.setdefault("base_url", match["base_url"])
        return cls(model, **options)

    @property
    def name(self) -> str:
        return f"anthropic:{self.model}"

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens}
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        if system.strip():
            body["system"] = system
        body["messages"] = request_messages(request.messages)
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        if self.stream:
            body["stream"] = True
        return body

    async def _plain(self, body: dict[str, Any], observer: ModelObserver | None) -> ModelResponse:
        data = await self._client.post_json(MESSAGES_PATH, body)
        if data.get("type") == "error":
            raise self._error(data)
        content = data.get("content")
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            raise ModelProtocolError(
                f"anthropic sent an answer without content blocks: {json.dumps(data)[:200]}"
            )
        text = _text(content)
        calls = tuple(_call(b) for b in content if b.get("type") == "tool_use")
        if observer is not None and text:
            observer.partial(text)
        return self._response(text, calls, data.get("stop_reason"), data.get("usage"), data)

    async def _streamed(
        self, body: dict[str, Any], observer: ModelObserver | None
    ) -> ModelResponse:
        state = _StreamState()
        async with self._client.stream_sse(MESSAGES_PATH, body) as events:
            try:
                async for event, data in events:
                    payload = _json_event(data)
                    kind = str(payload.get("type") or event)
                    if kind == "error":
                        raise self._error(payload)
                    state.add(kind, payload)
                    if observer is not None and state.text_changed(time.monotonic()):
                        observer.partial(state.shown)
            finally:  # an error leaves the event reader suspended: close it here, not at GC
                if isinstance(events, AsyncGenerator):
                    await events.aclose()
        if not state.stopped:
            raise ModelProtocolError("anthropic's stream ended before message_stop (cut short)")
        text = _text(state.blocks())
        if observer is not None and text and text != state.shown:
            observer.partial(text)
        calls = state.tool_calls()
        return self._response(text, calls, state.stop_reason, state.usage, state.message)

    def _response(
        self,
        text: str,
        calls: tuple[ToolCallRequest, ...],
        stop_reason: object,
        usage: object,
        message: Mapping[str, Any],
    ) -> ModelResponse:
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=self._usage(_mapping(usage)),
            stop_reason=stop_reason if isinstance(stop_reason, str) else "end_turn",
            model=str(message.get("model") or self.model),
        )

    def _usage(self, usage: Mapping[str, Any]) -> Usage:
        """Input counts every prompt token: cache reads and writes included."""
        if not usage:  # a compatible server may send none: tokens and cost unknown
            return Usage(cost_usd=None)
        cached = _tokens(usage, "cache_read_input_tokens")
        written = _tokens(usage, "cache_creation_input_tokens")
        inp = _tokens(usage, "input_tokens") + cached + written
        out = _tokens(usage, "output_tokens")
        cost = cost_usd(
            self.name,
            input_tokens=inp,
            output_tokens=out,
            cached_tokens=cached,
            cache_write_tokens=written,
        )
        return Usage(input_tokens=inp, output_tokens=out, cached_tokens=cached, cost_usd=cost)

    def _error(self, payload: Mapping[str, Any]) -> ModelHTTPError:
        """An ``error`` the provider sent in place of an answer, with the status it stands for."""
        error = payload.get("error")
        error = error if isinstance(error, Mapping) else {}
        kind = str(error.get("type") or "unknown_error")
        message = self._client.redact(f"anthropic sent {kind}: {error.get('message') or kind}")
        return ModelHTTPError(message, status_code=_ERROR_STATUS.get(kind, 500))


@dataclass
class _StreamState:
    """The Messages API's server-sent events folded into one answer."""

    message: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    stopped: bool = False
    shown: str = ""
    _blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    _arguments: dict[int, str] = field(default_factory=dict)
    _shown_at: float = float("-inf")

    def add(self, kind: str, event: Mapping[str, Any]) -> None:
        match kind:
            case "message_start":
                self.message = _field(event, "message", dict)
                self.usage.update(_mapping(self.message.get("usage")))
            case "content_block_start":
                block = _field(event, "content_block", dict)
                self._blocks[_field(event, "index", int)] = dict(block)
            case "content_block_delta":
                self._delta(_field(event, "index", int), _field(event, "delta", dict))
            case "message_delta":
                delta, usage = _mapping(event.get("delta")), _mapping(event.get("usage"))
                self.stop_reason = delta.get("stop_reason") or self.stop_reason
                self.usage.update({k: v for k, v in usage.items() if v is not None})
            case "message_stop":
                self.stopped = True
        # ping, content_block_stop and event types added later change nothing

    def _delta(self, index: int, delta: Mapping[str, Any]) -> None:
        block = self._blocks.get(index)
        if block is None:
            raise ModelProtocolError(
                "anthropic sent a delta for a content block it never started", retryable=False
            )
        if delta.get("type") == "text_delta":
            block["text"] = str(block.get("text") or "") + _field(delta, "text", str)
        elif delta.get("type") == "input_json_delta":
            partial = _field(delta, "partial_json", str)
            self._arguments[index] = self._arguments.get(index, "") + partial
        # thinking, signature and citation deltas are not part of the neutral answer

    def blocks(self) -> list[dict[str, Any]]:
        return [block for _, block in sorted(self._blocks.items())]

    def tool_calls(self) -> tuple[ToolCallRequest, ...]:
        """Arguments exactly as streamed (even invalid: the engine answers the model with the
        error); a call streamed without any argument text keeps its starting ``input``."""
        return tuple(
            _call(block, self._arguments.get(index) or None)
            for index, block in sorted(self._blocks.items())
            if block.get("type") == "tool_use"
        )

    def text_changed(self, now: float) -> bool:
        if now - self._shown_at < PARTIAL_INTERVAL_S:
            return False
        text = _text(self.blocks())
        if text == self.shown:
            return False
        self.shown, self._shown_at = text, now
        return True


def request_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The Messages API ``messages`` for a conversation (public for inspection and tests).

    System messages are left out (they go to ``system``); neighbours of the same role merge, and
    in a user turn the tool results come first, as the API requires.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        blocks = _blocks(message)
        role = "assistant" if message.role == "assistant" else "user"
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return turns


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "system":
        return []
    if m.role == "tool":
        # the API refuses an error result without content
        content = m.content or ("the tool failed without a message" if m.is_error else "")
        return [
            {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": content,
                "is_error": m.is_error,
            }
        ]
    blocks: list[dict[str, Any]] = []
    if m.content.strip():
        blocks.append({"type": "text", "text": m.content})
    if m.role == "assistant":
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
            for c in m.tool_calls
        ]
    return blocks


def _input(arguments: str) -> dict[str, Any]:
    """The recorded argument text as an object; ``{}`` when it is not one (never fail)."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _tool(t: ToolSpec) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "input_schema": t.parameters}


def _text(blocks: Sequence[Mapping[str, Any]]) -> str:
    return "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")


def _call(block: Mapping[str, Any], arguments: str | None = None) -> ToolCallRequest:
    if arguments is None:
        arguments = json.dumps(block.get("input") or {})
    return ToolCallRequest(_field(block, "id", str), _field(block, "name", str), arguments)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _field(data: Mapping[str, Any], key: str, kind: type[T]) -> T:
    """``data[key]`` when it is a ``kind``, else the answer is unreadable."""
    value = data.get(key)
    if not isinstance(value, kind):
        raise ModelProtocolError(
            f"anthropic sent {key!r} that is not a {kind.__name__}", retryable=False
        )
    return value


def _json_event(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ModelProtocolError(
            f"anthropic sent a stream line that is not JSON: {data[:200]!r}"
        ) from exc
    if not isinstance(event, dict):
        raise ModelProtocolError("anthropic sent a stream event that is not an object")
    return event
