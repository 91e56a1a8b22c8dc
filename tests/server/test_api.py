"""The REST API of the server extension, on a real jupyter_server with a real store: each
endpoint, its refusals (no credentials, no XSRF), and commands reaching a kernel-like process
that is busy in its main thread."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_agent import Agent, EventKind, SqliteStore, open_session
from jupyter_agent._identity import current_identity
from jupyter_agent._store._leases import this_process
from jupyter_agent.testing import ScriptedModel, call, calls, reply

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:jupyter_server")

API = ("jupyter-agent", "api")


async def get_json(jp_fetch: Any, *parts: str, **params: object) -> Any:
    r = await jp_fetch(*API, *parts, params={k: str(v) for k, v in params.items()})
    return json.loads(r.body)


async def post(jp_fetch: Any, session_id: str, body: object, **kw: Any) -> Any:
    return await jp_fetch(
        *API, "sessions", session_id, "commands", method="POST", body=json.dumps(body), **kw
    )


WRITER = [  # four versions of four files, a version a turn
    calls(*(call("write_file", path=f"f{i}.txt", content=f"f{i} v{v}") for i in range(4)))
    for v in range(1, 5)
]


def error_of(err: pytest.ExceptionInfo[HTTPClientError]) -> Any:
    """The JSON body of an error answer (every error has one: ``message``, ``status``)."""
    assert err.value.response is not None
    return json.loads(err.value.response.body)


def finished(store_path: Path, name: str = "done", spec: str = "demo:fix") -> str:
    return Agent(name, model=spec, store=store_path).run("go").id


def paused_elsewhere_kind(store_path: Path) -> str:
    """A session that no live process holds, paused: what a stopped kernel leaves."""
    s = Agent("idle", model="demo:loop?steps=50", store=store_path).run("loop")
    fork = s.fork(at=11)
    return fork.id


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "parts"),
    [
        ("GET", ("sessions",)),
        ("GET", ("sessions", "abc")),
        ("GET", ("sessions", "abc", "events")),
        ("GET", ("stream",)),
        ("POST", ("sessions", "abc", "commands")),
    ],
)
async def test_every_endpoint_refuses_a_request_without_credentials(
    jp_fetch: Any, method: str, parts: tuple[str, ...]
) -> None:
    body = json.dumps({"verb": "pause"}) if method == "POST" else None
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, *parts, method=method, body=body, headers={"Authorization": ""})
    assert err.value.code == 403


async def test_a_write_with_a_login_cookie_but_no_xsrf_token_is_refused(
    jp_fetch: Any, jp_auth_header: dict[str, str], store_path: Path
) -> None:
    sid = paused_elsewhere_kind(store_path)
    token = jp_auth_header["Authorization"].split()[1]
    login = await jp_fetch("api", "status", params={"token": token}, headers={"Authorization": ""})
    cookie = login.headers["Set-Cookie"].split(";")[0]
    no_token = {"Authorization": "", "Cookie": cookie}
    with pytest.raises(HTTPClientError) as err:
        await post(jp_fetch, sid, {"verb": "tell", "text": "hi"}, headers=no_token)
    assert err.value.code == 403
    with_xsrf = {**no_token, "Cookie": f"{cookie}; _xsrf=abc123", "X-XSRFToken": "abc123"}
    r = await post(jp_fetch, sid, {"verb": "tell", "text": "hi"}, headers=with_xsrf)
    assert r.code == 200
    assert SqliteStore(store_path).get_session(sid).last_seq == 13


# -- reads ---------------------------------------------------------------------------------


async def test_sessions_lists_every_session_with_filters_and_paging(
    jp_fetch: Any, store_path: Path
) -> None:
    ids = [finished(store_path, f"s{i}") for i in range(3)]
    paused = paused_elsewhere_kind(store_path)
    everything = await get_json(jp_fetch, "sessions")
    assert everything["total"] == 5 and {s["id"] for s in everything["sessions"]} >= set(ids)
    assert "last_hash" not in everything["sessions"][0]
    only_paused = await get_json(jp_fetch, "sessions", status="paused")
    assert [s["id"] for s in only_paused["sessions"]] == [paused]
    page = await get_json(jp_fetch, "sessions", limit=2, offset=2)
    assert len(page["sessions"]) == 2 and page["offset"] == 2
    nobody = await get_json(jp_fetch, "sessions", owner="nobody-at-all")
    assert nobody == {"sessions": [], "total": 0, "offset": 0}
    with pytest.raises(HTTPClientError) as err:  # a typo is not "none have that status"
        await jp_fetch(*API, "sessions", params={"status": "finished"})
    assert err.value.code == 400 and error_of(err)["message"].startswith("status must be one of")
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, "sessions", params={"limit": "ten"})
    assert error_of(err) == {"message": "limit must be an integer, not 'ten'", "status": 400}
    for name, value, least in (("limit", "-1", 1), ("limit", "0", 1), ("offset", "-1", 0)):
        with pytest.raises(HTTPClientError) as err:  # not a page of something else
            await jp_fetch(*API, "sessions", params={name: value})
        said = f"{name} must be {least} or more, not '{value}'"
        assert error_of(err) == {"message": said, "status": 400}
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, "sessions", paused, "events", params={"after": "-5"})
    assert error_of(err)["message"] == "after must be 0 or more, not '-5'"
    blank = await get_json(jp_fetch, "sessions", status="", owner="", limit="", offset="")
    assert blank["total"] == 5 and blank["offset"] == 0  # empty filters filter nothing


async def test_one_session_gives_its_row_header_plan_and_approvals(
    jp_fetch: Any, store_path: Path
) -> None:
    sid = finished(store_path)
    data = await get_json(jp_fetch, "sessions", sid[:6])
    assert data["session"]["id"] == sid and data["session"]["status"] == "done"
    assert data["header"]["steps"] == data["session"]["steps"] > 0
    assert data["plan"] and all(i["status"] == "done" for i in data["plan"])
    assert data["approvals"] == []
    assert await get_json(jp_fetch, "sessions", sid, row=1) == {"session": data["session"]}
    assert set(await get_json(jp_fetch, "sessions", sid, row=0)) > {"session", "header"}
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, "sessions", "nosuchsession")
    assert err.value.code == 404


async def test_events_come_after_a_sequence_number_in_pages_and_whole_on_demand(
    jp_fetch: Any, store_path: Path
) -> None:
    sid = finished(store_path, spec="demo:loop?steps=40")
    last = SqliteStore(store_path).get_session(sid).last_seq
    newest = await get_json(jp_fetch, "sessions", sid, "events", limit=50)
    assert [e["seq"] for e in newest["events"]] == list(range(last - 49, last + 1))
    assert newest["has_more"] is True
    older = await get_json(jp_fetch, "sessions", sid, "events", before=last - 49, limit=50)
    assert older["events"][-1]["seq"] == last - 50
    since = await get_json(jp_fetch, "sessions", sid, "events", after=last - 3)
    assert since["mode"] == "after" and [e["seq"] for e in since["events"]] == [
        last - 2,
        last - 1,
        last,
    ]
    whole = await get_json(jp_fetch, "sessions", sid, "events", seq="1,2")
    assert [e["seq"] for e in whole["events"]] == [1, 2]
    assert whole["events"][0]["p"]["goal"] == "go"
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(*API, "sessions", sid, "events", params={"after": "x"})
    assert err.value.code == 400


async def test_the_stream_sends_new_events_and_changed_sessions(
    jp_fetch: Any, store_path: Path
) -> None:
    SqliteStore(store_path).close()
    chunks: list[bytes] = []
    stream = jp_fetch(*API, "stream", streaming_callback=chunks.append, request_timeout=30)
    await asyncio.sleep(0.5)  # connected, and has seen the store as it was
    sid = await asyncio.get_running_loop().run_in_executor(None, finished, store_path)
    for _ in range(100):
        if b"session_finished" in b"".join(chunks):
            break
        await asyncio.sleep(0.1)
    text = b"".join(chunks).decode()
    assert text.startswith("event: hello\n")
    events = [
        json.loads(block.split("data: ", 1)[1])
        for block in text.split("\n\n")
        if block.startswith("event: event")
    ]
    assert {e["session_id"] for e in events} == {sid}
    seqs = [e["event"]["seq"] for e in events]
    assert seqs == sorted(seqs) and seqs[0] == 1
    assert any(e["event"]["kind"] == "session_finished" for e in events)
    assert f'"id": "{sid}"' in text  # the session's row came too
    stream.cancel()


async def test_the_snapshot_is_the_sessions_static_html(jp_fetch: Any, store_path: Path) -> None:
    sid = finished(store_path)
    html = (await get_json(jp_fetch, "sessions", sid, "snapshot"))["html"]
    assert f'data-session-id="{sid}"' in html and "<script" not in html
    assert "session_finished" not in html and "done" in html


# -- commands ------------------------------------------------------------------------------


ASKING = """
from jupyter_agent import Agent
from jupyter_agent.testing import ScriptedModel, call, reply
model = ScriptedModel([call("write_file", path="a.txt", content="hi"), reply("written")])
agent = Agent("ask", model=model, store={store!r}, workspace={ws!r}, policy={{"write_file": "ask"}})
assert agent.start("write it").wait(30) == "awaiting_approval"
"""


@pytest.mark.parametrize("verb", ["approve", "deny"])
async def test_a_decision_for_a_session_no_process_runs_is_kept_for_the_one_that_resumes_it(
    jp_fetch: Any, store_path: Path, tmp_path: Path, verb: str
) -> None:
    """What a kernel restart leaves: a call waiting for a person, and nobody running it."""
    ws = tmp_path / "ws"
    script = ASKING.format(store=str(store_path), ws=str(ws))
    done = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    assert await done.wait() == 0
    store = SqliteStore(store_path)
    (row,) = store.list_sessions()
    assert (row.status, row.runtime_id) == ("awaiting_approval", None)
    call_id = open_session(row.id, store=store_path).pending_approvals[0].call_id
    r = await post(jp_fetch, row.id, {"verb": verb, "call_id": call_id, "reason": "ok"})
    assert r.code == 202 and json.loads(r.body)["runtime_id"] is None
    other = "deny" if verb == "approve" else "approve"  # a second decision, while it waits
    for second in (verb, other):
        with pytest.raises(HTTPClientError) as err:
            await post(jp_fetch, row.id, {"verb": second, "call_id": call_id})
        assert err.value.code == 409
        done = "approved" if verb == "approve" else "denied"
        assert f"is {done} already" in error_of(err)["message"]
    model = ScriptedModel([call("write_file", path="a.txt", content="hi"), reply("written")])
    again = open_session(row.id, store=store_path, model=model).resume()
    assert again.wait(30) == "done"  # the run took the decision before it settled the call
    assert (ws / "a.txt").exists() is (verb == "approve")
    decided = next(e for e in again.events if e.kind is EventKind.APPROVAL_DECIDED)
    assert decided.payload["decision"] == verb and decided.actor == current_identity()


async def test_commands_with_no_live_process_do_what_needs_none_and_record_the_user(
    jp_fetch: Any, store_path: Path
) -> None:
    sid = paused_elsewhere_kind(store_path)
    told = await post(jp_fetch, sid, {"verb": "tell", "text": "look at the logs"})
    user = current_identity()  # anonymous token users of a one-person server: its owner
    assert told.code == 200 and json.loads(told.body)["actor"] == user
    forked = await post(jp_fetch, sid, {"verb": "fork", "at": 4, "name": "other"})
    fork_id = json.loads(forked.body)["session_id"]
    assert forked.code == 201
    restored = await post(jp_fetch, sid, {"verb": "restore", "at": 11})
    assert restored.code == 200
    stopped = await post(jp_fetch, sid, {"verb": "stop"})
    assert stopped.code == 200

    store = SqliteStore(store_path)
    events = list(store.iter_events(sid))
    message = next(e for e in events if e.kind is EventKind.MESSAGE)
    assert (message.actor, message.payload["text"]) == (user, "look at the logs")
    assert events[-2].kind is EventKind.RESTORE and events[-2].actor == user
    assert store.get_session(sid).status == "stopped"
    assert store.get_session(fork_id).parent_id == sid


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"verb": "explode"}, 400, "unknown verb"),
        ({"verb": "tell"}, 400, 'needs \\"text\\"'),
        ({"verb": "approve"}, 400, "call_id"),
        ({"verb": "restore", "at": "x"}, 400, 'needs \\"at\\"'),
        (["pause"], 400, "JSON object"),
        ({"verb": "approve", "call_id": "c1"}, 409, "no call 'c1' waits for approval"),
        ({"verb": "pause"}, 409, "no live process runs"),
        ({"verb": "restore", "at": 999}, 400, "give an event"),
        ({"verb": "fork", "name": 5}, 400, '\\"name\\" must be text'),
        ({"verb": "fork", "workspace": ["x"]}, 400, '\\"workspace\\" must be text'),
        (b"\xff\xfe", 400, "send JSON in UTF-8"),
    ],
)
async def test_a_bad_command_is_a_clear_error(
    jp_fetch: Any, store_path: Path, body: object, status: int, says: str
) -> None:
    sid = paused_elsewhere_kind(store_path)
    with pytest.raises(HTTPClientError) as err:
        if isinstance(body, bytes):
            await jp_fetch(*API, "sessions", sid, "commands", method="POST", body=body)
        else:
            await post(jp_fetch, sid, body)
    assert err.value.code == status
    assert err.value.response is not None and says in err.value.response.body.decode()
    assert error_of(err)["status"] == status


@pytest.mark.parametrize("sid", ["nope", "x y", "a%2Fb", "é"])
async def test_a_session_that_is_not_there_is_a_json_404_whatever_its_id(
    jp_fetch: Any, store_path: Path, sid: str
) -> None:
    finished(store_path)
    for parts in [(sid,), (sid, "events"), (sid, "snapshot")]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(*API, "sessions", *parts)
        assert err.value.code == 404 and "no session" in error_of(err)["message"]


async def test_a_fork_from_the_api_may_have_its_own_workspace(
    jp_fetch: Any, store_path: Path, tmp_path: Path
) -> None:
    model = ScriptedModel([*WRITER[:2], reply("written")])
    s = Agent("w", model=model, store=store_path, workspace=tmp_path / "ws").run("write")
    at = [e.seq for e in s.events if e.kind is EventKind.TOOL_RESULT][3]  # the first version
    body = {"verb": "fork", "at": at, "name": "v1", "workspace": str(tmp_path / "v1")}
    forked = await post(jp_fetch, s.id, body)
    assert forked.code == 201
    assert (tmp_path / "v1" / "f0.txt").read_text() == "f0 v1"
    assert (tmp_path / "ws" / "f0.txt").read_text() == "f0 v2"


async def test_restores_sent_at_once_take_turns_and_leave_the_files_as_the_log_says(
    jp_fetch: Any, store_path: Path, tmp_path: Path
) -> None:
    model = ScriptedModel([*WRITER, reply("written")])
    s = Agent("w", model=model, store=store_path, workspace=tmp_path / "ws").run("write")
    s.release()
    results = [e.seq for e in s.events if e.kind is EventKind.TOOL_RESULT]
    points = [results[k] for k in (3, 7, 11, 15)] * 3  # after each version's four files

    async def restore(at: int) -> int:
        try:
            return int((await post(jp_fetch, s.id, {"verb": "restore", "at": at})).code)
        except HTTPClientError as exc:
            return exc.code

    codes = await asyncio.gather(*(restore(at) for at in points))
    assert set(codes) <= {200, 409}, codes  # 409: "already at" that point, said in one line
    store = SqliteStore(store_path)
    last = [e for e in store.iter_events(s.id) if e.kind is EventKind.RESTORE][-1]
    version = points.index(last.payload["to_seq"]) + 1
    assert {p.name: p.read_text() for p in sorted((tmp_path / "ws").iterdir())} == {
        f"f{i}.txt": f"f{i} v{version}" for i in range(4)
    }


async def test_a_restore_for_a_process_to_do_is_checked_before_it_is_queued(
    jp_fetch: Any, store_path: Path
) -> None:
    sid = paused_elsewhere_kind(store_path)
    store = SqliteStore(store_path)
    holder = this_process("rt-live-here", "ann", time.time())  # alive: this very process
    store.register_runtime(holder)
    store.acquire_lease(sid, holder.id, now=time.time())
    last = store.get_session(sid).last_seq
    answer = next(e.seq for e in store.iter_events(sid) if e.kind is EventKind.MODEL_RESPONSE)
    for at, says in [
        (10**12, "give an event"),
        (0, "give an event"),
        (answer, "inside a step"),
        (last, "nothing to restore"),
    ]:
        with pytest.raises(HTTPClientError) as err:
            await post(jp_fetch, sid, {"verb": "restore", "at": at})
        assert err.value.code == 400
        assert err.value.response is not None and says in err.value.response.body.decode()
    assert not store.take_commands(sid, taken_by="test")  # none was queued
    queued = await post(jp_fetch, sid, {"verb": "restore", "at": 4})
    assert queued.code == 202 and json.loads(queued.body)["runtime_id"] == holder.id


async def test_a_command_for_a_finished_session_is_refused(jp_fetch: Any, store_path: Path) -> None:
    sid = finished(store_path)
    with pytest.raises(HTTPClientError) as err:
        await post(jp_fetch, sid, {"verb": "pause"})
    assert err.value.code == 409


BUSY_KERNEL = """
import sys, time
from jupyter_agent import Agent
s = Agent("busy", model="demo:loop?steps=100000&pace=0.05", store=sys.argv[1]).start("loop")
print(s.id, flush=True)
time.sleep(120)  # the main thread is busy, like a kernel running a long cell
"""


async def test_commands_reach_a_session_running_in_another_busy_process(
    jp_fetch: Any, store_path: Path
) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BUSY_KERNEL, str(store_path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        sid = (await worker.stdout.readline()).decode().strip()
        store = SqliteStore(store_path)

        async def status_becomes(wanted: str) -> float:
            started = time.monotonic()
            while store.get_session(sid).status != wanted:
                assert time.monotonic() - started < 5, f"still {store.get_session(sid).status}"
                await asyncio.sleep(0.05)
            return time.monotonic() - started

        r = await post(jp_fetch, sid, {"verb": "pause"})
        assert r.code == 202 and json.loads(r.body)["runtime_id"]
        assert await status_becomes("paused") < 2
        await post(jp_fetch, sid, {"verb": "tell", "text": "from the sidebar"})
        await post(jp_fetch, sid, {"verb": "resume"})
        await status_becomes("running")
        await post(jp_fetch, sid, {"verb": "stop"})
        await status_becomes("stopped")
        user = current_identity()
        message = next(e for e in store.iter_events(sid) if e.kind is EventKind.MESSAGE)
        assert (message.actor, message.payload["text"]) == (user, "from the sidebar")
        stop = [e for e in store.iter_events(sid) if e.kind is EventKind.STATUS_CHANGED][-1]
        assert stop.payload["status"] == "stopped" and stop.actor == user
    finally:
        worker.kill()
        await worker.wait()
