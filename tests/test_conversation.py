"""The conversation stored in chunks beside the snapshots: a fresh process rebuilds it from the
chunks (not from every message event), and gets exactly what folding the whole log gives,
through restores, forks and stores written before chunks existed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_agent import Agent, ToolContext, tool
from jupyter_agent._engine import SNAPSHOT_EVERY
from jupyter_agent._models._base import Message, ToolCallRequest
from jupyter_agent._runtime import get_runtime
from jupyter_agent._state import (
    MESSAGE_KINDS,
    SessionState,
    decode_messages,
    encode_messages,
    load_state,
)
from jupyter_agent._store import SqliteStore
from jupyter_agent.testing import ScriptedModel, call, reply


class CountingStore(SqliteStore):
    """A store that counts the message events read to rebuild a conversation."""

    rows_read = 0

    def iter_rows(self, session_id: str, **kw: Any) -> Iterator[tuple[int, str, str, str]]:
        for row in super().iter_rows(session_id, **kw):
            self.rows_read += 1
            yield row


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def chunks(db: Path, session_id: str) -> list[tuple[int, int | None, int]]:
    """``(seq, base_seq, messages)`` of each chunk of the session, oldest first."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq, base_seq, messages FROM conversations WHERE session_id = ? ORDER BY seq",
            (session_id,),
        ).fetchall()
    out = []
    for seq, base, text in rows:
        said: list[Message] = []
        decode_messages(text, said)
        out.append((seq, base, len(said)))
    return out


def cold_state(db: Path, session_id: str, at: int | None = None) -> tuple[SessionState, int]:
    """The state as a fresh process loads it, and how many message events it read for it."""
    with CountingStore(db) as store:
        return load_state(store, session_id, at=at), store.rows_read


def folded(session: Any, at: int | None = None) -> SessionState:
    return SessionState.fold(session.id, [e for e in session.events if at is None or e.seq <= at])


def test_messages_round_trip_through_a_chunk() -> None:
    said = [
        Message("system", "be brief"),
        Message("user", "hi", (), None, "ann"),
        Message("assistant", "", (ToolCallRequest("c1", "read_file", '{"path": "ü.txt"}'),)),
        Message("tool", "boom", (), "c1", "read_file", True),
        Message("assistant", "done"),
    ]
    back: list[Message] = []
    decode_messages(encode_messages(said), back)
    assert back == said


def test_the_model_is_sent_what_was_said_field_by_field(db: Path) -> None:
    """The conversation folded from the log: each answer with its calls, each result with its
    call, its tool and whether it failed; and the same from the stored chunks in a fresh
    process."""

    @tool
    def look(path: str) -> str:
        """Read a path."""
        if path == "missing":
            raise FileNotFoundError(path)
        return f"contents of {path}"

    more = [call("look", path=f"p{i}") for i in range(SNAPSHOT_EVERY)]  # past a snapshot
    turns = [call("look", path="a"), call("look", path="missing"), *more, reply("ok")]
    model = ScriptedModel(turns)
    s = Agent("asks", model=model, tools=[look], store=db, instructions="be brief").run("go")
    said = list(model.requests[-1].messages)
    assert said[:4] == [
        Message("system", "be brief"),
        Message("user", "go"),
        Message("assistant", "", (ToolCallRequest("call_0_0", "look", '{"path": "a"}'),)),
        Message("tool", "contents of a", (), "call_0_0", "look", False),
    ]
    assert said[4] == Message(
        "assistant", "", (ToolCallRequest("call_1_0", "look", '{"path": "missing"}'),)
    )
    failed = said[5]
    assert (failed.role, failed.tool_call_id, failed.name, failed.is_error) == (
        "tool",
        "call_1_0",
        "look",
        True,
    )
    assert "missing" in failed.content
    assert said[-1] == Message(
        "tool", f"contents of p{SNAPSHOT_EVERY - 1}", (), said[-1].tool_call_id, "look", False
    )
    assert len(said) == 2 + 2 * len(turns[:-1])
    state, rows_read = cold_state(db, s.id)
    assert chunks(db, s.id) and rows_read < s.row.last_seq / 2  # rebuilt from the chunks
    assert state.messages[: len(said)] == said
    before_the_answer = cold_state(db, s.id, at=s.row.last_seq - 2)[0]  # a point in the past
    assert before_the_answer.messages == said


