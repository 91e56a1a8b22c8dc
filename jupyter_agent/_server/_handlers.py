"""The REST API under ``/jupyter-agent/api/``: every session in the store, their events, a live
stream, and controls that reach the owning kernel through the store even while it is busy.

Every handler is an authenticated, authorized ``APIHandler``: no token or cookie → 403, and a
write with a cookie but no XSRF token → 403, as everywhere in jupyter_server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from .._errors import JupyterAgentError, SessionNotFound, StoreError
from .._identity import current_identity
from .._snapshot import snapshot_html
from .._store import STATUSES, SessionRow, SqliteStore
from .._watch import MAX_PAGE, PAGE_SIZE, SessionFeed, compact_event
from . import _commands

T = TypeVar("T")
_ANONYMOUS = re.compile(r"[0-9a-f]{32}")  # jupyter_server's generated anonymous usernames
STREAM_INTERVAL_S = 0.25
STREAM_KEEPALIVE_S = 15.0
STREAM_MAX_EVENTS = 50  # per session per tick; beyond that a view reloads the session instead
SWEEP_EVERY_S = 2.0


def session_json(row: SessionRow) -> dict[str, Any]:
    """A session row as the API shows it."""
    data = asdict(row)
    data.pop("last_hash", None)
    data["needs_you"] = row.status == "awaiting_approval"
    return data


class _Base(APIHandler):
    auth_resource = "jupyter_agent"

    @property
    def store(self) -> SqliteStore:
        store: SqliteStore = self.settings["jupyter_agent_store"]
        return store

    @property
    def user_name(self) -> str:
        """Who acts: the Jupyter user; on a single-user server whose users are anonymous
        (a token, no JupyterHub), the person running the server, as kernels name them."""
        user = self.current_user
        name = str(getattr(user, "username", "") or "")
        if not name or _ANONYMOUS.fullmatch(name):
            return current_identity()
        return name

    async def off_loop(self, fn: Callable[[], T]) -> T:
        """Run a store call in a worker thread: SQLite waits never block the server."""
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    def sweep_now_and_then(self) -> None:
        """Mark sessions of dead kernels ``interrupted`` (at most every few seconds)."""
        last = self.settings.get("jupyter_agent_swept", 0.0)
        if time.monotonic() - last >= SWEEP_EVERY_S:
            self.settings["jupyter_agent_swept"] = time.monotonic()
            self.store.sweep(now=time.time())

    def reply(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def fail(self, status: int, message: str) -> None:
        self.reply({"message": message, "status": status}, status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error in the one shape ``fail`` gives (``message``: what to do), never a page
        or a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = ""
        if isinstance(exc, web.HTTPError):
            message = exc.reason or (exc.log_message % exc.args if exc.log_message else "")
        self.set_status(status_code)  # (clears a reason given for the error: the message has it)
        self.fail(status_code, message or self._reason)

    def int_arg(self, name: str, default: int | None = None, *, least: int = 0) -> int | None:
        raw = self.get_argument(name, None)
        if not raw:  # absent, or given empty (?limit=): the default
            return default
        try:
            value = int(raw)
        except ValueError:
            raise web.HTTPError(400, reason=f"{name} must be an integer, not {raw!r}") from None
        if value < least:
            raise web.HTTPError(400, reason=f"{name} must be {least} or more, not {raw!r}")
        return value


class SessionsHandler(_Base):
    """``GET sessions?status=&owner=&limit=&offset=``: newest first."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        # an empty filter (?status=&owner=) filters nothing
        status = self.get_argument("status", None) or None
        owner = self.get_argument("owner", None) or None
        if status is not None and status not in STATUSES:
            raise web.HTTPError(400, reason=f"status must be one of {', '.join(STATUSES)}")
        limit = min(self.int_arg("limit", 100, least=1) or 100, 1000)
        offset = self.int_arg("offset", 0) or 0

        def read() -> tuple[list[SessionRow], int]:
            self.sweep_now_and_then()
            rows = self.store.list_sessions(status=status)
            if owner is not None:
                rows = [r for r in rows if r.owner == owner]
            return rows[offset : offset + limit], len(rows)

        rows, total = await self.off_loop(read)
        self.reply({"sessions": [session_json(r) for r in rows], "total": total, "offset": offset})


class SessionHandler(_Base):
    """``GET sessions/ID``: the row, plus header, plan and pending approvals (``?row=1``: the
    row alone, which a view that only watches the status reads without a fold)."""

    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        only_row = self.get_argument("row", "") in ("1", "true")
        try:
            row, summary = await self.off_loop(lambda: self._read(session_id, only_row))
        except SessionNotFound as exc:
            return self.fail(404, str(exc))
        self.reply({"session": session_json(row), **summary})

    def _read(self, session_id: str, only_row: bool) -> tuple[SessionRow, dict[str, Any]]:
        self.sweep_now_and_then()  # a kernel that died says so here too
        row = self.store.find_session(session_id)
        return row, {} if only_row else SessionFeed(self.store, row.id).summary()


