"""The ``openai:`` provider: any OpenAI-compatible Chat Completions endpoint.

OpenAI itself, and Moonshot/Kimi, Ollama, vLLM, LM Studio, OpenRouter through their base URL:
``openai:gpt-4.1-mini``, or ``openai:llama3.1@http://localhost:11434/v1`` for a local server.
The key and base URL come from the arguments, else ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``
(as the official SDK reads them).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    secret_header_values,
)
from ._prices import cost_usd

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
}
PARTIAL_INTERVAL_S = 0.05  # streamed text reaches the observer at most 20 times a second


class OpenAIModel(HTTPModel):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Example:
        >>> model = OpenAIModel("llama3.1", base_url="http://localhost:11434/v1", stream=True)
        >>> model.name
        'openai:llama3.1'
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
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not model:
            raise ValueError("name the model, e.g. OpenAIModel('gpt-4.1-mini')")
        self.model, self.stream, self.retry, self._sleep = model, stream, retry, sleep
        self.spec_is_whole = made_by_name(
            api_key=api_key,
            base_url=base_url,
            headers=headers,
            stream=stream,
            retry=retry,
            timeout=timeout,
            http_client=http_client,
        )
        base, key = endpoint(
            base_url=base_url, api_key=api_key, official=OFFICIAL_BASE_URL, env="OPENAI"
        )
        if not key and base == OFFICIAL_BASE_URL:
            raise ConfigError(
                "no OpenAI API key: set OPENAI_API_KEY or pass api_key=..., or "
                "give a base URL for a local server (openai:MODEL@URL)"
            )
        sent = httpx.Headers({"content-type": "application/json"})
        if key:
            sent["authorization"] = f"Bearer {key}"
        sent.update(headers or {})  # the caller's headers win, whatever their case
        self._client = ProviderClient(
            provider="openai",
            base_url=base,
            headers=sent,
            secrets=(key, *secret_header_values(headers)),
            timeout=timeout,
            http_client=http_client,
        )

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> OpenAIModel:
        """From what follows ``openai:``: ``MODEL`` or ``MODEL@BASE_URL``."""
        model, base_url = spec, None
        for scheme in ("@http://", "@https://"):  # a model name may hold '@' itself
            if scheme in spec:
                model, rest = spec.split(scheme, 1)
                base_url = scheme[1:] + rest
        if base_url:
            options.setdefault("base_url", base_url)
        return cls(model, **options)

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request_messages(request.messages),
        }
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _plain(self, body: dict[str, Any], observer: ModelObserver | None) -> ModelResponse:
        data = await self._client.post_json("/chat/completions", body)
        try:
            choice = data["choices"][0]
            message = choice["message"]
            calls = tuple(
                ToolCallRequest(
                    c.get("id") or _new_call_id(),
                    c["function"]["name"],
                    _arguments_text(c["function"].get("arguments")),
                )
                for c in message.get("tool_calls") or ()
            )
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelProtocolError(
                f"openai sent an answer without a message: {json.dumps(data)[:200]}",
                retryable=False,
            ) from exc
        if observer is not None and text:
            observer.partial(text)
        return self._response(
            text, calls, choice.get("finish_reason"), data.get("usage"), data.get("model")
        )

    async def _streamed(
        self, body: dict[str, Any], observer: ModelObserver | None
    ) -> ModelResponse:
        acc = _StreamState(error=self._client.error_in_body)
        async with self._client.stream_sse("/chat/completions", body) as events:
            async for _event, data in events:
                if data.strip() == "[DONE]":
                    acc.done = True
                    break
                acc.add(_json_chunk(data))
                if observer is not None and acc.text_changed(time.monotonic()):
                    observer.partial(acc.text)
        if acc.finish_reason is None and not (acc.done and (acc.text or acc.calls)):
            raise ModelProtocolError("openai's stream ended before the answer was complete")
        if observer is not None and acc.text:
            observer.partial(acc.text)
        return self._response(acc.text, acc.tool_calls(), acc.finish_reason, acc.usage, acc.model)

    def _response(
        self,
        text: str,
        calls: tuple[ToolCallRequest, ...],
        finish: str | None,
        usage: Mapping[str, Any] | None,
        model: str | None,
    ) -> ModelResponse:
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=self._usage(usage),
            stop_reason=_STOP_REASONS.get(finish or "", finish or "end_turn"),
            model=model or self.model,
        )

    def _usage(self, usage: Mapping[str, Any] | None) -> Usage:
        if not usage:  # some compatible servers send none: tokens and cost unknown
            return Usage(cost_usd=None)
        details = usage.get("prompt_tokens_details") or {}
        inp, out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cached = int(details.get("cached_tokens") or 0)
        return Usage(
            input_tokens=inp,
            output_tokens=out,
            cached_tokens=cached,
            cost_usd=cost_usd(self.name, input_tokens=inp, output_tokens=out, cached_tokens=cached),
        )


@dataclass
class _StreamState:
    """Chat-completion chunks folded into one answer."""

    error: Callable[[object], ModelHTTPError]
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    done: bool = False
    calls: list[dict[str, str]] = field(default_factory=list)
    _by_index: dict[int, int] = field(default_factory=dict)
    _shown: str = ""
    _shown_at: float = 0.0

    def add(self, chunk: dict[str, Any]) -> None:
        if chunk.get("error"):
            raise self.error(chunk["error"])
        if chunk.get("object") == "error":  # older vLLM streams its errors this way
            raise self.error(chunk)
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            self.text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                slot = self._slot(call)
                fn = call.get("function") or {}
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += _arguments_text(fn.get("arguments"))
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def _slot(self, call: Mapping[str, Any]) -> dict[str, str]:
        """The call this delta continues, or a new one. Deltas are matched by ``index``, but
        a new ``id`` at a used index is a new call (Ollama sends parallel calls all at index
        0), and a delta without an index is a whole call of its own (older servers)."""
        index, call_id = call.get("index"), call.get("id") or ""
        if isinstance(index, int) and index in self._by_index:
            slot = self.calls[self._by_index[index]]
            if not (call_id and slot["id"] and call_id != slot["id"]):
                return slot
        self.calls.append({"id": "", "name": "", "arguments": ""})
        if isinstance(index, int):
            self._by_index[index] = len(self.calls) - 1
        return self.calls[-1]

    def text_changed(self, now: float) -> bool:
        if self.text != self._shown and now - self._shown_at >= PARTIAL_INTERVAL_S:
            self._shown, self._shown_at = self.text, now
            return True
        return False

    def tool_calls(self) -> tuple[ToolCallRequest, ...]:
        return tuple(
            ToolCallRequest(c["id"] or _new_call_id(), c["name"], c["arguments"])
            for c in self.calls
        )


def _new_call_id() -> str:
    """For servers that send tool calls without an id: the engine keys calls by id."""
    return f"call_{uuid.uuid4().hex[:16]}"


def _arguments_text(value: object) -> str:
    """Arguments as JSON text; some servers send an object instead of a string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _json_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ModelProtocolError(
            f"openai sent a stream line that is not JSON: {data[:200]!r}"
        ) from exc
    if not isinstance(chunk, dict):
        raise ModelProtocolError("openai sent a stream chunk that is not an object")
    return chunk


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": m.content or None}
        if m.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
        return out
    return {"role": m.role, "content": m.content}


def _tool(t: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
    }


def request_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The Chat Completions ``messages`` for a conversation.

    A person's message that arrived while tool calls were still open (told while the session
    waited for an approval) moves after those calls' results: the API wants every ``tool``
    message right after the assistant message that asked for it.
    """
    out: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    waiting: set[str | None] = set()
    for m in messages:
        if m.role == "tool":
            out.append(_message(m))
            waiting.discard(m.tool_call_id)
            if not waiting:
                out += deferred
                deferred = []
        elif waiting and m.role == "user":
            deferred.append(_message(m))
        else:
            out += deferred
            deferred = []
            out.append(_message(m))
            waiting = {c.id for c in m.tool_calls} if m.role == "assistant" else set()
    return out + deferred