def test_each_snapshot_stores_only_the_messages_said_since_the_one_before(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=120", store=db, max_steps=500).run("loop")
    stored = chunks(db, s.id)
    assert len(stored) >= 3
    assert stored[0][1] is None  # the first one holds everything said so far
    assert [base for _, base, _ in stored[1:]] == [seq for seq, _, _ in stored[:-1]]
    total = sum(n for _, _, n in stored)
    assert total == len(folded(s, at=stored[-1][0]).messages)  # each message stored once


def test_a_fresh_process_rebuilds_the_conversation_from_chunks_not_events(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=120", store=db, max_steps=500).run("loop")
    last_chunk = chunks(db, s.id)[-1][0]
    state, rows_read = cold_state(db, s.id)
    assert state.comparable() == folded(s).comparable()
    assert rows_read <= s.row.last_seq - last_chunk  # only events after the newest chunk
    assert len(state.messages) > 200


def test_every_earlier_point_loads_cold_as_the_fold_of_the_log_up_to_it(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=60", store=db, max_steps=500).run("loop")
    for at in (1, 5, 99, 100, 101, 150, 200, s.row.last_seq - 1):
        assert cold_state(db, s.id, at=at)[0].comparable() == folded(s, at=at).comparable()


def test_restores_store_a_conversation_they_can_rebuild_cold(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=120", store=db, max_steps=1000).run("loop")
    s.restore(at=31)  # back to before the first chunk
    s.resume().wait(timeout=60)
    s.restore(at=251)  # forward again, into the branch the first restore left
    s.resume().wait(timeout=60)
    assert s.status == "done"
    restores = [e.seq for e in s.events if e.kind.value == "restore"]
    stored = chunks(db, s.id)
    after_first = [(seq, base) for seq, base, _ in stored if restores[0] < seq < restores[1]]
    after_second = [(seq, base) for seq, base, _ in stored if seq > restores[1]]
    # no chunk holds the conversation at 31: the next one holds all of it again
    assert after_first and after_first[0][1] is None
    # the newest one before 251 begins the conversation at 251: the next one adds to it
    before_251 = max(seq for seq, _, _ in stored if seq <= 251)
    assert after_second and after_second[0][1] == before_251
    assert cold_state(db, s.id)[0].comparable() == folded(s).comparable()
    for at in (restores[0] + 1, restores[1] - 1, restores[1] + 50):
        assert cold_state(db, s.id, at=at)[0].comparable() == folded(s, at=at).comparable()


def test_a_fork_starts_from_its_parents_chunks_and_stores_its_own(db: Path) -> None:
    parent = Agent("p", model="demo:loop?steps=120", store=db, max_steps=500).run("loop")
    fork = parent.fork(at=251)
    state, rows_read = cold_state(db, fork.id)
    assert state.comparable() == SessionState.fold(fork.id, fork.events).comparable()
    assert rows_read < 100  # the parent's chunk at 200, then its events up to the fork point
    fork.tell("go on")
    fork.resume().wait(timeout=60)
    own = chunks(db, fork.id)
    assert own and own[0][1] is None  # its first chunk holds everything it has said
    assert cold_state(db, fork.id)[0].comparable() == (
        SessionState.fold(fork.id, fork.events).comparable()
    )


def test_a_store_without_chunks_still_loads_and_its_next_run_writes_them(db: Path) -> None:
    s = Agent("long", model="demo:loop?steps=60", store=db, max_steps=500).run("loop")
    with sqlite3.connect(db) as conn:  # as a store from before chunks were kept
        conn.execute("DELETE FROM conversations")
    state, rows_read = cold_state(db, s.id)
    assert state.comparable() == folded(s).comparable()
    snap = s.store.latest_snapshot(s.id)
    assert snap is not None
    said = [e for e in s.events if e.kind in MESSAGE_KINDS and e.seq <= snap[0]]
    assert rows_read == len(said)  # rebuilt from every message event up to the snapshot
    results = [e.seq for e in s.events if e.kind.value == "tool_result"]
    s.restore(at=results[len(results) // 3])  # and run the rest again
    s.resume().wait(timeout=60)
    assert chunks(db, s.id)[0][1] is None
    assert cold_state(db, s.id)[0].comparable() == folded(s).comparable()


def test_a_message_that_is_not_valid_unicode_is_stored_escaped(db: Path) -> None:
    @tool(effect="read_only")
    def odd_name() -> str:
        """A file name that is not UTF-8, as the file tools report it."""
        return "bad-\udcff.txt"

    model = ScriptedModel(lambda r: reply("done") if r.step > 60 else call("odd_name"))
    s = Agent("odd", model=model, tools=[odd_name], store=db, max_steps=100).run("list")
    assert s.status == "done"
    assert chunks(db, s.id)  # written past the first snapshot
    state, _ = cold_state(db, s.id)
    assert state.comparable() == folded(s).comparable()
    assert state.messages[-2].content == "bad-\udcff.txt"


def test_a_session_paused_more_often_than_a_snapshot_is_due_still_takes_them(db: Path) -> None:
    every = 10  # steps between pauses: ~30 events a run, a third of SNAPSHOT_EVERY

    @tool(effect="read_only")
    def count(n: int, ctx: ToolContext) -> str:
        """Counts, and pauses the session every few steps."""
        if n % every == 0:
            get_runtime().inbox(ctx.session_id).pause_requested = "test"
        return f"counted {n}"

    model = ScriptedModel(lambda r: reply("done") if r.step > 100 else call("count", n=r.step))
    s = Agent("c", model=model, tools=[count], store=db, max_steps=500).start("count")
    while s.wait(30) == "paused":
        s.resume()
    assert s.status == "done"
    seqs = [seq for seq, _, _ in chunks(db, s.id)]
    assert len(seqs) >= s.row.last_seq // SNAPSHOT_EVERY - 1
    assert all(b - a >= SNAPSHOT_EVERY for a, b in zip([0, *seqs], seqs, strict=False))
    state, read = cold_state(db, s.id)  # a fresh process: the newest chunk, what came after
    assert state.comparable() == folded(s).comparable() and read < SNAPSHOT_EVERY


def test_each_resume_in_one_process_goes_on_from_the_newest_chunk(db: Path) -> None:
    pause_at = {30, 60, 90}

    @tool(effect="read_only")
    def count(n: int, ctx: ToolContext) -> str:
        """Counts, and pauses the session now and then."""
        if n in pause_at:
            get_runtime().inbox(ctx.session_id).pause_requested = "test"
        return f"counted {n}"

    model = ScriptedModel(lambda r: reply("done") if r.step > 200 else call("count", n=r.step))
    s = Agent("c", model=model, tools=[count], store=db, max_steps=500).start("count")
    for _ in pause_at:
        assert s.wait(30) == "paused"
        s.resume()
    assert s.wait(30) == "done"
    stored = chunks(db, s.id)
    assert len(stored) >= 4
    assert [base for _, base, _ in stored[1:]] == [seq for seq, _, _ in stored[:-1]]
    assert sum(n for _, _, n in stored) == len(folded(s, at=stored[-1][0]).messages)
