"""The OpenAI Chat Completions wire format: ``chat.completion`` bodies and chunk streams.

Shapes follow the API reference and what the official ``openai`` SDK parses: a non-streaming
answer is one ``chat.completion``; a stream is ``chat.completion.chunk`` events (role first,
text in pieces, each tool call opened with its id and name then its argument text in pieces,
a last chunk with ``finish_reason``, the usage chunk when ``stream_options.include_usage`` is
set) ended by ``data: [DONE]``. Tool-call argument text is sent exactly as scripted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from .._models._base import ModelResponse, ToolCallRequest, Usage
from ._wire import (
    MALFORMED_JSON,
    JSONObject,
    WireName,
    model_name,
    neutral_stop_reason,
    pieces,
    sse,
)

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}
_ERRORS = {  # status: (type, code), as OpenAI answers them
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class OpenAIWire:
    """``POST /v1/chat/completions``, answered the way api.openai.com answers it."""

    name: WireName = "openai"
    request_id_header = "x-request-id"

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("authorization") == f"Bearer {api_key}"

    def body(self, response: ModelResponse, request: JSONObject, item: int) -> JSONObject:
        message: JSONObject = {"role": "assistant", "content": response.text or None}
        if response.tool_calls:
            message["tool_calls"] = [
                {
                    "id": _call_id(call, item, k),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for k, call in enumerate(response.tool_calls)
            ]
        message["refusal"] = None
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": _finish_reason(response),
            "logprobs": None,
        }
        return {
            **_envelope(response, request, item, "chat.completion"),
            "choices": [choice],
            "usage": _usage(response.usage),
        }

    def events(self, response: ModelResponse, request: JSONObject, item: int) -> list[bytes]:
        envelope = _envelope(response, request, item, "chat.completion.chunk")
        with_usage = _include_usage(request)
        if with_usage:
            envelope["usage"] = None

        def chunk(delta: JSONObject, finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return sse({**envelope, "choices": [choice]})

        text = response.text
        out = [chunk({"role": "assistant", "content": "" if text else None, "refusal": None})]
        out += [chunk({"content": piece}) for piece in pieces(text)]
        for k, call in enumerate(response.tool_calls):
            opening = {
                "index": k,
                "id": _call_id(call, item, k),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            out.append(chunk({"tool_calls": [opening]}))
            out += [
                chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
                for piece in pieces(call.arguments)
            ]
        out.append(chunk({}, _finish_reason(response)))
        if with_usage:
            out.append(sse({**envelope, "choices": [], "usage": _usage(response.usage)}))
        out.append(sse("[DONE]"))
        return out

    def malformed_event(self) -> bytes:
        return b"data: " + MALFORMED_JSON + b"\n\n"

    def error(self, status: int, message: str, request_id: str) -> JSONObject:
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        kind, code = _ERRORS.get(status, (fallback, None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _envelope(response: ModelResponse, request: JSONObject, item: int, kind: str) -> JSONObject:
    return {
        "id": f"chatcmpl-fake{item}",
        "object": kind,
        "created": int(time.time()),
        "model": model_name(response, request),
        "system_fingerprint": None,
    }


def _call_id(call: ToolCallRequest, item: int, k: int) -> str:
    return call.id or f"call_{item}_{k}"


def _finish_reason(response: ModelResponse) -> str:
    reason = neutral_stop_reason(response)
    return _FINISH_REASONS.get(reason, reason)


def _include_usage(request: JSONObject) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _usage(usage: Usage) -> JSONObject:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
