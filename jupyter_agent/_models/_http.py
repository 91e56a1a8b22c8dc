"""What every HTTP provider shares: one ``httpx.AsyncClient``, retries, error translation.

Retries: exponential backoff with jitter on 408/409/429/5xx, timeouts, connection errors and
unreadable answers, honouring ``Retry-After``; capped in attempts and in total time. Each retry
is reported to the request's observer (the engine records it), so no retry is silent. httpx
errors are translated once, here, into the project's ``ModelError`` tree, with keys redacted.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx

from .._errors import (
    ConfigError,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelProtocolError,
    ModelTimeout,
)
from ._base import ModelObserver, ModelRequest, ModelResponse
from ._redact import redact

T = TypeVar("T")

# A non-streaming answer sends nothing until it is whole: long answers take minutes (the
# official SDKs wait 600 s too).
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=10.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: ``max_attempts`` in all, waiting ``base_delay_s * 2**n`` (with up to
    ``jitter`` of it added at random, at most ``max_delay_s``) between attempts, and never
    past ``max_elapsed_s`` since the first attempt. A Retry-After from the provider wins over
    the computed wait (still within ``max_elapsed_s``)."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_elapsed_s: float = 300.0
    jitter: float = 0.25

    def delay(self, attempt: int, error: ModelError) -> float:
        if error.retry_after_s is not None:
            return max(0.0, error.retry_after_s)
        base: float = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        return base * (1 + self.jitter * random.random())


DEFAULT_RETRY = RetryPolicy()


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    observer: ModelObserver | None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``attempt()`` until it succeeds, a non-retryable error, or the policy's caps."""
    started = monotonic()
    for n in range(1, policy.max_attempts + 1):
        try:
            return await attempt()
        except ModelError as exc:
            if not exc.retryable or n == policy.max_attempts:
                raise
            delay = policy.delay(n, exc)
            if monotonic() - started + delay > policy.max_elapsed_s:
                raise
            if observer is not None:
                await observer.retrying(attempt=n, error=exc, delay_s=delay)
            await sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def endpoint(
    *, base_url: str | None, api_key: str | None, official: str, env: str
) -> tuple[str, str | None]:
    """The base URL and key for a provider whose environment variables start with ``env``.

    The environment's key (``{env}_API_KEY``) goes only to the official URL or the one in
    ``{env}_BASE_URL``, never to a URL read from a model string (such as one recorded in a
    shared store); a key given as ``api_key`` goes wherever it is told.
    """
    env_base = (os.environ.get(f"{env}_BASE_URL") or "").rstrip("/")
    base = (base_url or env_base or official).rstrip("/")
    key = api_key
    if key is None and base in (official, env_base):
        key = os.environ.get(f"{env}_API_KEY")
    return base, check_key(key)


