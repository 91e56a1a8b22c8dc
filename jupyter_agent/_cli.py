"""``jupyter-agent`` (also ``jupyter agent``): sessions in the store, from a terminal.

Every user error is one line on stderr and exit code 2; the store is never created by a
command that only reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import JupyterAgentError
from ._events import verify_chain
from ._store import STATUSES, Command, SessionRow, SqliteStore, default_store_path
from ._store._leases import SessionLeased
from ._timeline import counted, format_rows, timeline
from ._watch import cost_text

if TYPE_CHECKING:
    from ._session import Session

EXIT_USAGE = 2


EXPORT_FORMATS = ("markdown", "md", "json", "jsonl")  # the keys of _export.EXPORTERS
DEMO_SCENARIOS = ("fix", "explore", "watch", "loop")  # the demo model's (_models._demo)


class CliError(Exception):
    """A one-line error for the person at the terminal."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        result: int = args.run(args)
        return result
    except (CliError, JupyterAgentError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:  # a file we were asked to write or read
        if isinstance(exc, BrokenPipeError):  # `... | head`: the reader left; that is fine
            _quiet_stdout()
            return 0
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except sqlite3.Error as exc:
        return _fail(f"the store could not be read: {exc}")
    except KeyboardInterrupt:
        print("jupyter-agent: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(_printable(f"jupyter-agent: error: {message}"), file=sys.stderr)
    return EXIT_USAGE


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jupyter-agent",
        description=(
            "Durable LLM agent sessions: list, inspect, export and verify them; pause, stop, "
            "tell, approve, deny, resume, fork and restore them."
        ),
    )
    p.add_argument(
        "--db",
        "--store",
        dest="db",
        metavar="PATH",
        help=f"the store file (default: $JUPYTER_AGENT_DB or {default_store_path()})",
    )
    # --db also after the command (`jupyter-agent show ID --db F`); unset there, it leaves the
    # value given before it alone (--store, as the magics spell it, is the same option)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        "--store",
        dest="db",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[db])

    c = sub.add_parser(
        "sessions", aliases=["list"], help="list every session in the store", parents=[db]
    )
    c.add_argument("--status", choices=STATUSES, help="only sessions with this status")
    c.add_argument("--json", action="store_true", help="one JSON object per line")
    c.set_defaults(run=cmd_sessions)

    c = command("show", help="a session's timeline: one line per step and tool call")
    c.add_argument("id", help="session id (or a unique prefix)")
    c.set_defaults(run=cmd_show)

    c = command("events", help="a session's raw events")
    c.add_argument("id")
    c.add_argument("--json", action="store_true", help="one JSON object per line")
    c.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after SEQ")
    c.set_defaults(run=cmd_events)

    c = command("export", help="a session as JSON or Markdown")
    c.add_argument("id")
    c.add_argument("--format", choices=EXPORT_FORMATS, default="markdown")
    c.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    c.set_defaults(run=cmd_export)

    c = command("verify", help="check a session's hash chain (detects edited events)")
    c.add_argument("id", nargs="?", help="one session (default: all)")
    c.set_defaults(run=cmd_verify)

    c = command("resume", help="resume a session here and wait (built-in tools only)")
    c.add_argument("id")
    c.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="CALL",
        help="approve a waiting call (run it again)",
    )
    c.add_argument(
        "--deny", action="append", default=[], metavar="CALL", help="skip a waiting call"
    )
    c.set_defaults(run=cmd_resume)

    c = command("pause", help="pause a running session at its next step boundary")
    c.add_argument("id")
    c.set_defaults(run=cmd_control, verb="pause")

    c = command("stop", help="stop a session for good (if it runs: at its next step boundary)")
    c.add_argument("id")
    c.set_defaults(run=cmd_control, verb="stop")

    c = command("tell", help="send a session a message, read at its next step")
    c.add_argument("id")
    c.add_argument("text", help="the message (quote it)")
    c.set_defaults(run=cmd_tell)

    c = command("approve", help="let a call that waits for a person run")
    c.add_argument("id")
    c.add_argument("call", help="the waiting call's id (`show` lists them)")
    c.set_defaults(run=cmd_decide, approve=True, reason="")

    c = command("deny", help="skip a call that waits for a person")
    c.add_argument("id")
    c.add_argument("call", help="the waiting call's id (`show` lists them)")
    c.add_argument("--reason", default="", help="why, for the model and the log")
    c.set_defaults(run=cmd_decide, approve=False)

    c = command("fork", help="a new, paused session branching after an event")
    c.add_argument("id")
    c.add_argument("--at", type=int, metavar="SEQ", help="branch after this event (default: last)")
    c.add_argument("--name", help="the new session's name")
    c.add_argument("--workspace", metavar="DIR", help="a new folder: a copy of the files then")
    c.set_defaults(run=cmd_fork)

    c = command("restore", help="rewind a session to an event (files included)")
    c.add_argument("id")
    c.add_argument("--at", type=int, metavar="SEQ", required=True, help="the event to go back to")
    c.set_defaults(run=cmd_restore)

    c = command("demo", help="run an offline session on the demo model and show it")
    c.add_argument("--scenario", default="fix", choices=DEMO_SCENARIOS, help="default: fix")
    c.add_argument("--steps", type=int, default=None, help="turns for the loop/watch scenarios")
    c.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="X",
        help="run the session's clock X times faster than real time (default: 600 for watch, "
        "whose one-minute sleeps then take 0.1 s; 1 otherwise)",
    )
    c.set_defaults(run=cmd_demo)
    return p


