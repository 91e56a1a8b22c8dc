"""``FakeProvider``: a real HTTP server on 127.0.0.1 that plays a script in OpenAI's or
Anthropic's wire format, records what it receives, and fails on cue.

The server runs in a background thread (one more thread per connection); ``close()`` ends waits
in progress, cuts open connections and frees the port, so a test never hangs on it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType

from .._models._base import ModelResponse
from ._handler import POLL_S, FakeHTTPServer
from ._script import Fault, RecordedRequest, Script, ScriptItem


class FakeProvider:
    """A local LLM provider for tests: answers ``POST /v1/chat/completions`` (OpenAI) and
    ``POST /v1/messages`` (Anthropic) from ``script``, one item per request, in order.

    Each item is a ``ModelResponse`` (rendered in the asked wire format; ``"stream": true`` in
    the body gets server-sent events) or a ``Fault``. Past the end of the script it answers 500.
    With ``api_key``, a request without that key (OpenAI: ``Authorization: Bearer KEY``;
    Anthropic: ``x-api-key: KEY``, or that bearer header as its 2.x SDK sends) gets 401 and
    plays nothing. Every request is kept in ``requests``.

    Rendering: tool calls without an id get ``call_<item>_<k>`` (OpenAI) or ``toolu_<item>_<k>``
    (Anthropic), ``item`` being the script position; a ``stop_reason`` left at ``end_turn`` on
    a response with tool calls is sent as ``tool_use``/``tool_calls``; ``Usage.input_tokens``
    counts cached tokens, which Anthropic's wire reports apart (``cache_read_input_tokens``).
    Argument text goes out verbatim, broken JSON included, except in a non-streaming Anthropic
    answer, whose ``input`` must be an object: there the fake answers 500 saying so.

    Example:
        >>> from jupyter_agent.testing import FakeProvider, Fault, reply
        >>> with FakeProvider([Fault(status=429), reply("Hello!")]) as fake:
        ...     url = fake.openai_base_url  # give it to the client under test
    """

    def __init__(self, script: Iterable[ScriptItem], *, api_key: str | None = None) -> None:
        if isinstance(script, ModelResponse | Fault):
            raise TypeError("script must be a list of items; wrap one item in [...]")
        self._script = Script(script)
        self._api_key = api_key
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeProvider:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("this FakeProvider is already started")
        server = FakeHTTPServer(self._script, self._api_key)
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_S},
            name=f"FakeProvider:{server.port}",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut open connections and free the port; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()
        server.close_connections()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("start the FakeProvider first: `with FakeProvider([...]) as fake:`")
        return self._server.port

    @property
    def openai_base_url(self) -> str:
        """The base URL for an OpenAI client: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base URL for an Anthropic client: ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a copy)."""
        return self._script.requests

    @property
    def remaining(self) -> int:
        """How many script items are still to be played."""
        return self._script.remaining

    def __repr__(self) -> str:
        where = f"port {self._server.port}" if self._server else "not started"
        return f"<FakeProvider {where}, {self.remaining} of {self._script.size} items left>"
