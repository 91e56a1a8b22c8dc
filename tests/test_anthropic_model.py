"""The anthropic: provider against a fake Messages API plugged in at the httpx transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from jupyter_agent._errors import ConfigError, ModelHTTPError, ModelProtocolError
from jupyter_agent._models._anthropic import AnthropicModel, request_messages
from jupyter_agent._models._base import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
    ToolSpec,
)
from jupyter_agent._models._http import RetryPolicy

pytestmark = pytest.mark.anyio
KEY = "sk-ant-api03-test-0123456789abcdef"
Answer = Callable[[], httpx.Response]
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, jitter=0.0)


@pytest.fixture(autouse=True)
def no_anthropic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


class FakeAnthropic:
    """Answers the n-th POST with the n-th answer (the last one again past the end)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers[min(len(self.requests), len(self.answers)) - 1]()

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


@dataclass
class Observer:
    retries: list[tuple[int, Exception, float]] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)

    async def retrying(self, *, attempt: int, error: Exception, delay_s: float) -> None:
        self.retries.append((attempt, error, delay_s))

    def partial(self, text: str) -> None:
        self.partials.append(text)


@dataclass
class FakeSleep:
    slept: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def message(
    *content: dict[str, Any],
    stop_reason: str = "end_turn",
    usage: dict[str, int] | None = None,
    model: str = "claude-sonnet-4-5-20250929",
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content),
        "stop_reason": stop_reason,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def answer(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return lambda: httpx.Response(status, json=body, headers=headers)


def sse(*events: dict[str, Any] | str) -> Answer:
    """A streamed answer; a str is sent as a raw data line (e.g. text that is not JSON)."""
    lines = [
        f"data: {e}\n\n" if isinstance(e, str) else f"event: {e['type']}\ndata: {json.dumps(e)}\n\n"
        for e in events
    ]
    headers = {"content-type": "text/event-stream"}
    return lambda: httpx.Response(200, content="".join(lines).encode(), headers=headers)


def start(usage: dict[str, int] | None = None) -> dict[str, Any]:
    started = message(usage=usage or {"input_tokens": 30, "output_tokens": 1})
    return {"type": "message_start", "message": {**started, "stop_reason": None}}


def block(index: int, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": content}


def text_delta(index: int, value: str) -> dict[str, Any]:
    delta = {"type": "text_delta", "text": value}
    return {"type": "content_block_delta", "index": index, "delta": delta}


def json_delta(index: int, partial: str) -> dict[str, Any]:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return {"type": "content_block_delta", "index": index, "delta": delta}


def stop_block(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def finish(stop_reason: str = "end_turn", output_tokens: int = 12) -> list[dict[str, Any]]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return [
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}},
        {"type": "message_stop"},
    ]


def streamed_text(*chunks: str) -> list[dict[str, Any]]:
    deltas = [text_delta(0, c) for c in chunks]
    return [start(), block(0, text("")), {"type": "ping"}, *deltas, stop_block(0), *finish()]


def model_for(
    fake: FakeAnthropic, name: str = "claude-sonnet-4-5", **options: Any
) -> AnthropicModel:
    options.setdefault("api_key", KEY)
    return AnthropicModel(name, http_client=fake.client(), **options)


async def ask(
    fake: FakeAnthropic, *messages: Message, observer: Observer | None = None, **options: Any
) -> ModelResponse:
    request = ModelRequest(messages or [Message("user", "hi")], observer=observer)
    return await model_for(fake, **options).complete(request)


# -- the request --------------------------------------------------------------------------------


async def test_request_posts_to_v1_messages_with_key_version_and_own_headers() -> None:
    fake = FakeAnthropic(answer(message(text("hello"))))
    await ask(fake, headers={"anthropic-beta": "tools-2024"})
    sent = fake.requests[0]
    assert (sent.method, str(sent.url)) == ("POST", "https://api.anthropic.com/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["anthropic-beta"] == "tools-2024"


async def test_request_names_the_model_and_max_tokens_and_does_not_stream() -> None:
    fake = FakeAnthropic(answer(message(text("hello"))))
    await ask(fake, max_tokens=1024)
    assert fake.body["model"] == "claude-sonnet-4-5"
    assert fake.body["max_tokens"] == 1024
    assert "stream" not in fake.body


async def test_system_messages_are_joined_into_system() -> None:
    fake = FakeAnthropic(answer(message(text("ok"))))
    await ask(
        fake, Message("system", "Be brief."), Message("system", "Use tools."), Message("user", "hi")
    )
    assert fake.body["system"] == "Be brief.\n\nUse tools."
    assert fake.body["messages"] == [{"role": "user", "content": [text("hi")]}]


async def test_no_system_is_sent_without_system_messages() -> None:
    fake = FakeAnthropic(answer(message(text("ok"))))
    await ask(fake)
    assert "system" not in fake.body


async def test_tools_are_offered_with_their_input_schema() -> None:
    schema: dict[str, object] = {"type": "object", "properties": {"path": {"type": "string"}}}
    fake = FakeAnthropic(answer(message(text("ok"))))
    request = ModelRequest([Message("user", "hi")], tools=[ToolSpec("read_file", "Read.", schema)])
    await model_for(fake).complete(request)
    assert fake.body["tools"] == [
        {"name": "read_file", "description": "Read.", "input_schema": schema}
    ]


def test_assistant_tool_calls_become_tool_use_blocks_after_its_text() -> None:
    calls = (ToolCallRequest("toolu_1", "read_file", '{"path": "a.txt"}'),)
    (turn,) = request_messages([Message("assistant", "Let me look.", tool_calls=calls)])
    assert turn == {
        "role": "assistant",
        "content": [text("Let me look."), tool_use("toolu_1", "read_file", {"path": "a.txt"})],
    }


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", ""])
def test_recorded_arguments_that_are_no_json_object_are_sent_as_empty_input(arguments: str) -> None:
    calls = (ToolCallRequest("toolu_1", "python", arguments),)
    (turn,) = request_messages([Message("assistant", "", tool_calls=calls)])
    assert turn["content"] == [tool_use("toolu_1", "python", {})]


def test_tool_results_and_the_persons_text_make_one_user_message_results_first() -> None:
    calls = (ToolCallRequest("toolu_1", "a", "{}"), ToolCallRequest("toolu_2", "b", "{}"))
    turns = request_messages(
        [
            Message("user", "go"),
            Message("assistant", "", tool_calls=calls),
            Message("tool", "A done", tool_call_id="toolu_1", name="a"),
            Message("tool", "B failed", tool_call_id="toolu_2", name="b", is_error=True),
            Message("user", "also check c", name="ada"),
        ]
    )
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A done", "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "B failed", "is_error": True},
        text("also check c"),
    ]