# -- helpers ---------------------------------------------------------------------------------


def _store(args: argparse.Namespace, *, create: bool = False) -> SqliteStore:
    path = Path(args.db).expanduser() if args.db else default_store_path()
    if not create and not path.exists():
        raise CliError(
            f"no store at {path} (run `jupyter-agent demo` to make one, or pass "
            "--db / set JUPYTER_AGENT_DB)"
        )
    if not create and path.is_file() and path.stat().st_size == 0:
        raise CliError(f"{path} is an empty file, not a store (reading one never makes it one)")
    store = SqliteStore(path)
    store.sweep(now=time.time())  # show sessions of processes that died as interrupted
    return store


def _prog() -> str:
    """How the person ran this command, so suggestions can be pasted back as they are."""
    exe = Path(sys.argv[0])
    on_path = shutil.which(exe.name)
    return exe.name if on_path and Path(on_path).resolve() == exe.resolve() else str(exe)


def _fit(line: str) -> str:
    """A line of text from a session made safe to print (see ``_printable``), cut to the
    terminal's width when printing to one (files get it whole)."""
    line = _printable(line)
    if not sys.stdout.isatty():
        return line
    width = shutil.get_terminal_size().columns
    return line if len(line) <= width else line[: width - 1] + "…"


# control characters but tab and newline, written as escapes: text from a session (a tool's
# output, a model's answer, a message) may not move the cursor, clear the screen or retitle
# the window of whoever reads it
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (9, 10)}


def _printable(text: str) -> str:
    return text.translate(_CONTROLS)


