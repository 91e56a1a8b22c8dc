"""The fake provider speaks OpenAI's and Anthropic's wire formats over real HTTP on 127.0.0.1:
the official SDKs read its answers, and its faults look to a client like the real ones."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.types import Message, MessageParam, RawMessageStreamEvent, ToolUseBlock
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from jupyter_agent._fake_provider import FakeProvider, Fault
from jupyter_agent._models._base import ModelResponse, ToolCallRequest, Usage
from jupyter_agent._models._scripted import call_raw, reply

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CLAUDE_USER: list[MessageParam] = [{"role": "user", "content": "hi"}]
BODY: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY: dict[str, object] = {**BODY, "stream": True}
PARALLEL = ModelResponse(
    text="Reading both.",
    tool_calls=(
        ToolCallRequest("call_a", "read_file", '{"path": "notes.md"}'),
        ToolCallRequest("", "list_files", '{"dir": "src", "deep": true}'),
    ),
    usage=Usage(input_tokens=120, output_tokens=15, cached_tokens=100),
    stop_reason="tool_use",
)
BROKEN_ARGS = '{"path": "a.txt", oops'


def openai_client(fake: FakeProvider, *, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=max_retries)


def anthropic_client(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    )


def url(fake: FakeProvider, wire: str) -> str:
    if wire == "openai":
        return f"{fake.openai_base_url}/chat/completions"
    return f"{fake.anthropic_base_url}/v1/messages"


def post(
    fake: FakeProvider,
    wire: str,
    body: dict[str, object],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    return httpx.post(url(fake, wire), json=body, headers=headers, timeout=timeout)


def function_calls(message: ChatCompletionMessage) -> list[tuple[str, str, str]]:
    """``(id, name, arguments)`` of each function call in an OpenAI message."""
    return [
        (c.id, c.function.name, c.function.arguments)
        for c in message.tool_calls or []
        if isinstance(c, ChatCompletionMessageFunctionToolCall)
    ]


def tool_uses(message: Message) -> list[ToolUseBlock]:
    return [block for block in message.content if isinstance(block, ToolUseBlock)]


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """``(event, data)`` of each server-sent event in ``raw``."""
    events = []
    for block in raw.split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields.get("event"), fields["data"]))
    return events


# OpenAI ------------------------------------------------------------------------------------


def test_openai_sdk_reads_a_text_answer() -> None:
    answer = ModelResponse(text="Hello!", usage=Usage(input_tokens=12, output_tokens=3))
    with FakeProvider([answer]) as fake, openai_client(fake) as client:
        completion = client.chat.completions.create(model="gpt-test", messages=USER)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
    assert completion.usage.total_tokens == 15


def test_openai_sdk_reads_parallel_tool_calls_with_usage() -> None:
    with FakeProvider([PARALLEL]) as fake, openai_client(fake) as client:
        completion = client.chat.completions.create(model="gpt-test", messages=USER)
    choice = completion.choices[0]
    assert function_calls(choice.message) == [
        ("call_a", "read_file", '{"path": "notes.md"}'),
        ("call_0_1", "list_files", '{"dir": "src", "deep": true}'),
    ]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Reading both."
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


def test_openai_sdk_stream_accumulates_text_tool_calls_and_usage() -> None:
    with (
        FakeProvider([PARALLEL]) as fake,
        openai_client(fake) as client,
        client.chat.completions.stream(
            model="gpt-test", messages=USER, stream_options={"include_usage": True}
        ) as stream,
    ):
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Reading both."
    assert [(name, args) for _, name, args in function_calls(message)] == [
        ("read_file", '{"path": "notes.md"}'),
        ("list_files", '{"dir": "src", "deep": true}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 15


def test_openai_stream_splits_text_and_arguments_into_pieces() -> None:
    with FakeProvider([PARALLEL]) as fake, openai_client(fake) as client:
        chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and deltas[0].content == ""
    assert sum(1 for d in deltas if d.content) > 1
    fragments = [
        (t.index, t.function.arguments or "" if t.function else "")
        for d in deltas
        for t in d.tool_calls or []
    ]
    assert len(fragments) > 4 and {i for i, _ in fragments} == {0, 1}
    assert "".join(a for i, a in fragments if i == 1) == '{"dir": "src", "deep": true}'
    assert all(c.usage is None for c in chunks), "no usage chunk unless include_usage"


def test_openai_wire_matches_the_sdk_types_exactly() -> None:
    with FakeProvider([PARALLEL, PARALLEL]) as fake:
        plain = post(fake, "openai", BODY)
        streamed = post(fake, "openai", {**STREAM_BODY, "stream_options": {"include_usage": True}})
    ChatCompletion.model_validate(plain.json())
    assert plain.headers["x-request-id"].startswith("req_")
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate_json(data) for _, data in events[:-1]]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


def test_openai_stream_sends_broken_arguments_verbatim() -> None:
    with (
        FakeProvider([call_raw("write_file", BROKEN_ARGS)]) as fake,
        openai_client(fake) as client,
    ):
        chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    arguments = [
        t.function.arguments or "" if t.function else ""
        for c in chunks
        for t in c.choices[0].delta.tool_calls or []
    ]
    assert "".join(arguments) == BROKEN_ARGS


# Anthropic ---------------------------------------------------------------------------------


def test_anthropic_sdk_reads_text_and_tool_use() -> None:
    with FakeProvider([PARALLEL]) as fake, anthropic_client(fake) as client:
        message = client.messages.create(model="claude-test", max_tokens=100, messages=CLAUDE_USER)
    assert [b.text for b in message.content if b.type == "text"] == ["Reading both."]
    assert [(b.id, b.name, b.input) for b in tool_uses(message)] == [
        ("call_a", "read_file", {"path": "notes.md"}),
        ("toolu_0_1", "list_files", {"dir": "src", "deep": True}),
    ]
    assert message.stop_reason == "tool_use" and message.model == "claude-test"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 100)
    assert message.usage.output_tokens == 15


def test_anthropic_sdk_stream_gives_the_final_message() -> None:
    with (
        FakeProvider([PARALLEL]) as fake,
        anthropic_client(fake) as client,
        client.messages.stream(model="claude-test", max_tokens=100, messages=CLAUDE_USER) as s,
    ):
        streamed_text = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed_text == "Reading both."
    assert [b.input for b in tool_uses(final)] == [
        {"path": "notes.md"},
        {"dir": "src", "deep": True},
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 15)


def test_anthropic_wire_matches_the_sdk_types_exactly() -> None:
    adapter: pydantic.TypeAdapter[object] = pydantic.TypeAdapter(RawMessageStreamEvent)
    with FakeProvider([PARALLEL, PARALLEL]) as fake:
        plain = post(fake, "anthropic", BODY)
        streamed = post(fake, "anthropic", STREAM_BODY)
    Message.model_validate(plain.json())
    assert plain.headers["request-id"].startswith("req_")
    events = sse_events(streamed.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    for name, data in events:
        assert json.loads(data)["type"] == name
        if name != "ping":  # the SDK's union leaves out pings, which it skips
            adapter.validate_json(data)


def test_anthropic_stream_sends_broken_arguments_verbatim() -> None:
    with FakeProvider([call_raw("write_file", BROKEN_ARGS)]) as fake:
        streamed = post(fake, "anthropic", STREAM_BODY)
    deltas = [
        json.loads(d)["delta"] for n, d in sse_events(streamed.text) if n == "content_block_delta"
    ]
    assert "".join(d["partial_json"] for d in deltas) == BROKEN_ARGS


def test_anthropic_non_stream_refuses_arguments_that_are_not_an_object() -> None:
    with (
        FakeProvider([call_raw("write_file", BROKEN_ARGS)]) as fake,
        anthropic_client(fake) as client,
        pytest.raises(anthropic.InternalServerError, match="stream the request"),
    ):
        client.messages.create(model="m", max_tokens=10, messages=CLAUDE_USER)


# Requests, keys, the end of the script ------------------------------------------------------


def test_requests_are_recorded_with_path_headers_and_body() -> None:
    with FakeProvider([reply("a"), reply("b")]) as fake:
        with openai_client(fake) as client:
            client.chat.completions.create(model="gpt-test", messages=USER)
        with (
            anthropic_client(fake) as other,
            other.messages.stream(model="claude-test", max_tokens=5, messages=CLAUDE_USER) as s,
        ):
            s.get_final_message()
        first, second = fake.requests
    assert (first.path, first.wire, first.stream) == ("/v1/chat/completions", "openai", False)
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.body == {"model": "gpt-test", "messages": USER}
    assert (second.path, second.wire, second.stream) == ("/v1/messages", "anthropic", True)
    assert second.headers["authorization"] == "Bearer sk-ant-test"  # how the 2.x SDK sends it
    assert second.body["max_tokens"] == 5


def test_remaining_counts_the_items_left() -> None:
    with FakeProvider([reply("a"), reply("b")]) as fake:
        assert fake.remaining == 2
        post(fake, "openai", BODY)
        assert fake.remaining == 1


def test_wrong_openai_key_gets_401_and_plays_nothing() -> None:
    with FakeProvider([reply("ok")], api_key="sk-right") as fake:
        with openai_client(fake) as client, pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="m", messages=USER)
        assert caught.value.code == "invalid_api_key"
        assert fake.remaining == 1
        with openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-right") as right:
            completion = right.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "ok"


def test_wrong_anthropic_key_gets_401_authentication_error() -> None:
    with FakeProvider([reply("ok")], api_key="sk-ant-right") as fake:
        with (
            anthropic_client(fake) as client,
            pytest.raises(anthropic.AuthenticationError) as caught,
        ):
            client.messages.create(model="m", max_tokens=5, messages=CLAUDE_USER)
        assert fake.remaining == 1
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "authentication_error"


def test_anthropic_key_is_also_accepted_as_x_api_key() -> None:
    with FakeProvider([reply("ok")], api_key="sk-ant-right") as fake:
        wrong = post(fake, "anthropic", BODY, headers={"x-api-key": "sk-ant-wrong"})
        right = post(fake, "anthropic", BODY, headers={"x-api-key": "sk-ant-right"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid x-api-key"
    assert right.json()["content"] == [{"type": "text", "text": "ok"}]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_exhausted_script_answers_500(wire: str) -> None:
    with FakeProvider([]) as fake:
        response = post(fake, wire, BODY)
    assert response.status_code == 500
    assert "script is exhausted" in response.text


def test_unknown_path_answers_404_and_plays_nothing() -> None:
    with FakeProvider([reply("ok")]) as fake:
        response = httpx.post(fake.anthropic_base_url + "/v1/complete", json={})
        assert (response.status_code, fake.remaining, fake.requests) == (404, 1, [])


# Faults ----------------------------------------------------------------------------------


def test_openai_status_fault_is_the_sdks_typed_error() -> None:
    with (
        FakeProvider([Fault(status=429, message="slow down")]) as fake,
        openai_client(fake) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.chat.completions.create(model="m", messages=USER)
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.message.endswith("slow down")
    assert caught.value.request_id is not None


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
    ],
)
def test_anthropic_status_fault_is_the_sdks_typed_error(
    status: int, error: type[anthropic.APIStatusError], kind: str
) -> None:
    with (
        FakeProvider([Fault(status=status)]) as fake,
        anthropic_client(fake) as client,
        pytest.raises(error) as caught,
    ):
        client.messages.create(model="m", max_tokens=5, messages=CLAUDE_USER)
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == kind


def test_retry_after_header_reaches_the_client() -> None:
    with FakeProvider([Fault(status=503, retry_after=2)]) as fake:
        response = post(fake, "openai", BODY)
    assert (response.status_code, response.headers["retry-after"]) == (503, "2")
    assert response.json()["error"]["type"] == "server_error"


def test_openai_sdk_retries_a_429_then_reads_the_answer() -> None:
    script = [Fault(status=429, retry_after=0.01), reply("second time lucky")]
    with FakeProvider(script) as fake, openai_client(fake, max_retries=1) as client:
        completion = client.chat.completions.create(model="m", messages=USER)
        assert len(fake.requests) == 2
    assert completion.choices[0].message.content == "second time lucky"


def test_delay_then_answers_late() -> None:
    with FakeProvider([Fault(delay_s=0.2, then=reply("late"))]) as fake:
        started = time.monotonic()
        response = post(fake, "anthropic", BODY)
    assert time.monotonic() - started >= 0.2
    assert response.json()["content"][0]["text"] == "late"


def test_delay_trips_the_clients_read_timeout() -> None:
    with (
        FakeProvider([Fault(delay_s=1.0, then=reply("too late"))]) as fake,
        pytest.raises(httpx.ReadTimeout),
    ):
        post(fake, "openai", BODY, timeout=0.1)


def test_close_ends_a_delay_at_once() -> None:
    fake = FakeProvider([Fault(delay_s=30)]).start()
    errors: list[Exception] = []

    def request() -> None:
        try:
            post(fake, "openai", BODY)
        except httpx.HTTPError as exc:
            errors.append(exc)

    client = threading.Thread(target=request)
    client.start()
    while not fake.requests:
        time.sleep(0.01)
    started = time.monotonic()
    fake.close()
    client.join(5)
    assert time.monotonic() - started < 1.0
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError)


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_drop_after_cuts_the_stream_short(wire: str) -> None:
    received: list[str] = []
    with (
        FakeProvider([Fault(drop_after=3, then=PARALLEL)]) as fake,
        httpx.Client() as client,
        client.stream("POST", url(fake, wire), json=STREAM_BODY) as response,
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
    ):
        received.extend(line for line in response.iter_lines() if line.startswith("data:"))
    assert len(received) == 3
    assert "[DONE]" not in received and "message_stop" not in "".join(received)


def test_drop_after_surfaces_in_the_openai_sdk_as_a_connection_error() -> None:
    with (
        FakeProvider([Fault(drop_after=2, then=PARALLEL)]) as fake,
        openai_client(fake) as client,
        pytest.raises(openai.APIConnectionError),
    ):
        list(client.chat.completions.create(model="m", messages=USER, stream=True))


def test_drop_after_cuts_a_plain_body_short() -> None:
    with (
        FakeProvider([Fault(drop_after=10, then=reply("cut"))]) as fake,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        post(fake, "openai", BODY)


def test_malformed_answer_is_not_json() -> None:
    with FakeProvider([Fault(malformed=True)]) as fake:
        response = post(fake, "anthropic", BODY)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_malformed_stream_has_one_data_line_that_is_not_json(wire: str) -> None:
    with FakeProvider([Fault(malformed=True, then=reply("fine"))]) as fake:
        response = post(fake, wire, STREAM_BODY)
    broken = []
    for _, data in sse_events(response.text):
        try:
            json.loads(data)
        except ValueError:
            broken.append(data)
    assert broken == ['{"id": "fake", "object": '] + (["[DONE]"] if wire == "openai" else [])


def test_malformed_stream_breaks_the_anthropic_sdk() -> None:
    with (
        FakeProvider([Fault(malformed=True, then=reply("fine"))]) as fake,
        anthropic_client(fake) as client,
        pytest.raises(json.JSONDecodeError),
        client.messages.stream(model="m", max_tokens=5, messages=CLAUDE_USER) as stream,
    ):
        stream.get_final_message()


@pytest.mark.parametrize(
    "fault",
    [
        lambda: Fault(),
        lambda: Fault(status=200),
        lambda: Fault(retry_after=1),
        lambda: Fault(status=500, then=reply("x")),
        lambda: Fault(drop_after=-1),
        lambda: Fault(delay_s=-1),
        lambda: Fault(drop_after=1, malformed=True),
    ],
)
def test_fault_rejects_meaningless_combinations(fault: Callable[[], Fault]) -> None:
    with pytest.raises(ValueError):
        fault()


def test_script_items_must_be_responses_or_faults() -> None:
    with pytest.raises(TypeError, match="ModelResponse or a Fault"):
        FakeProvider(["plain text"])  # type: ignore[arg-type]


# The server itself -------------------------------------------------------------------------


def test_connection_is_kept_alive_across_plain_and_streamed_answers() -> None:
    with FakeProvider([reply("one"), reply("two"), reply("three")]) as fake:
        connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
        sockets = []
        for stream in (False, True, False):
            body = json.dumps({**BODY, "stream": stream})
            connection.request("POST", "/v1/messages", body, {"content-type": "application/json"})
            assert connection.getresponse().read()
            sockets.append(connection.sock)
        connection.close()
    assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2]


def test_close_frees_the_port_and_can_be_called_twice() -> None:
    fake = FakeProvider([]).start()
    port = fake.port
    idle = socket.create_connection(("127.0.0.1", port))  # a keep-alive client left open
    fake.close()
    fake.close()
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_base_urls_need_a_started_provider() -> None:
    with pytest.raises(RuntimeError, match="start the FakeProvider"):
        _ = FakeProvider([]).openai_base_url