def without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` (a credential: never recorded or shown)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def made_by_name(
    *,
    api_key: str | None,
    base_url: str | None,
    headers: Mapping[str, str] | None,
    stream: bool,
    retry: RetryPolicy,
    timeout: httpx.Timeout,
    http_client: httpx.AsyncClient | None,
) -> bool:
    """Whether a model made with these options is what its model string (and the environment)
    makes again: not with a key, headers or settings given to it, which are not recorded."""
    return (
        api_key is None
        and not headers
        and not stream
        and retry is DEFAULT_RETRY
        and timeout is DEFAULT_TIMEOUT
        and http_client is None
        and (base_url is None or without_userinfo(base_url) == base_url)
    )


def check_key(key: str | None) -> str | None:
    """The key without surrounding whitespace; refuse one with control characters in it."""
    if key is None:
        return None
    key = key.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ConfigError(
            "the API key contains a control character (a pasted line break?); set it again"
        )
    return key or None


def secret_header_values(headers: Mapping[str, str] | None) -> tuple[str, ...]:
    """Values of headers that carry credentials, to redact like the key."""
    words = ("authorization", "key", "token", "secret")
    return tuple(v for k, v in (headers or {}).items() if any(w in k.lower() for w in words))


class HTTPModel:
    """What the HTTP providers share: their client, retries and the ``complete`` entry point.

    A provider sets ``model``, ``stream``, ``retry``, ``_sleep`` and ``_client`` and defines
    ``_body(request)`` and the two ways of one attempt, ``_plain`` and ``_streamed``.
    """

    model: str
    stream: bool
    retry: RetryPolicy
    spec_is_whole: bool  # whether ``spec`` (and the environment) makes this model again
    official_base_url: str  # the provider's own endpoint: left out of ``spec``
    _sleep: Callable[[float], Awaitable[None]]
    _client: ProviderClient

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._client.base_url

    @property
    def spec(self) -> str:
        """The model string that makes this model again (no key): recorded with the session."""
        if self.base_url == self.official_base_url:
            return self.name
        return f"{self.name}@{without_userinfo(self.base_url)}"  # (its password is a secret)

    def __repr__(self) -> str:  # never the key, nor the headers that hold it
        return (
            f"{type(self).__name__}({self.model!r}, base_url={without_userinfo(self.base_url)!r}, "
            f"stream={self.stream})"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request``, retrying per ``self.retry``; each retry is told to the observer."""
        body = self._body(request)
        attempt = self._streamed if self.stream else self._plain
        return await with_retries(
            lambda: attempt(body, request.observer),
            policy=self.retry,
            observer=request.observer,
            sleep=self._sleep,
        )

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        raise NotImplementedError

    async def _plain(self, body: dict[str, Any], observer: ModelObserver | None) -> ModelResponse:
        raise NotImplementedError

    async def _streamed(
        self, body: dict[str, Any], observer: ModelObserver | None
    ) -> ModelResponse:
        raise NotImplementedError


class ProviderClient:
    """One provider endpoint: base URL, headers (with the key), timeouts, error translation."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        secrets: tuple[str | None, ...] = (),
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._secrets = secrets
        self._timeout = timeout
        self._own_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # never show headers: they hold the key
        return f"<ProviderClient {self.provider} {self.base_url}>"

    def __getstate__(self) -> dict[str, Any]:
        """Sent to another process (a worker), it makes a connection pool of its own there."""
        if not self._own_client:
            raise TypeError(
                "a model given its own http_client cannot be sent to another process; "
                "leave http_client out and it makes one there"
            )
        return {k: v for k, v in self.__dict__.items() if k != "_client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = httpx.AsyncClient(timeout=self._timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the JSON answer, or raise a translated ``ModelError``."""
        async with self._send(path, body, stream=False) as response:
            await self._read(response)
            try:
                data = response.json()
            except ValueError as exc:
                raise ModelProtocolError(
                    f"{self.provider} sent a body that is not JSON: {response.text[:200]!r}"
                ) from exc
        if not isinstance(data, dict):
            raise ModelProtocolError(
                f"{self.provider} sent JSON that is not an object", retryable=False
            )
        if data.get("error"):  # some gateways answer 200 with an error body
            raise self.error_in_body(data["error"], request_id=response.headers.get("x-request-id"))
        return data

    def error_in_body(self, error: object, *, request_id: str | None = None) -> ModelHTTPError:
        """An error the provider put in a 200 answer or a stream: its own code, else 500."""
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return ModelHTTPError(
            self.redact(f"{self.provider} sent an error: {message}"),
            status_code=status,
            request_id=request_id,
        )

    async def _read(self, response: httpx.Response) -> None:
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc

    @asynccontextmanager
    async def stream_sse(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        """POST ``body`` and yield the answer's server-sent events as ``(event, data)``."""
        async with self._send(path, body, stream=True) as response:
            yield self._events(response)

    async def _events(self, response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
        event, data = "message", list[str]()
        try:
            async for line in response.aiter_lines():
                if not line:
                    if data:
                        yield event, "\n".join(data)
                    event, data = "message", list[str]()
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        if data:
            yield event, "\n".join(data)

    @asynccontextmanager
    async def _send(
        self, path: str, body: Mapping[str, Any], *, stream: bool
    ) -> AsyncIterator[httpx.Response]:
        url = f"{self.base_url}{path}"
        try:
            request = self._client.build_request("POST", url, json=body, headers=self._headers)
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        try:
            if response.status_code >= 400:
                await self._read(response)
                raise self._http_error(response)
            yield response
        finally:
            await response.aclose()

    def _http_error(self, response: httpx.Response) -> ModelHTTPError:
        detail = _provider_message(response)
        request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
        message = self.redact(
            f"{self.provider} answered {response.status_code}: {detail}"
            + (f" (request id {request_id})" if request_id else "")
        )
        return ModelHTTPError(
            message,
            status_code=response.status_code,
            request_id=request_id,
            retry_after_s=_retry_after(response.headers),
        )

    def _translate(self, exc: httpx.HTTPError) -> ModelError:
        text = self.redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, httpx.TimeoutException):
            return ModelTimeout(f"{self.provider} did not answer in time ({text})")
        if isinstance(exc, httpx.LocalProtocolError):  # our own request is malformed
            return ModelError(f"could not send the request to {self.provider} ({text})")
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return ModelProtocolError(f"{self.provider}'s answer was cut short ({text})")
        if isinstance(exc, httpx.TransportError):
            return ModelConnectionError(f"cannot reach {self.provider} at {self.base_url} ({text})")
        return ModelError(f"{self.provider} request failed ({text})")


def _provider_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return _plain_text(response.text) or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return json.dumps(data)[:300]


def _plain_text(body: str) -> str:
    """A body that is not JSON as one short line: an HTML error page (a proxy's 502) by its
    title, anything else with its whitespace folded."""
    title = re.search(r"<title[^>]*>(.*?)</title>", body, re.I | re.S)
    if title or re.match(r"\s*<(!doctype|html)", body, re.I):
        words = " ".join((title.group(1) if title else "").split())
        return f"{words} (an HTML page)" if words else "an HTML page"
    return " ".join(body.split())[:300]


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
