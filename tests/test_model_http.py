"""Retries, prices and redaction: the parts every HTTP provider shares."""

from __future__ import annotations

import pytest

from jupyter_agent._errors import ModelHTTPError, ModelProtocolError, ModelTimeout
from jupyter_agent._models._http import RetryPolicy, _retry_after, with_retries
from jupyter_agent._models._prices import PRICES, cost_usd, set_price
from jupyter_agent._models._redact import redact


class Recorder:
    def __init__(self) -> None:
        self.retries: list[tuple[int, str, float]] = []
        self.partials: list[str] = []

    async def retrying(self, *, attempt: int, error: Exception, delay_s: float) -> None:
        self.retries.append((attempt, type(error).__name__, delay_s))

    def partial(self, text: str) -> None:
        self.partials.append(text)


class FakeTime:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def monotonic(self) -> float:
        return self.now


def failing(errors: list[Exception], result: str = "ok"):
    async def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return result

    return attempt


@pytest.mark.anyio
async def test_retryable_errors_are_retried_and_each_retry_is_reported() -> None:
    rec, t = Recorder(), FakeTime()
    errors = [ModelHTTPError("busy", status_code=503), ModelTimeout("slow")]
    out = await with_retries(
        failing(errors),
        policy=RetryPolicy(jitter=0),
        observer=rec,
        sleep=t.sleep,
        monotonic=t.monotonic,
    )
    assert out == "ok"
    assert rec.retries == [(1, "ModelHTTPError", 0.5), (2, "ModelTimeout", 1.0)]
    assert t.slept == [0.5, 1.0]


@pytest.mark.anyio
async def test_retry_after_is_honoured() -> None:
    rec, t = Recorder(), FakeTime()
    errors = [ModelHTTPError("slow down", status_code=429, retry_after_s=2.0)]
    await with_retries(
        failing(errors), policy=RetryPolicy(), observer=rec, sleep=t.sleep, monotonic=t.monotonic
    )
    assert t.slept == [2.0] and rec.retries[0][2] == 2.0


@pytest.mark.anyio
async def test_a_client_error_is_not_retried() -> None:
    rec, t = Recorder(), FakeTime()
    with pytest.raises(ModelHTTPError):
        await with_retries(
            failing([ModelHTTPError("bad key", status_code=401)]),
            policy=RetryPolicy(),
            observer=rec,
            sleep=t.sleep,
            monotonic=t.monotonic,
        )
    assert rec.retries == [] and t.slept == []


@pytest.mark.anyio
async def test_attempts_are_capped() -> None:
    rec, t = Recorder(), FakeTime()
    errors = [ModelProtocolError(f"cut {i}") for i in range(10)]
    with pytest.raises(ModelProtocolError, match="cut 2"):
        await with_retries(
            failing(errors),
            policy=RetryPolicy(max_attempts=3, jitter=0),
            observer=rec,
            sleep=t.sleep,
            monotonic=t.monotonic,
        )
    assert len(rec.retries) == 2


@pytest.mark.anyio
async def test_total_time_is_capped_even_when_the_provider_asks_to_wait_longer() -> None:
    rec, t = Recorder(), FakeTime()
    errors = [ModelHTTPError("later", status_code=429, retry_after_s=3600)]
    with pytest.raises(ModelHTTPError, match="later"):
        await with_retries(
            failing(errors),
            policy=RetryPolicy(max_elapsed_s=60),
            observer=rec,
            sleep=t.sleep,
            monotonic=t.monotonic,
        )
    assert t.slept == []


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 529])
def test_which_statuses_are_retryable(status: int) -> None:
    assert ModelHTTPError("x", status_code=status).retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_which_statuses_are_not_retryable(status: int) -> None:
    assert not ModelHTTPError("x", status_code=status).retryable


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    import httpx

    assert _retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
    assert _retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert _retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry_after(httpx.Headers({})) is None


def test_cost_of_a_known_model_counts_cached_input_at_its_price() -> None:
    cost = cost_usd(
        "openai:gpt-4.1-mini",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cached_tokens=500_000,
    )
    assert cost == pytest.approx(0.5 * 0.40 + 0.5 * 0.10 + 1.60)


def test_cost_of_an_unknown_model_is_unknown_not_zero() -> None:
    assert cost_usd("openai:llama3.1", input_tokens=10, output_tokens=10) is None


def test_a_dated_model_falls_back_to_its_undated_price() -> None:
    assert cost_usd(
        "openai:gpt-4.1-mini-2025-04-14", input_tokens=1_000_000, output_tokens=0
    ) == pytest.approx(0.40)


def test_users_can_add_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jupyter_agent._models._prices.PRICES", dict(PRICES))
    set_price("openai:my-model", input=1.0, output=2.0)
    assert cost_usd("openai:my-model", input_tokens=1_000_000, output_tokens=0) == 1.0
    with pytest.raises(ValueError, match="provider:model"):
        set_price("my-model", input=1.0, output=2.0)


def test_redact_removes_given_secrets_and_key_shaped_strings() -> None:
    text = (
        "key sk-proj-abcdefghijklmnop, header Authorization: Bearer abcdefghijk123, "
        "anthropic sk-ant-api03-zzzzzzzzzzzz and my-own-secret-value"
    )
    out = redact(text, ["my-own-secret-value"])
    for secret in (
        "sk-proj-abcdefghijklmnop",
        "abcdefghijk123",
        "sk-ant-api03-zzzzzzzzzzzz",
        "my-own-secret-value",
    ):
        assert secret not in out
    assert "[redacted]" in out