class EventsHandler(_Base):
    """``GET sessions/ID/events``: ``?after=N`` (what came since), ``?before=N`` (an older
    page), neither (the newest page), or ``?seq=3,4`` (whole events); ``limit`` ≤ 500."""

    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        after, before = self.int_arg("after"), self.int_arg("before")
        limit = min(self.int_arg("limit", PAGE_SIZE, least=1) or PAGE_SIZE, MAX_PAGE)
        seqs = self.get_argument("seq", None)

        def read() -> dict[str, Any]:
            feed = SessionFeed(self.store, self.store.find_session(session_id).id)
            if seqs:
                return {"events": feed.detail([int(s) for s in seqs.split(",")])}
            if after is not None:
                return feed.after(after, limit=limit)
            if before is not None:
                return {"mode": "page", **feed.page(before=before, limit=limit)}
            return {"mode": "page", **feed.newest_page(limit)}

        try:
            data = await self.off_loop(read)
        except SessionNotFound as exc:
            return self.fail(404, str(exc))
        except ValueError:
            return self.fail(400, "seq must be a comma-separated list of event numbers")
        self.reply(data)


class SnapshotHandler(_Base):
    """``GET sessions/ID/snapshot``: the static HTML a saved notebook carries for it."""

    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        def read() -> str:
            return snapshot_html(self.store, self.store.find_session(session_id).id)

        try:
            self.reply({"html": await self.off_loop(read)})
        except SessionNotFound as exc:
            self.fail(404, str(exc))


class CommandsHandler(_Base):
    """``POST sessions/ID/commands`` with ``{"verb": ..., ...}``: recorded with the Jupyter
    user as its author; 202 when queued for the kernel that runs the session, 200 when done
    here (a fork answers 201 with the new session's id)."""

    @web.authenticated
    @authorized
    async def post(self, session_id: str) -> None:
        try:
            verb, args = _commands.parse(self.get_json_body())
        except UnicodeDecodeError:
            return self.fail(400, 'send JSON in UTF-8, like {"verb": "pause"}')
        except (ValueError, web.HTTPError) as exc:
            return self.fail(400, getattr(exc, "log_message", None) or str(exc))
        actor = self.user_name

        def act() -> _commands.Outcome:
            sid = self.store.find_session(session_id).id
            return _commands.apply(self.store, sid, verb, args, actor=actor)

        try:
            outcome = await self.off_loop(act)
        except SessionNotFound as exc:
            return self.fail(404, str(exc))
        except _commands.CommandRefused as exc:
            data = {"message": str(exc), "status": exc.status, "no_process": exc.no_process}
            return self.reply(data, exc.status)
        except StoreError as exc:
            return self.fail(503, str(exc))
        except (ValueError, JupyterAgentError) as exc:
            return self.fail(409 if isinstance(exc, JupyterAgentError) else 400, str(exc))
        status = 201 if verb == "fork" else 202 if outcome.state == "queued" else 200
        self.reply({"verb": verb, "actor": actor, **outcome.to_dict()}, status)


class StreamHandler(_Base):
    """``GET stream``: server-sent events for every session in the store, from now on:
    ``session`` (a row that changed) and ``event`` (a new event, compact, with its session id;
    a session with more news than fits gets ``reload`` instead)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        known = {r.id: r for r in await self.off_loop(self.store.list_sessions)}
        try:
            await self._send("hello", {"sessions": len(known)})
            quiet_since = time.monotonic()
            while True:
                await asyncio.sleep(STREAM_INTERVAL_S)
                news = await self.off_loop(lambda: self._news(known))
                for name, data in news:
                    await self._send(name, data)
                if news:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > STREAM_KEEPALIVE_S:
                    self.write(": keepalive\n\n")
                    await self.flush()
                    quiet_since = time.monotonic()
        except StreamClosedError:
            return

    def _news(self, known: dict[str, SessionRow]) -> list[tuple[str, Any]]:
        self.sweep_now_and_then()
        news: list[tuple[str, Any]] = []
        for row in self.store.list_sessions():
            old = known.get(row.id)
            if old == row:
                continue
            known[row.id] = row
            start = old.last_seq if old is not None else (row.fork_seq or 0)
            missing = row.last_seq - start
            if 0 < missing <= STREAM_MAX_EVENTS:
                for e in self.store.iter_events(row.id, after=start, until=row.last_seq):
                    news.append(("event", {"session_id": row.id, "event": compact_event(e)}))
            elif missing > STREAM_MAX_EVENTS:
                news.append(("reload", {"session_id": row.id, "last_seq": row.last_seq}))
            news.append(("session", session_json(row)))
        return news

    async def _send(self, name: str, data: object) -> None:
        self.write(f"event: {name}\ndata: {json.dumps(data)}\n\n")
        await self.flush()


def setup_handlers(web_app: Any, store: SqliteStore) -> None:
    web_app.settings["jupyter_agent_store"] = store
    base = url_path_join(web_app.settings.get("base_url", "/"), "jupyter-agent", "api")
    sid = r"(?P<session_id>[^/]+)"  # any id: one that is not a session's is a JSON 404
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "sessions"), SessionsHandler),
            (url_path_join(base, "sessions", sid), SessionHandler),
            (url_path_join(base, "sessions", sid, "events"), EventsHandler),
            (url_path_join(base, "sessions", sid, "commands"), CommandsHandler),
            (url_path_join(base, "sessions", sid, "snapshot"), SnapshotHandler),
            (url_path_join(base, "stream"), StreamHandler),
        ],
    )