def test_tool_results_come_first_even_when_the_person_spoke_before_them() -> None:
    calls = (ToolCallRequest("toolu_1", "a", "{}"),)
    turns = request_messages(
        [
            Message("assistant", "", tool_calls=calls),
            Message("user", "hurry up"),
            Message("tool", "done", tool_call_id="toolu_1"),
        ]
    )
    assert [b["type"] for b in turns[1]["content"]] == ["tool_result", "text"]


def test_consecutive_messages_of_one_role_merge_and_empty_text_is_skipped() -> None:
    turns = request_messages(
        [
            Message("user", "one"),
            Message("user", "   "),
            Message("user", "two"),
            Message("assistant", ""),
            Message("assistant", "three"),
        ]
    )
    assert turns == [
        {"role": "user", "content": [text("one"), text("two")]},
        {"role": "assistant", "content": [text("three")]},
    ]


def test_an_error_result_without_text_still_says_something() -> None:
    (turn,) = request_messages([Message("tool", "", tool_call_id="toolu_1", is_error=True)])
    assert turn["content"][0]["content"]


# -- the answer ---------------------------------------------------------------------------------


async def test_text_blocks_are_joined_into_the_text() -> None:
    fake = FakeAnthropic(answer(message(text("Hello, "), text("world."))))
    response = await ask(fake)
    assert (response.text, response.tool_calls, response.stop_reason) == (
        "Hello, world.",
        (),
        "end_turn",
    )
    assert response.model == "claude-sonnet-4-5-20250929"


async def test_tool_use_blocks_become_tool_calls_with_json_arguments() -> None:
    body = message(
        text("Reading both."),
        tool_use("toolu_1", "read_file", {"path": "a.txt"}),
        tool_use("toolu_2", "list_files", {}),
        stop_reason="tool_use",
    )
    response = await ask(FakeAnthropic(answer(body)))
    assert response.text == "Reading both."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("toolu_1", "read_file", {"path": "a.txt"}),
        ("toolu_2", "list_files", {}),
    ]
    assert response.stop_reason == "tool_use"


@pytest.mark.parametrize(
    "reason", ["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal"]
)
async def test_stop_reason_is_kept(reason: str) -> None:
    response = await ask(FakeAnthropic(answer(message(text("x"), stop_reason=reason))))
    assert response.stop_reason == reason


async def test_input_tokens_include_cache_reads_and_writes() -> None:
    usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 50,
        "output_tokens": 20,
    }
    response = await ask(FakeAnthropic(answer(message(text("x"), usage=usage))))
    assert (response.usage.input_tokens, response.usage.cached_tokens) == (1150, 1000)
    assert response.usage.output_tokens == 20


async def test_cost_of_a_priced_model_counts_cached_tokens_at_the_cached_price() -> None:
    usage = {"input_tokens": 1_000_000, "cache_read_input_tokens": 1_000_000, "output_tokens": 0}
    response = await ask(FakeAnthropic(answer(message(text("x"), usage=usage))))
    assert response.usage.cost_usd == pytest.approx(3.00 + 0.30)  # claude-sonnet-4-5


async def test_cost_of_a_priced_model_counts_cache_writes_at_the_cache_write_price() -> None:
    usage = {"input_tokens": 0, "cache_creation_input_tokens": 100_000, "output_tokens": 10}
    response = await ask(FakeAnthropic(answer(message(text("x"), usage=usage))))
    assert response.usage.input_tokens == 100_000
    assert response.usage.cost_usd == pytest.approx(0.1 * 3.75 + 10 * 15.0 / 1e6)  # 1.25x input


async def test_cost_of_an_unpriced_model_is_unknown() -> None:
    fake = FakeAnthropic(answer(message(text("x"))))
    model = model_for(fake, "claude-from-the-future")
    response = await model.complete(ModelRequest([Message("user", "hi")]))
    assert response.usage.cost_usd is None


async def test_an_answer_without_content_blocks_is_a_protocol_error() -> None:
    fake = FakeAnthropic(answer({"id": "msg_1", "type": "message"}))
    with pytest.raises(ModelProtocolError, match="without content blocks"):
        await ask(fake, retry=RetryPolicy(max_attempts=1))


async def test_a_body_that_is_not_json_is_retried_then_a_protocol_error() -> None:
    fake = FakeAnthropic(lambda: httpx.Response(200, content=b"<html>gateway</html>"))
    with pytest.raises(ModelProtocolError, match="not JSON"):
        await ask(fake, retry=FAST_RETRY, sleep=FakeSleep())
    assert len(fake.requests) == 3


# -- streaming ----------------------------------------------------------------------------------


async def test_streaming_asks_for_a_stream() -> None:
    fake = FakeAnthropic(sse(*streamed_text("hi")))
    await ask(fake, stream=True)
    assert fake.body["stream"] is True


async def test_stream_assembles_text_and_parallel_tool_calls() -> None:
    fake = FakeAnthropic(
        sse(
            start(),
            block(0, text("")),
            text_delta(0, "Reading "),
            text_delta(0, "both."),
            stop_block(0),
            block(1, tool_use("toolu_1", "read_file", {})),
            json_delta(1, '{"pa'),
            json_delta(1, 'th": "a.txt"}'),
            stop_block(1),
            block(2, tool_use("toolu_2", "list_files", {})),
            json_delta(2, ""),
            stop_block(2),
            *finish("tool_use"),
        )
    )
    response = await ask(fake, stream=True)
    assert response.text == "Reading both."
    assert response.tool_calls == (
        ToolCallRequest("toolu_1", "read_file", '{"path": "a.txt"}'),
        ToolCallRequest("toolu_2", "list_files", "{}"),
    )
    assert (response.stop_reason, response.model) == ("tool_use", "claude-sonnet-4-5-20250929")


async def test_streamed_arguments_are_kept_exactly_even_when_invalid() -> None:
    events = [start(), block(0, tool_use("toolu_1", "python", {})), json_delta(0, '{"code": "1 +')]
    response = await ask(FakeAnthropic(sse(*events, *finish("max_tokens"))), stream=True)
    assert response.tool_calls[0].arguments == '{"code": "1 +'
    assert response.stop_reason == "max_tokens"


async def test_stream_usage_adds_message_start_and_message_delta() -> None:
    usage = {"input_tokens": 30, "cache_read_input_tokens": 70, "output_tokens": 1}
    events = [start(usage), block(0, text("")), text_delta(0, "x"), *finish(output_tokens=12)]
    response = await ask(FakeAnthropic(sse(*events)), stream=True)
    assert (response.usage.input_tokens, response.usage.cached_tokens) == (100, 70)
    assert response.usage.output_tokens == 12
    assert response.usage.cost_usd is not None


async def test_observer_sees_the_text_so_far_and_last_the_whole_text() -> None:
    observer = Observer()
    fake = FakeAnthropic(sse(*streamed_text("Hel", "lo, ", "world")))
    await ask(fake, stream=True, observer=observer)
    assert observer.partials[0] == "Hel"
    assert observer.partials[-1] == "Hello, world"
    assert all("Hello, world".startswith(p) for p in observer.partials)


async def test_streamed_text_reaches_the_observer_at_a_limited_rate() -> None:
    observer = Observer()
    fake = FakeAnthropic(sse(*streamed_text(*["word "] * 200)))
    await ask(fake, stream=True, observer=observer)
    assert len(observer.partials) < 50
    assert observer.partials[-1] == "word " * 200


async def test_an_overloaded_error_event_is_a_retryable_529() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake = FakeAnthropic(sse(start(), overloaded), sse(*streamed_text("finally")))
    observer, sleep = Observer(), FakeSleep()
    response = await ask(fake, stream=True, observer=observer, retry=FAST_RETRY, sleep=sleep)
    assert response.text == "finally"
    ((_attempt, error, _delay),) = observer.retries
    assert isinstance(error, ModelHTTPError) and error.status_code == 529 and error.retryable
    assert "Overloaded" in str(error)


async def test_an_invalid_request_error_event_is_not_retried() -> None:
    invalid = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    fake = FakeAnthropic(sse(start(), invalid))
    with pytest.raises(ModelHTTPError) as caught:
        await ask(fake, stream=True, retry=FAST_RETRY, sleep=FakeSleep())
    assert caught.value.status_code == 400
    assert len(fake.requests) == 1


async def test_a_stream_cut_short_is_retried_then_a_protocol_error() -> None:
    observer = Observer()
    fake = FakeAnthropic(sse(start(), block(0, text("")), text_delta(0, "Hal")))
    with pytest.raises(ModelProtocolError, match="cut short"):
        await ask(fake, stream=True, observer=observer, retry=FAST_RETRY, sleep=FakeSleep())
    assert len(fake.requests) == 3
    assert [attempt for attempt, _, _ in observer.retries] == [1, 2]


async def test_a_stream_line_that_is_not_json_is_a_protocol_error() -> None:
    fake = FakeAnthropic(sse(start(), "{oops"))
    with pytest.raises(ModelProtocolError, match="not JSON"):
        await ask(fake, stream=True, retry=RetryPolicy(max_attempts=1))


async def test_a_delta_for_a_block_never_started_is_a_protocol_error() -> None:
    fake = FakeAnthropic(sse(start(), text_delta(3, "x"), *finish()))
    with pytest.raises(ModelProtocolError, match="never started"):
        await ask(fake, stream=True, retry=RetryPolicy(max_attempts=1))


