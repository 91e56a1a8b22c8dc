"""The Anthropic Messages wire format: ``message`` bodies and the named-event stream.

A stream is ``message_start`` (empty content, input usage), ``ping``, then per content block
``content_block_start`` / ``content_block_delta`` (``text_delta``, or ``input_json_delta`` with
the tool's argument text in pieces, exactly as scripted) / ``content_block_stop``, then
``message_delta`` (stop reason, output tokens) and ``message_stop``.

``Usage.input_tokens`` counts cached tokens too (as OpenAI does); Anthropic reports them apart,
so ``input_tokens`` on this wire is ``input_tokens - cached_tokens`` and
``cache_read_input_tokens`` is ``cached_tokens``.

A non-streaming ``tool_use`` block carries ``input`` as a JSON object, so a scripted argument
text that is not a JSON object cannot be sent there: the fake answers 500 ``api_error`` saying
so (stream the request instead, where the text goes out verbatim).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .._models._base import ModelResponse, ToolCallRequest, Usage
from ._wire import (
    MALFORMED_JSON,
    JSONObject,
    WireError,
    WireName,
    model_name,
    neutral_stop_reason,
    pieces,
    sse,
)

_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class AnthropicWire:
    """``POST /v1/messages``, answered the way api.anthropic.com answers it."""

    name: WireName = "anthropic"
    request_id_header = "request-id"

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        # the API takes either header; the official SDK (2.x) sends the key as a bearer token
        bearer = headers.get("authorization") == f"Bearer {api_key}"
        return bearer or headers.get("x-api-key") == api_key

    def body(self, response: ModelResponse, request: JSONObject, item: int) -> JSONObject:
        content: list[JSONObject] = []
        if response.text:
            content.append({"type": "text", "text": response.text})
        for k, call in enumerate(response.tool_calls):
            block = _tool_block(call, item, k)
            block["input"] = _input_object(call)
            content.append(block)
        return {
            **_message(response, request, item),
            "content": content,
            "stop_reason": _stop_reason(response),
            "usage": _usage(response.usage, response.usage.output_tokens),
        }

    def events(self, response: ModelResponse, request: JSONObject, item: int) -> list[bytes]:
        start = {
            **_message(response, request, item),
            "content": [],
            "stop_reason": None,
            "usage": _usage(response.usage, min(1, response.usage.output_tokens)),
        }
        out = [_event("message_start", message=start), _event("ping")]
        blocks: list[tuple[JSONObject, list[JSONObject]]] = []
        if response.text:
            deltas: list[JSONObject] = [
                {"type": "text_delta", "text": piece} for piece in pieces(response.text)
            ]
            blocks.append(({"type": "text", "text": ""}, deltas))
        for k, call in enumerate(response.tool_calls):
            block = {**_tool_block(call, item, k), "input": {}}
            fragments = ["", *pieces(call.arguments)]
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
            blocks.append((block, deltas))
        for index, (block, deltas) in enumerate(blocks):
            out.append(_event("content_block_start", index=index, content_block=block))
            out += [_event("content_block_delta", index=index, delta=d) for d in deltas]
            out.append(_event("content_block_stop", index=index))
        delta = {"stop_reason": _stop_reason(response), "stop_sequence": None}
        usage = {"output_tokens": response.usage.output_tokens}
        out.append(_event("message_delta", delta=delta, usage=usage))
        out.append(_event("message_stop"))
        return out

    def malformed_event(self) -> bytes:
        return b"event: content_block_delta\ndata: " + MALFORMED_JSON + b"\n\n"

    def error(self, status: int, message: str, request_id: str) -> JSONObject:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        kind = _ERROR_TYPES.get(status, fallback)
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        }


def _event(name: str, **fields: object) -> bytes:
    return sse({"type": name, **fields}, event=name)


def _message(response: ModelResponse, request: JSONObject, item: int) -> JSONObject:
    return {
        "id": f"msg_fake{item}",
        "type": "message",
        "role": "assistant",
        "model": model_name(response, request),
        "stop_sequence": None,
    }


def _tool_block(call: ToolCallRequest, item: int, k: int) -> JSONObject:
    return {"type": "tool_use", "id": call.id or f"toolu_{item}_{k}", "name": call.name}


def _input_object(call: ToolCallRequest) -> JSONObject:
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise WireError(
            500,
            f"the fake provider cannot send the arguments of tool call {call.name!r} "
            f"({call.arguments[:80]!r}) in a non-streaming Anthropic answer: `input` must be "
            "a JSON object there; stream the request to receive the text verbatim",
        )
    return value


def _stop_reason(response: ModelResponse) -> str:
    reason = neutral_stop_reason(response)
    return _STOP_REASONS.get(reason, reason)


def _usage(usage: Usage, output_tokens: int) -> JSONObject:
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_tokens),
        "output_tokens": output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }
