"""Both providers, end to end: the real engine, a real store, a real HTTP server on loopback.

The fake server speaks the providers' wire formats (the official SDKs parse it: see
test_fake_provider.py); here the project's own clients talk to it through every fault.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jupyter_agent import Agent, EventKind
from jupyter_agent._events import verify_chain
from jupyter_agent._models._anthropic import AnthropicModel
from jupyter_agent._models._base import Usage
from jupyter_agent._models._http import RetryPolicy
from jupyter_agent._models._openai import OpenAIModel
from jupyter_agent._runtime import get_runtime
from jupyter_agent.testing import FakeProvider, Fault, call, calls, reply

KEY = "sk-test-7hG2kQ9xVb4mN8pL3rT6"
FAST = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
WIRES = [("openai", False), ("openai", True), ("anthropic", False), ("anthropic", True)]


def model_for(wire: str, fake: FakeProvider, *, stream: bool, **options):
    options.setdefault("retry", FAST)
    if wire == "openai":
        return OpenAIModel(
            "gpt-4.1-mini", base_url=fake.openai_base_url, api_key=KEY, stream=stream, **options
        )
    return AnthropicModel(
        "claude-sonnet-4-5", base_url=fake.anthropic_base_url, api_key=KEY, stream=stream, **options
    )


def run(model, tmp_path: Path, goal: str = "make notes", **agent_options):
    agent = Agent(
        "p",
        model=model,
        store=tmp_path / "agent.db",
        workspace=tmp_path / "ws",
        tools=["write_file", "read_file", "list_files"],
        **agent_options,
    )
    session = agent.start(goal)
    try:
        session.wait(timeout=60)
    finally:
        get_runtime().call(model.aclose)  # its connections belong to the runtime's loop
    return session


def of_kind(session, kind: EventKind) -> list[dict]:
    return [e.payload for e in session.events if e.kind is kind]


def used(turn, inp: int = 120, out: int = 30):
    """The turn as the provider reports it, with token usage."""
    return dataclasses.replace(turn, usage=Usage(input_tokens=inp, output_tokens=out))


SCRIPT = [
    calls(
        call("write_file", path="notes.md", content="# Notes\n"),
        call("list_files"),
        text="Writing notes, then looking.",
    ),
    call("read_file", path="notes.md"),
    reply("Notes are in notes.md."),
]
SCRIPT = [used(t) for t in SCRIPT]


@pytest.mark.parametrize(("wire", "stream"), WIRES)
def test_a_multi_step_tool_session_completes(tmp_path: Path, wire: str, stream: bool) -> None:
    with FakeProvider(SCRIPT, api_key=KEY) as fake:
        s = run(model_for(wire, fake, stream=stream), tmp_path)
        requests = fake.requests
    assert s.status == "done" and s.result == "Notes are in notes.md."
    assert (tmp_path / "ws" / "notes.md").read_text() == "# Notes\n"
    assert [r["name"] for r in of_kind(s, EventKind.TOOL_RESULT)] == [
        "write_file",
        "list_files",
        "read_file",
    ]
    assert len(requests) == 3 and all(r.stream is stream for r in requests)
    row = s.row
    assert row.input_tokens > 0 and row.output_tokens > 0 and row.cost_usd is not None
    check_request_shapes(wire, requests, stream)


def check_request_shapes(wire: str, requests, stream: bool) -> None:
    second, third = requests[1].body, requests[2].body
    if wire == "openai":
        assert requests[0].path == "/v1/chat/completions"
        assert requests[0].headers["authorization"] == f"Bearer {KEY}"
        tool = second["tools"][0]
        assert tool["type"] == "function" and {"name", "description", "parameters"} <= set(
            tool["function"]
        )
        roles = [m["role"] for m in second["messages"]]
        assert roles == ["user", "assistant", "tool", "tool"]
        assistant = second["messages"][1]
        ids = [c["id"] for c in assistant["tool_calls"]]
        assert all(c["type"] == "function" for c in assistant["tool_calls"])
        assert [m["tool_call_id"] for m in second["messages"][2:]] == ids
        assert third["messages"][-1]["role"] == "tool"
        if stream:
            assert second["stream"] is True and second["stream_options"] == {"include_usage": True}
    else:
        assert requests[0].path == "/v1/messages"
        headers = requests[0].headers
        assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
        tool = second["tools"][0]
        assert {"name", "description", "input_schema"} <= set(tool)
        roles = [m["role"] for m in second["messages"]]
        assert roles == ["user", "assistant", "user"]
        uses = [b for b in second["messages"][1]["content"] if b["type"] == "tool_use"]
        results = second["messages"][2]["content"]
        assert [b["type"] for b in results] == ["tool_result", "tool_result"]
        assert [b["tool_use_id"] for b in results] == [u["id"] for u in uses]
        assert uses[0]["input"] == {"path": "notes.md", "content": "# Notes\n"}
        assert second["max_tokens"] > 0
        if stream:
            assert second["stream"] is True


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("wire", "stream"), WIRES)
def test_429_with_retry_after_waits_then_succeeds(tmp_path: Path, wire: str, stream: bool) -> None:
    with FakeProvider([Fault(status=429, retry_after=2), reply("ok")]) as fake:
        started = time.monotonic()
        s = run(model_for(wire, fake, stream=stream), tmp_path)
        waited = time.monotonic() - started
    assert s.status == "done" and waited >= 2.0
    (retry,) = of_kind(s, EventKind.MODEL_RETRY)
    assert retry["error"]["status_code"] == 429 and retry["delay_s"] == 2


def test_a_retry_wait_cut_short_by_a_pause_is_waited_out_after_the_resume(tmp_path: Path) -> None:
    """The provider said "in 3 s"; a pause cut that wait short: the resumed run asks again no
    sooner than the provider said (its retry's delay is in the log)."""
    with FakeProvider([Fault(status=429, retry_after=3), reply("ok")]) as fake:
        model = model_for("openai", fake, stream=False)
        agent = Agent("p", model=model, store=tmp_path / "agent.db", workspace=tmp_path / "ws")
        s = agent.start("make notes")
        try:
            deadline = time.monotonic() + 10
            while not of_kind(s, EventKind.MODEL_RETRY):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            asked_at = time.monotonic()
            s.pause()
            assert s.wait(5) == "paused"
            s.resume()
            time.sleep(1.0)
            assert len(fake.requests) == 1 and s.status == "running"  # still waiting it out
            assert s.wait(10) == "done" and len(fake.requests) == 2
            assert time.monotonic() - asked_at >= 2.9
        finally:
            get_runtime().call(model.aclose)


@pytest.mark.parametrize(("wire", "stream"), WIRES)
@pytest.mark.parametrize(
    "fault",
    [Fault(status=500), Fault(status=503), Fault(status=408), Fault(malformed=True)],
    ids=["500", "503", "408", "malformed"],
)
def test_a_transient_fault_is_retried_and_recorded(
    tmp_path: Path, wire: str, stream: bool, fault: Fault
) -> None:
    with FakeProvider([fault, reply("ok")]) as fake:
        s = run(model_for(wire, fake, stream=stream), tmp_path)
    assert s.status == "done"
    assert len(of_kind(s, EventKind.MODEL_RETRY)) == 1


@pytest.mark.parametrize(("wire", "stream"), WIRES)
def test_an_answer_cut_short_is_retried(tmp_path: Path, wire: str, stream: bool) -> None:
    cut = Fault(drop_after=2 if stream else 10, then=reply("a long answer, cut"))
    with FakeProvider([cut, reply("ok")]) as fake:
        s = run(model_for(wire, fake, stream=stream), tmp_path)
    assert s.status == "done" and s.result == "ok"
    (retry,) = of_kind(s, EventKind.MODEL_RETRY)
    assert retry["error"]["code"] == "model_protocol"


@pytest.mark.parametrize(("wire", "stream"), WIRES)
def test_a_slow_answer_times_out_and_is_retried(tmp_path: Path, wire: str, stream: bool) -> None:
    timeout = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    with FakeProvider([Fault(delay_s=1.0, then=reply("late")), reply("ok")]) as fake:
        s = run(model_for(wire, fake, stream=stream, timeout=timeout), tmp_path)
    assert s.status == "done" and s.result == "ok"
    (retry,) = of_kind(s, EventKind.MODEL_RETRY)
    assert retry["error"]["code"] == "model_timeout"


# Anthropic's non-streaming answer carries tool input as a JSON object, so only its stream
# (input_json_delta fragments) can deliver argument text that is not valid JSON.
@pytest.mark.parametrize(("wire", "stream"), [w for w in WIRES if w != ("anthropic", False)])
def test_invalid_tool_call_json_reaches_the_model_as_an_error(
    tmp_path: Path, wire: str, stream: bool
) -> None:
    from jupyter_agent.testing import call_raw

    with FakeProvider(
        [call_raw("write_file", '{"path": "x.md", "content'), reply("sorry")]
    ) as fake:
        s = run(model_for(wire, fake, stream=stream), tmp_path)
    assert s.status == "done"
    (res,) = of_kind(s, EventKind.TOOL_RESULT)
    assert res["is_error"] and "invalid arguments" in res["output"]


@pytest.mark.parametrize(("wire", "stream"), WIRES)
def test_a_fault_that_persists_fails_the_session_clearly_and_keeps_earlier_events(
    tmp_path: Path, wire: str, stream: bool
) -> None:
    script = [call("list_files"), *[Fault(status=503)] * 3]
    with FakeProvider(script) as fake:
        s = run(
            model_for(
                wire, fake, stream=stream, retry=RetryPolicy(max_attempts=3, base_delay_s=0.01)
            ),
            tmp_path,
        )
    assert s.status == "failed"
    (err,) = of_kind(s, EventKind.ERROR)
    assert err["where"] == "model" and err["status_code"] == 503 and "503" in err["message"]
    assert len(of_kind(s, EventKind.MODEL_RETRY)) == 2
    assert of_kind(s, EventKind.TOOL_RESULT)[0]["name"] == "list_files"  # nothing lost
    assert verify_chain(s.events) is None


def test_an_html_error_page_is_one_line_named_by_its_title(tmp_path: Path) -> None:
    """A proxy in front of the provider answers with its own HTML page (not the provider's
    JSON error): the session's error says what the page is, on one line."""
    import http.server
    import threading

    page = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body></html>\r\n"

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(502)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        retry = RetryPolicy(max_attempts=2, base_delay_s=0.01)
        s = run(OpenAIModel("gpt-4.1-mini", base_url=url, api_key=KEY, retry=retry), tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert s.status == "failed"
    (err,) = of_kind(s, EventKind.ERROR)
    assert err["message"] == "ModelHTTPError: openai answered 502: 502 Bad Gateway (an HTML page)"
    (retry_event,) = of_kind(s, EventKind.MODEL_RETRY)
    assert "\n" not in retry_event["error"]["message"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_text_of_an_attempt_cut_short_is_not_shown_while_the_next_is_awaited(
    tmp_path: Path, wire: str
) -> None:
    script = [
        Fault(drop_after=4, then=reply("I will delete the production database now, then more")),
        call("list_files"),
        reply("done"),
    ]
    with FakeProvider(script, api_key=KEY) as fake:
        slow_retry = RetryPolicy(base_delay_s=1.0, max_delay_s=1.0, jitter=0)
        model = model_for(wire, fake, stream=True, retry=slow_retry)
        s = Agent("p", model=model, store=tmp_path / "agent.db", tools=["list_files"]).start("go")
        deadline = time.monotonic() + 10
        while not of_kind(s, EventKind.MODEL_RETRY):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert s.partial_text is None  # in the backoff: the cut answer is not the model's
        assert s.wait(30) == "done"
        get_runtime().call(model.aclose)
    (first,) = [r for r in of_kind(s, EventKind.MODEL_RESPONSE) if r["step"] == 1]
    assert first["text"] == "" and first["tool_calls"][0]["name"] == "list_files"


def test_a_password_in_the_base_url_is_neither_recorded_nor_shown(tmp_path: Path) -> None:
    with FakeProvider([reply("ok")]) as fake:  # (a gateway taking the password instead)
        url = fake.openai_base_url.replace("http://", "http://gateway:gw-pass-Zq81xLmN@")
        model = OpenAIModel("gpt-4.1-mini", base_url=url)
        assert "gw-pass" not in repr(model) and "gw-pass" not in model.spec
        assert not model.spec_is_whole  # a resume needs the object, which has the password
        s = run(model, tmp_path)
        plain_url = fake.openai_base_url
    assert s.status == "done" and s.state.model == f"openai:gpt-4.1-mini@{plain_url}"
    for f in tmp_path.glob("agent.db*"):
        assert b"gw-pass" not in f.read_bytes(), f


@pytest.mark.parametrize(("wire", "stream"), WIRES)
def test_a_wrong_key_fails_at_once_without_retries(tmp_path: Path, wire: str, stream: bool) -> None:
    with FakeProvider([reply("never")], api_key="sk-the-right-one-0000") as fake:
        s = run(model_for(wire, fake, stream=stream), tmp_path)
    assert s.status == "failed"
    assert of_kind(s, EventKind.MODEL_RETRY) == []
    (err,) = of_kind(s, EventKind.ERROR)
    assert err["status_code"] == 401


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_session_on_a_model_object_with_its_own_key_is_resumed_only_with_that_object(
    tmp_path: Path, wire: str
) -> None:
    """The key and settings given to the object are not recorded (never the key): a fresh
    handle cannot make the model from its name, and says so, instead of running it without
    them (a 401, and a session failed for good)."""
    from jupyter_agent import ConfigError, open_session

    with FakeProvider([Fault(delay_s=30, then=reply("late")), reply("done")], api_key=KEY) as fake:
        model = model_for(wire, fake, stream=True)
        s = Agent("p", model=model, store=tmp_path / "agent.db", tools=[]).start("go")
        time.sleep(0.3)  # in its first model call
        s.pause()
        assert s.wait(10) == "paused"
        s.release()  # as if its process had ended
        with pytest.raises(ConfigError) as caught:
            open_session(s.id, store=tmp_path / "agent.db").resume()
        assert str(caught.value) == (
            f"session {s.id} ran with a model object ({model.spec!r}) given options its name "
            "does not carry (a key, headers, streaming): pass it, open_session(id, model=...)"
        )
        assert s.status == "paused"  # not run without its key, so not failed
        again = open_session(s.id, store=tmp_path / "agent.db", model=model).resume()
        assert again.wait(30) == "done"
        get_runtime().call(model.aclose)
        assert model_for(wire, fake, stream=False, retry=RetryPolicy()).spec_is_whole is False
    plain = OpenAIModel if wire == "openai" else AnthropicModel
    assert plain.from_spec("x@http://127.0.0.1:9/v1").spec_is_whole  # a name makes it all


# -- keys ------------------------------------------------------------------------------------


def test_the_key_is_nowhere_in_the_store_or_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    outputs: list[str] = []
    db = tmp_path / "agent.db"
    for wire in ("openai", "anthropic"):
        script = [*SCRIPT, reply("again")]
        with FakeProvider([Fault(status=429, retry_after=0.01), *script], api_key=KEY) as fake:
            base = fake.openai_base_url if wire == "openai" else fake.anthropic_base_url
            monkeypatch.setenv(f"{wire.upper()}_BASE_URL", base)  # key and URL from the env
            model = f"{wire}:{'gpt-4.1-mini' if wire == 'openai' else 'claude-sonnet-4-5'}"
            agent = Agent(
                "k",
                model=model,
                store=db,
                workspace=tmp_path / "ws",
                tools=["write_file", "read_file", "list_files"],
            )
            s = agent.run("notes", timeout=60)
            get_runtime().call(agent.model.aclose)
            assert s.status == "done"
            outputs.append(repr(agent.model) + repr(s) + str(s.timeline()))
        with FakeProvider([reply("x")], api_key="sk-someone-elses-key-99") as fake:
            bad = model_for(wire, fake, stream=False)
            failed = run(bad, tmp_path)
            assert failed.status == "failed"
            outputs.append(repr(bad) + str(failed.timeline()))
        echo = Fault(status=400, message=f"request rejected for key {KEY}")  # worst case
        with FakeProvider([echo]) as fake:
            echoed = run(model_for(wire, fake, stream=True), tmp_path)
            (err,) = of_kind(echoed, EventKind.ERROR)
            assert "request rejected for key [redacted]" in err["message"]
    exe = Path(sys.executable).parent / "jupyter-agent"
    for args in (["sessions"], ["verify"]):
        outputs.append(
            subprocess.run(
                [str(exe), "--db", str(db), *args], capture_output=True, text=True
            ).stdout
        )
    for row_id in subprocess.run(
        [str(exe), "--db", str(db), "sessions", "--json"], capture_output=True, text=True
    ).stdout.splitlines():
        sid = row_id.split('"id": "')[1].split('"')[0]
        for args in (
            ["show", sid],
            ["events", sid, "--json"],
            ["export", sid, "--format", "json"],
            ["export", sid],
        ):
            out = subprocess.run([str(exe), "--db", str(db), *args], capture_output=True, text=True)
            outputs.append(out.stdout + out.stderr)
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert KEY.encode() not in files
    assert all(KEY not in text for text in outputs)
    assert any("sessions" in t or "status" in t for t in outputs)


# -- streaming is visible, but not written ---------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_streamed_text_is_visible_live_and_only_the_whole_answer_is_logged(
    tmp_path: Path, wire: str
) -> None:
    from jupyter_agent._live import live_text

    answer = "The first part. The second part. The third and last part of a streamed answer."
    seen: list[object] = []
    with FakeProvider([Fault(delay_s=0.5, then=reply(answer))]) as fake:
        model = model_for(wire, fake, stream=True)
        agent = Agent("p", model=model, store=tmp_path / "agent.db", tools=[])
        s = agent.start("say something long")
        unsubscribe = live_text.subscribe(s.id, seen.append)  # during the provider's delay
        s.wait(timeout=30)
        unsubscribe()
        get_runtime().call(model.aclose)
    texts = [p.text for p in seen if p is not None]
    assert texts and texts[-1] == answer
    assert all(answer.startswith(t) for t in texts)
    assert seen[-1] is None and s.partial_text is None  # cleared once the answer is whole
    assert s.result == answer
    kinds = [e.kind for e in s.events]
    assert kinds.count(EventKind.MODEL_RESPONSE) == 1  # no event per fragment


def test_an_unpriced_model_shows_its_cost_as_unknown(tmp_path: Path) -> None:
    with FakeProvider([used(reply("hi"))]) as fake:
        model = OpenAIModel("llama3.1", base_url=fake.openai_base_url, retry=FAST)
        s = run(model, tmp_path)
    assert s.row.input_tokens == 120 and s.row.cost_usd is None
    exe = Path(sys.executable).parent / "jupyter-agent"
    out = subprocess.run(
        [str(exe), "--db", str(tmp_path / "agent.db"), "show", s.id], capture_output=True, text=True
    ).stdout
    assert "cost unknown" in out


def test_the_error_event_names_the_providers_request_id(tmp_path: Path) -> None:
    with FakeProvider([Fault(status=400, message="messages: field required")]) as fake:
        s = run(model_for("openai", fake, stream=False), tmp_path)
    (err,) = of_kind(s, EventKind.ERROR)
    assert err["status_code"] == 400 and err["request_id"].startswith("req_")
    assert "messages: field required" in err["message"] and err["request_id"] in err["message"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_the_environments_key_is_not_sent_to_a_url_from_a_model_string(
    tmp_path: Path, wire: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model string recorded in a shared store must not collect your key for its URL."""
    monkeypatch.setenv(f"{wire.upper()}_API_KEY", KEY)
    monkeypatch.delenv(f"{wire.upper()}_BASE_URL", raising=False)
    with FakeProvider([reply("hi")]) as fake:
        base = fake.openai_base_url if wire == "openai" else fake.anthropic_base_url
        agent = Agent("k", model=f"{wire}:some-model@{base}", store=tmp_path / "a.db", tools=[])
        s = agent.run("hi", timeout=30)
        get_runtime().call(agent.model.aclose)
        sent = fake.requests[0].headers
    assert s.status == "done"
    assert KEY not in str(sent)