def _ago(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _header(row: SessionRow) -> list[str]:
    cost = cost_text(row)
    return [
        f"session {row.id}  {row.name!r}  [{row.status}]",
        f"  model {row.model}  owner {row.owner}  started {_ago(row.created_at)}  "
        f"updated {_ago(row.updated_at)}",
        f"  {counted(row.steps, 'step')}, {counted(row.tool_calls, 'tool call')}, "
        f"{row.input_tokens + row.output_tokens} tokens ({row.cached_tokens} cached input), "
        f"cost {cost}",
        f"  goal: {row.goal}",
    ]


def _asked(command: Command) -> str:
    """A control still to be acted on, in a few words: ``stop (ann, 14:02:11)``."""
    what = command.verb
    if command.verb in ("approve", "deny"):
        what += f" {command.args.get('call_id')}"
    elif command.verb == "restore":
        what += f" to event {command.args.get('at')}"
    when = time.strftime("%H:%M:%S", time.localtime(command.created_at))
    return f"{what} ({command.actor}, {when})"


def _print_timeline(store: SqliteStore, session_id: str, after: int = 0) -> int:
    events = list(store.iter_events(session_id, after=after))
    for line in format_rows(timeline(events)):
        print(_fit(line))
    return events[-1].seq if events else after


# -- commands --------------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = store.list_sessions(status=args.status)
        if args.json:
            for row in rows:
                print(json.dumps(asdict(row)))
            return 0
        head = (
            f"{'id':<12}  {'name':<14} {'status':<17} {'owner':<10} {'steps':>5} "
            f"{'tools':>5} {'tokens':>8}  {'started':<16}  updated"
        )
        print(head)
        for r in rows:
            print(
                _printable(
                    f"{r.id:<12}  {(r.name or '')[:14]:<14} {r.status:<17} "
                    f"{(r.owner or '')[:10]:<10} {r.steps:>5} {r.tool_calls:>5} "
                    f"{r.input_tokens + r.output_tokens:>8}  {_ago(r.created_at):<16}  "
                    f"{_ago(r.updated_at)}"
                )
            )
        if not rows:
            print("(no sessions yet: try `jupyter-agent demo`)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        row = store.find_session(args.id)
        print(_printable("\n".join(_header(row))))
        asked = [_asked(c) for c in store.queued_commands(row.id)]
        if asked:  # a stop during a long tool call, say: given, and still to come
            print(_printable(f"  asked, not yet acted on: {', '.join(asked)}"))
        print()
        _print_timeline(store, row.id)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from ._export import json_text

    with _store(args) as store:
        row = store.find_session(args.id)
        for e in store.iter_events(row.id, after=args.after):
            if args.json:
                print(json_text(e.to_dict()))
            else:
                print(
                    _printable(
                        f"{e.seq:>6} {_ago(e.ts)} {e.kind.value:<18} {e.actor:<10} "
                        f"{e.payload_json[:100]}"
                    )
                )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ._export import EXPORTERS, write_export

    with _store(args) as store:
        row = store.find_session(args.id)
        text = EXPORTERS[args.format](store, row)
        if args.output:
            write_export(text, args.output, store)
    if args.output:
        print(f"wrote {_printable(args.output)}")
    else:  # (to a terminal, with its control characters escaped; to a pipe as it is)
        sys.stdout.write(_printable(text) if sys.stdout.isatty() else text)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _store(args) as store:
        ids = [store.find_session(args.id).id] if args.id else [r.id for r in store.list_sessions()]
        bad = 0
        for sid in ids:
            broken = verify_chain(store.iter_events(sid))
            if broken is None:
                print(f"{sid}  ok")
            else:
                bad += 1
                print(f"{sid}  TAMPERED: the chain breaks at event {broken}")
    if bad:
        raise CliError(f"{bad} of {len(ids)} sessions failed verification")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ._agent import open_session

    both = sorted(set(args.approve) & set(args.deny))
    if both:
        raise CliError(f"call {both[0]} is given to both --approve and --deny: give it once")
    with _store(args) as store:
        row = store.find_session(args.id)
    session = open_session(row.id, store=Path(args.db) if args.db else None)
    for call in args.approve:
        session.approve(call)
    for call in args.deny:
        session.deny(call, reason="denied from the command line")
    if not session.running_here:
        try:
            session.resume()
        except SessionLeased as exc:  # it runs there: show it as it goes on
            owner = exc.owner.describe()
            print(_printable(f"{session.id} runs in another process ({owner}): following it"))
    return _follow(session)


CONTROL_WAIT_S = 3.0  # how long pause and stop wait to see the session do it


def _handle(args: argparse.Namespace) -> Session:
    from ._agent import open_session

    with _store(args) as store:
        row = store.find_session(args.id)
    return open_session(row.id, store=Path(args.db) if args.db else None)


def _holder(session: Session) -> str | None:
    """Who runs the session in another live process (described), or None."""
    from ._runtime import get_runtime

    holder = get_runtime().owner_elsewhere(session.store, session.id)
    info = session.store.get_runtime(holder) if holder else None
    return info.describe() if info is not None else None


def cmd_control(args: argparse.Namespace) -> int:
    session, verb = _handle(args), args.verb
    done, does = ("paused", "pauses") if verb == "pause" else ("stopped", "stops")
    holder = _holder(session)
    if holder is None:
        if verb == "pause" and session.status == "interrupted":
            session.pause()  # held where it is: resume_interrupted() leaves it
            print(f"{session.id}: paused (it stays so until it is resumed)")
            return 0
        if verb == "pause":
            raise CliError(
                f"session {session.id} is not running (it is {session.status}): "
                "there is nothing to pause"
            )
        session.stop()  # nobody runs it: recorded here
        print(f"{session.id}: stopped")
        return 0
    if session.status == done:
        print(f"{session.id}: already {done}")
        return 0
    getattr(session, verb)()  # a command for the process that runs it
    deadline = time.monotonic() + CONTROL_WAIT_S
    while session.status not in (done, "done", "failed", "stopped"):
        if time.monotonic() >= deadline:
            print(
                _printable(
                    f"{session.id}: {verb} sent to the process that runs it ({holder}); it "
                    f"{does} at its next step boundary (after the tool call in progress)"
                )
            )
            return 0
        time.sleep(0.05)
    print(f"{session.id}: {session.status}")
    return 0


def cmd_tell(args: argparse.Namespace) -> int:
    session = _handle(args)
    holder = _holder(session)
    session.tell(args.text)
    if holder is not None:
        print(_printable(f"{session.id}: sent to the process that runs it ({holder})"))
    else:
        print(f"{session.id}: recorded; the agent reads it when the session runs again")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    session = _handle(args)
    holder = _holder(session)
    if args.approve:
        session.approve(args.call, run_here=False)
    else:
        session.deny(args.call, args.reason, run_here=False)
    done = "approved" if args.approve else "denied"
    if holder is not None:
        where = f"sent to the process that runs it ({holder})"
    else:
        where = (
            "the decision waits for the process that resumes the session "
            f"(`{_prog()} resume {session.id}` runs it here)"
        )
    print(_printable(f"{session.id}: call {args.call} {done}; {where}"))
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    from ._agent import open_session

    with _store(args) as store:
        row = store.find_session(args.id)
    parent = open_session(row.id, store=Path(args.db) if args.db else None)
    fork = parent.fork(at=args.at, name=args.name, workspace=args.workspace)
    print(_printable(f"{fork.id}  {fork.name} (paused; `jupyter-agent resume {fork.id}` runs it)"))
    if fork.state.workspace == parent.state.workspace:
        folder = fork.state.workspace
        print(_printable(f"  it shares the folder {folder} with {parent.id} (--workspace gives"))
        print("  it a copy of its own): what one does to the files, a restore too, the other sees")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ._agent import open_session

    with _store(args) as store:
        row = store.find_session(args.id)
    session = open_session(row.id, store=Path(args.db) if args.db else None)
    if not session.restore(at=args.at):
        print(f"{session.id}: restore to event {args.at} sent to the process that holds it")
    else:
        print(f"{session.id}: restored to event {args.at}; now {session.status}")
        _print_timeline(session.store, session.id, after=session.row.last_seq - 1)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._agent import Agent
    from ._clock import ScaledClock

    spec = f"demo:{args.scenario}" + (f"?steps={args.steps}" if args.steps else "")
    speed = args.speed if args.speed is not None else 600.0 if args.scenario == "watch" else 1.0
    if speed <= 0:
        raise CliError("--speed must be more than 0 (1 is real time)")
    if args.steps is not None and args.steps < 1:
        raise CliError("--steps must be 1 or more")
    store = _store(args, create=True)
    store.close()
    clock = ScaledClock(speed=speed) if speed != 1 else None
    limit = {"max_steps": args.steps + 10} if args.steps else {}  # (the default is 500)
    agent = Agent("demo", model=spec, store=store.path, clock=clock, **limit)
    session = agent.start(_DEMO_GOALS.get(args.scenario, "Show what you can do."))
    print(f"store:     {agent.store.path}")
    fast = f", clock {speed:g}x real time" if clock else ""
    print(f"session:   {session.id} ({spec}{fast})")
    print(f"workspace: {session.state.workspace}")
    print()
    status = _follow(session)
    print()
    db = "" if agent.store.path == default_store_path() else f" --db {agent.store.path}"
    print(f"see it again:  {_prog()}{db} show {session.id}")
    return status


_DEMO_GOALS = {
    "fix": "The tests in this folder fail. Find out why and fix the code.",
    "explore": "Explore this folder and summarise what is in it.",
    "watch": "Watch the service latency; open an incident if it goes above 300 ms.",
    "loop": "Run the scripted loop of tool calls.",
}


def _follow(session: object) -> int:
    """Print the session's timeline as it grows, until it stops running (here, or in the
    process it was sent to)."""
    from ._runtime import get_runtime
    from ._session import Session

    assert isinstance(session, Session)
    inbox = get_runtime().inbox(session.id)
    printed = 0
    while not inbox.rests_on_a_person() if session.running_here else session._busy_elsewhere():
        printed = _print_new_rows(session, printed, final=False)
        time.sleep(0.1)
    session.wait()
    _print_new_rows(session, printed, final=True)
    row = session.row
    totals = f"{counted(row.steps, 'step')}, {counted(row.tool_calls, 'tool call')}"
    print(f"\nstatus: {row.status}  ({totals})")
    if row.status == "awaiting_approval":
        for a in session.pending_approvals:
            print(
                _printable(
                    f"waiting for a person: call {a.call_id} {a.name} ({a.reason}): "
                    f"jupyter-agent resume {session.id} --approve {a.call_id}  (or --deny)"
                )
            )
    return 0 if row.status in ("done", "awaiting_approval", "paused") else 1


def _print_new_rows(session: Session, printed: int, *, final: bool) -> int:
    """Print rows not printed yet, stopping before a tool call still running (unless final)."""
    rows = timeline(session.store.iter_events(session.id))[printed:]
    if not final:
        running = [i for i, r in enumerate(rows) if r.status == "running"]
        rows = rows[: running[0]] if running else rows
    for line in format_rows(rows):
        print(_fit(line), flush=True)
    return printed + len(rows)
