"""The openai: provider's edges, through httpx.MockTransport (the transport is the seam):
what compatible servers (Ollama, vLLM, OpenRouter) send that OpenAI itself does not."""

from __future__ import annotations

import json

import httpx
import pytest

from jupyter_agent import ConfigError, ModelHTTPError
from jupyter_agent._models._base import Message, ModelRequest, ToolCallRequest
from jupyter_agent._models._http import RetryPolicy
from jupyter_agent._models._openai import OpenAIModel, request_messages
from jupyter_agent._models._prices import cost_usd

KEY = "sk-test-abcdefgh12345678"


def sse(*chunks: object) -> bytes:
    lines = [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks]
    return "".join(lines).encode()


def model(handler, **options) -> OpenAIModel:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    options.setdefault("retry", RetryPolicy(max_attempts=2, base_delay_s=0.0))
    return OpenAIModel("m", base_url="http://test/v1", api_key=KEY, http_client=client, **options)


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


REQUEST = ModelRequest([Message("user", "hi")])


@pytest.mark.anyio
async def test_parallel_calls_sent_at_one_index_stay_separate() -> None:
    body = sse(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "a", "function": {"name": "read", "arguments": '{"p":1}'}}
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "b", "function": {"name": "read", "arguments": '{"p":2}'}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    m = model(lambda req: httpx.Response(200, content=body), stream=True)
    out = await m.complete(REQUEST)
    assert [(c.id, c.name, c.arguments) for c in out.tool_calls] == [
        ("a", "read", '{"p":1}'),
        ("b", "read", '{"p":2}'),
    ]


@pytest.mark.anyio
async def test_arguments_split_across_chunks_join_up() -> None:
    body = sse(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "a", "function": {"name": "read", "arguments": '{"p"'}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        chunk({"tool_calls": [{"index": None, "id": "c", "function": {"name": "ls"}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    out = await model(lambda req: httpx.Response(200, content=body), stream=True).complete(REQUEST)
    assert [(c.id, c.arguments) for c in out.tool_calls] == [("a", '{"p": 1}'), ("c", "")]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_without_an_id_get_one(stream: bool) -> None:
    call = {"type": "function", "function": {"name": "ls", "arguments": {}}}
    if stream:
        body = sse(chunk({"tool_calls": [{"index": 0, **call}]}), chunk({}, "tool_calls"), "[DONE]")
        response = httpx.Response(200, content=body)
    else:
        response = httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [call, call],
                        },
                        "finish_reason": "tool_calls",
                    }
                ]
            },
        )
    out = await model(lambda req: response, stream=stream).complete(REQUEST)
    ids = [c.id for c in out.tool_calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == len(ids)
    assert out.tool_calls[0].arguments == "{}"  # an object sent as arguments becomes text


@pytest.mark.anyio
async def test_an_error_streamed_the_vllm_way_is_an_error_not_an_empty_answer() -> None:
    body = sse({"object": "error", "message": "context too long", "code": 400}, "[DONE]")
    with pytest.raises(ModelHTTPError, match="context too long") as err:
        await model(lambda req: httpx.Response(200, content=body), stream=True).complete(REQUEST)
    assert err.value.status_code == 400 and not err.value.retryable


@pytest.mark.anyio
async def test_a_mid_stream_error_keeps_its_code_and_is_redacted() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(
            200,
            content=sse(
                chunk({"content": "Hel"}),
                {"error": {"code": 402, "message": f"no credit left for {KEY}"}},
            ),
        )

    with pytest.raises(ModelHTTPError) as err:
        await model(handler, stream=True).complete(REQUEST)
    assert err.value.status_code == 402 and len(calls) == 1
    assert KEY not in str(err.value)


@pytest.mark.anyio
async def test_an_error_in_a_200_body_is_that_error() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(200, json={"error": {"code": 403, "message": "moderation"}})

    with pytest.raises(ModelHTTPError, match="moderation") as err:
        await model(handler).complete(REQUEST)
    assert err.value.status_code == 403 and len(calls) == 1


@pytest.mark.anyio
async def test_an_answer_of_the_wrong_shape_is_not_asked_again() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(200, json={"choices": []})

    with pytest.raises(Exception, match="without a message"):
        await model(handler).complete(REQUEST)
    assert len(calls) == 1


def test_a_persons_message_inside_a_tool_call_group_moves_after_the_results() -> None:
    messages = [
        Message("user", "goal"),
        Message(
            "assistant",
            "",
            tool_calls=(ToolCallRequest("a", "ls", "{}"), ToolCallRequest("b", "ls", "{}")),
        ),
        Message("tool", "x", tool_call_id="a", name="ls"),
        Message("user", "told while waiting"),
        Message("tool", "y", tool_call_id="b", name="ls"),
    ]
    roles = [
        (m["role"], m.get("tool_call_id") or m.get("content")) for m in request_messages(messages)
    ]
    assert roles == [
        ("user", "goal"),
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
        ("user", "told while waiting"),
    ]


def test_a_key_with_a_line_break_at_its_end_is_trimmed_and_one_inside_refused() -> None:
    m = OpenAIModel("m", api_key=KEY + "\n")
    assert KEY + "\n" not in repr(m)
    with pytest.raises(ConfigError, match="control character"):
        OpenAIModel("m", api_key="sk-abc\ndef")


@pytest.mark.anyio
async def test_the_callers_authorization_header_wins_and_is_sent_once() -> None:
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get_list("authorization"))
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        )

    m = model(handler, headers={"Authorization": "Bearer sk-or-other-12345678"})
    await m.complete(REQUEST)
    assert seen == [["Bearer sk-or-other-12345678"]]


def test_only_a_date_is_dropped_to_find_a_price() -> None:
    assert cost_usd("openai:gpt-4o-mini-2024-07-18", input_tokens=10**6, output_tokens=0)
    assert cost_usd("openai:o3-pro", input_tokens=10**6, output_tokens=0) is None
    assert cost_usd("openai:o4-mini-deep-research", input_tokens=1, output_tokens=0) is None
