"""The HTTP side of the fake provider: a ``ThreadingHTTPServer`` that tracks its connections,
and the handler that answers each request from the script in the wire format its path asks for.

Answers keep the connection alive (``Content-Length``, or a chunked stream); a cut answer
(``drop_after``) ends the connection without the stream's terminator.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, cast

from .._models._base import ModelResponse
from ._anthropic_wire import AnthropicWire
from ._openai_wire import OpenAIWire
from ._script import Fault, RecordedRequest, Script
from ._wire import MALFORMED_JSON, JSONObject, Wire, WireError

POLL_S = 0.01  # how often the accept loop looks for shutdown(); bounds close()'s wait
_WIRES: dict[str, Wire] = {"/v1/chat/completions": OpenAIWire(), "/v1/messages": AnthropicWire()}
_JOIN_S = 2.0  # at most this long to wait for connection threads on close()
_IDLE_S = 30.0  # a connection idle this long is closed even if close() is never called


class FakeHTTPServer(ThreadingHTTPServer):
    """The HTTP server, keeping track of its connections so ``close()`` can cut them."""

    daemon_threads = True
    block_on_close = False  # close_connections() joins, with a bound

    def __init__(self, script: Script, api_key: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script, self.api_key = script, api_key
        self.port: int = self.server_address[1]
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._request_ids = 0

    def next_request_id(self) -> str:
        with self._lock:
            self._request_ids += 1
            return f"req_fake{self._request_ids}"

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._lock:
            self._connections.add(request)
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client going away mid-answer is part of the tests, not an error
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._lock:
            connections, workers = list(self._connections), list(self._workers)
        for connection in connections:
            with contextlib.suppress(OSError):  # already gone
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """One connection: reads requests, answers each from the script."""

    protocol_version = "HTTP/1.1"
    timeout = _IDLE_S
    disable_nagle_algorithm = True  # each write (a stream event) leaves at once
    _not_found: ClassVar[str] = (
        "the fake provider answers POST /v1/chat/completions and POST /v1/messages only"
    )

    @property
    def fake(self) -> FakeHTTPServer:
        return cast(FakeHTTPServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._read_body()
        self._send_error(_WIRES["/v1/chat/completions"], 404, self._not_found)

    def do_POST(self) -> None:
        raw = self._read_body()
        wire = _WIRES.get(self.path.partition("?")[0].rstrip("/"))
        if wire is None:
            self._send_error(_WIRES["/v1/chat/completions"], 404, self._not_found)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_error(wire, 400, "the request body is not a JSON object")
            return
        stream = body.get("stream") is True
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.fake.script.record(RecordedRequest(self.path, headers, body, wire.name, stream))
        key = self.fake.api_key
        if key is not None and not wire.authorized(headers, key):
            self._send_error(wire, 401, _auth_message(wire, headers))
            return
        played = self.fake.script.next_item()
        if played is None:
            size = self.fake.script.size
            message = f"the fake provider's script is exhausted: all {size} items were played"
            self._send_error(wire, 500, message)
            return
        item, answer = played
        if isinstance(answer, Fault):
            self._play_fault(wire, answer, body, item, stream)
        else:
            self._answer(wire, answer, body, item, stream)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _play_fault(
        self, wire: Wire, fault: Fault, body: JSONObject, item: int, stream: bool
    ) -> None:
        if fault.delay_s and self.fake.stopping.wait(fault.delay_s):
            self.close_connection = True  # closing: answer nothing
            return
        then = fault.then or ModelResponse()
        if fault.status is not None:
            message = fault.message or _stock_message(fault.status)
            self._send_error(wire, fault.status, message, retry_after=fault.retry_after)
        elif fault.malformed and stream:
            events = self._events(wire, then, body, item)
            if events is not None:
                self._send_stream(wire, [events[0], wire.malformed_event(), *events[1:]])
        elif fault.malformed:
            self._send_json(wire, 200, MALFORMED_JSON)
        elif fault.drop_after is not None:
            self._answer(wire, then, body, item, stream, drop_after=fault.drop_after)
        else:
            self._answer(wire, then, body, item, stream)

    def _answer(
        self,
        wire: Wire,
        response: ModelResponse,
        body: JSONObject,
        item: int,
        stream: bool,
        *,
        drop_after: int | None = None,
    ) -> None:
        if stream:
            events = self._events(wire, response, body, item)
            if events is not None:
                self._send_stream(wire, events, drop_after=drop_after)
            return
        try:
            data = json.dumps(wire.body(response, body, item)).encode()
        except WireError as exc:
            self._send_error(wire, exc.status, exc.message)
            return
        self._send_json(wire, 200, data, drop_after=drop_after)

    def _events(
        self, wire: Wire, response: ModelResponse, body: JSONObject, item: int
    ) -> list[bytes] | None:
        try:
            return wire.events(response, body, item)
        except WireError as exc:
            self._send_error(wire, exc.status, exc.message)
            return None

    def _send_error(
        self, wire: Wire, status: int, message: str, *, retry_after: float | None = None
    ) -> None:
        request_id = self.fake.next_request_id()
        data = json.dumps(wire.error(status, message, request_id)).encode()
        extra = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self._send_json(wire, status, data, request_id=request_id, headers=extra)

    def _send_json(
        self,
        wire: Wire,
        status: int,
        data: bytes,
        *,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
        drop_after: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header(wire.request_id_header, request_id or self.fake.next_request_id())
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if drop_after is None:
            self.wfile.write(data)
        else:  # part of the body, then the connection ends short of Content-Length
            self.wfile.write(data[: min(drop_after, len(data) - 1)])
            self.close_connection = True

    def _send_stream(
        self, wire: Wire, events: list[bytes], *, drop_after: int | None = None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header(wire.request_id_header, self.fake.next_request_id())
        self.end_headers()
        if drop_after is not None:  # never the last event, nor the chunked terminator
            events = events[: min(drop_after, len(events) - 1)]
        for event in events:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(event), event))
        if drop_after is None:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away, or the server is closing


def _auth_message(wire: Wire, headers: dict[str, str]) -> str:
    if wire.name == "anthropic":
        given = "x-api-key" in headers or "authorization" in headers
        return "invalid x-api-key" if given else "x-api-key header is required"
    if "authorization" not in headers:
        return "You didn't provide an API key (the fake provider wants Authorization: Bearer)."
    return "Incorrect API key provided (the fake provider was given another one)."


def _stock_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Overloaded" if status == 529 else "Error"
    return f"{phrase} (a scripted fault of the fake provider)"