# -- retries and errors -------------------------------------------------------------------------


async def test_a_429_waits_as_long_as_retry_after_says_and_the_retry_is_observed() -> None:
    limited = answer(
        {"error": {"type": "rate_limit_error", "message": "slow down"}}, 429, {"retry-after": "7"}
    )
    fake = FakeAnthropic(limited, answer(message(text("ok"))))
    observer, sleep = Observer(), FakeSleep()
    response = await ask(fake, observer=observer, sleep=sleep)
    assert response.text == "ok"
    assert sleep.slept == [7.0]
    ((attempt, error, delay),) = observer.retries
    assert (attempt, delay) == (1, 7.0)
    assert isinstance(error, ModelHTTPError) and error.status_code == 429


async def test_a_401_is_not_retried() -> None:
    denied = answer(
        {"error": {"type": "authentication_error", "message": "invalid x-api-key"}}, 401
    )
    fake = FakeAnthropic(denied)
    observer = Observer()
    with pytest.raises(ModelHTTPError) as caught:
        await ask(fake, observer=observer, sleep=FakeSleep())
    assert caught.value.status_code == 401 and not caught.value.retryable
    assert len(fake.requests) == 1 and observer.retries == []


async def test_the_key_never_appears_in_an_error_or_the_repr() -> None:
    echo = answer({"error": {"type": "authentication_error", "message": f"bad key {KEY}"}}, 401)
    fake = FakeAnthropic(echo)
    model = model_for(fake)
    with pytest.raises(ModelHTTPError) as caught:
        await model.complete(ModelRequest([Message("user", "hi")]))
    assert KEY not in str(caught.value) and KEY not in repr(model)
    assert "[redacted]" in str(caught.value)


async def test_the_key_never_appears_in_a_streamed_error() -> None:
    leak = {"type": "error", "error": {"type": "api_error", "message": f"failed for {KEY}"}}
    fake = FakeAnthropic(sse(start(), leak))
    with pytest.raises(ModelHTTPError) as caught:
        await ask(fake, stream=True, retry=RetryPolicy(max_attempts=1))
    assert KEY not in str(caught.value)


# -- configuration ------------------------------------------------------------------------------


def test_no_key_for_the_official_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY or pass api_key="):
        AnthropicModel("claude-sonnet-4-5")


async def test_the_key_and_base_url_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy.local:9000/")
    fake = FakeAnthropic(answer(message(text("ok"))))
    model = AnthropicModel("claude-sonnet-4-5", http_client=fake.client())
    await model.complete(ModelRequest([Message("user", "hi")]))
    assert str(fake.requests[0].url) == "http://proxy.local:9000/v1/messages"
    assert fake.requests[0].headers["x-api-key"] == KEY


async def test_a_local_endpoint_needs_no_key() -> None:
    fake = FakeAnthropic(answer(message(text("ok"))))
    model = AnthropicModel("local", base_url="http://127.0.0.1:8080", http_client=fake.client())
    await model.complete(ModelRequest([Message("user", "hi")]))
    assert "x-api-key" not in fake.requests[0].headers


def test_from_spec_reads_model_and_base_url() -> None:
    model = AnthropicModel.from_spec("claude-haiku-4-5@http://127.0.0.1:8080", stream=True)
    assert (model.name, model.base_url, model.stream) == (
        "anthropic:claude-haiku-4-5",
        "http://127.0.0.1:8080",
        True,
    )
    assert model.spec == "anthropic:claude-haiku-4-5@http://127.0.0.1:8080"


def test_from_spec_keeps_an_at_sign_that_starts_no_url_in_the_model_name() -> None:
    model = AnthropicModel.from_spec("claude-3-5-sonnet-v2@20241022", api_key=KEY)
    assert (model.model, model.base_url) == (
        "claude-3-5-sonnet-v2@20241022",
        "https://api.anthropic.com",
    )
    assert model.spec == "anthropic:claude-3-5-sonnet-v2@20241022"


def test_from_spec_without_a_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="name the model"):
        AnthropicModel.from_spec("", api_key=KEY)
