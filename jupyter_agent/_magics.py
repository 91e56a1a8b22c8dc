"""``%%agent`` starts a session from a cell; ``%agent VERB`` lists, shows and steers sessions.

Loaded by ``%load_ext jupyter_agent``. Every verb is a thin call on the public API (``Agent``,
``open_session``, ``Session``), so the magics do nothing the Python API cannot. A mistake in
the arguments, or an error the API reports, is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypedDict

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from ._agent import Agent, ToolLike, open_session, open_store, sessions
from ._errors import JupyterAgentError
from ._export import EXPORTERS, write_export
from ._session import Session
from ._store import default_store_path
from ._store._paths import ENV_VAR
from ._tools import BUILTIN_TOOLS, Tool, tool

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

CELL_USAGE = (
    "%%agent [--name N] [--model M] [--tools a,b] [--budget k=v,...] [--policy t=r,...] "
    "[--workspace DIR] [--worker] "
    "[--store PATH], then the goal on the lines below"
)
VERBS = {
    "list": "%agent list [--status S]",
    "show": "%agent show ID",
    "tell": "%agent tell ID MESSAGE...",
    "pause": "%agent pause ID",
    "resume": "%agent resume ID",
    "stop": "%agent stop ID",
    "approve": "%agent approve ID CALL",
    "deny": "%agent deny ID CALL [--reason R...]",
    "fork": "%agent fork ID [--at N] [--name NAME] [--workspace DIR]",
    "restore": "%agent restore ID --at N",
    "export": "%agent export ID [--format md|json|jsonl] [--out FILE]",
    "help": "%agent help",
}
# --budget keys the Agent enforces today, and the Agent argument each one sets.
BUDGET_KEYS = {"steps": "max_steps", "max_steps": "max_steps"}


class MagicUsageError(Exception):
    """Bad arguments to a magic: shown as one line, with the form that was expected."""


class _Budget(TypedDict, total=False):
    max_steps: int


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises ``MagicUsageError`` instead of printing and exiting."""

    def __init__(self, usage: str) -> None:
        super().__init__(prog="%agent", usage=usage, add_help=False, allow_abbrev=False)
        self.add_argument("--store", metavar="PATH")

    def error(self, message: str) -> NoReturn:
        raise MagicUsageError(f"{message}; usage: {self.usage}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise MagicUsageError(f"{(message or '').strip()}; usage: {self.usage}")


def _verb_parsers() -> dict[str, _Parser]:
    parsers = {verb: _Parser(usage) for verb, usage in VERBS.items()}
    parsers["list"].add_argument("--status")
    for verb in VERBS.keys() - {"list", "help"}:
        parsers[verb].add_argument("id")
    for verb in ("approve", "deny"):
        parsers[verb].add_argument("call")
    parsers["deny"].add_argument("--reason", nargs="+", default=[])
    parsers["fork"].add_argument("--at", type=int)
    parsers["fork"].add_argument("--name")
    parsers["fork"].add_argument("--workspace", metavar="DIR")
    parsers["restore"].add_argument("--at", type=int, required=True)
    export = parsers["export"]
    export.add_argument("--format", choices=["md", "markdown", "json", "jsonl"], default="md")
    export.add_argument("--out", "-o", "--output", metavar="FILE", dest="out")  # (-o as the CLI)
    return parsers


def _cell_parser() -> _Parser:
    p = _Parser(CELL_USAGE)
    p.add_argument("--name")
    p.add_argument("--model")
    p.add_argument("--tools")
    p.add_argument("--budget")
    p.add_argument("--policy")
    p.add_argument("--workspace")
    p.add_argument("--worker", action="store_true")
    return p


@magics_class
class AgentMagics(Magics):
    """``%agent`` and ``%%agent``; registered by ``%load_ext jupyter_agent``."""

    def __init__(self, shell: InteractiveShell | None = None) -> None:
        super().__init__(shell)
        self._parsers = _verb_parsers()
        self._verbs: dict[str, Callable[[argparse.Namespace], None]] = {
            "list": self._list,
            "show": self._show,
            "pause": lambda a: self._control(a, "pause", "pausing at the next step boundary"),
            "resume": lambda a: self._control(a, "resume", "resumed"),
            "stop": lambda a: self._control(a, "stop", "stopping"),
            "approve": self._approve,
            "deny": self._deny,
            "fork": self._fork,
            "restore": self._restore,
            "export": self._export,
        }

    @line_cell_magic
    def agent(self, line: str, cell: str | None = None) -> None:
        """Start, watch and steer agent sessions from the notebook.

        Cell magic: the cell's body is the goal. The session runs in the background; the cell
        returns at once and shows it.

            %%agent [--name N] [--model M] [--tools a,b] [--budget k=v,...] [--policy t=r,...]
                    [--workspace DIR] [--worker]
            The tests in this folder fail. Find out why and fix the code.

          --name N         the agent's name (default: the goal's first words, e.g.
                           fix-the-tests; "agent" if it has none)
          --model M        provider:model, e.g. openai:gpt-4.1-mini, anthropic:claude-sonnet-4-5,
                           demo:fix (default: $JUPYTER_AGENT_MODEL, else demo)
          --tools a,b      built-in tools by name, or @tool functions defined in this notebook
                           (default: every built-in)
          --budget k=v,... limits; supported today: steps=N (at most N model turns)
          --policy t=r,... per tool (or * for any other): allow, ask (wait for a person's
                           approval) or deny, e.g. --policy shell=ask,write_file=deny
          --workspace DIR  the folder the file and shell tools stay inside
                           (default: a new folder beside the store)
          --worker         run it in a process beside the kernel (Agent(worker=True)): the
                           notebook stays quick however many agents run

        Line magic, one verb a line (ID may be a unique prefix of a session's id):

            %agent list [--status S]        every session in the store, as a table
            %agent show ID                  show the session
            %agent tell ID MESSAGE...       a message to the agent, read at its next step
            %agent pause ID                 pause at the next step boundary
            %agent resume ID                run a paused or interrupted session here
            %agent stop ID                  stop: it runs no more (a restore to an earlier
                                            event can still take it back there)
            %agent approve ID CALL          let a call waiting for a person run
            %agent deny ID CALL [--reason R...]
                                            skip a waiting call, telling the agent why
            %agent fork ID [--at N] [--name NAME] [--workspace DIR]
                                            a new, paused session branching after event N
                                            (default: the latest); in a copy of the files
                                            as they were then, given a new --workspace
            %agent restore ID --at N        rewind the session to event N, files included;
                                            nothing is deleted, and it is left paused
            %agent export ID [--format md|json|jsonl] [--out FILE]
                                            the session as a file (default: Markdown, printed)
            %agent help                     this text

        A session's own @tool functions are found in the notebook by name, so ``resume`` (and
        ``approve``/``deny``, which may resume it) work once the cell defining them has run.
        Every form also takes --store PATH (default: $JUPYTER_AGENT_DB, else agent/agent.db in
        the Jupyter data directory). Python: jupyter_agent.Agent, sessions(), open_session().
        """
        try:
            if cell is not None and _asks_help(line):
                print(HELP)
            elif cell is None:
                self._run_verb(line)
            else:
                self._start(line, cell)
        except MagicUsageError as exc:
            print(f"{'%agent' if cell is None else '%%agent'}: {exc}", file=sys.stderr)
        except OSError as exc:  # a file it was asked to read or write
            said = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            print(f"jupyter-agent: {said}", file=sys.stderr)
        except (JupyterAgentError, ValueError) as exc:
            print(f"jupyter-agent: {exc}", file=sys.stderr)

    # -- %%agent ---------------------------------------------------------------------------

    def _start(self, line: str, cell: str) -> None:
        args = _cell_parser().parse_args(_split(line, CELL_USAGE))
        goal = cell.strip()
        if not goal:
            raise MagicUsageError(
                f"the cell's body is the goal, and it is empty; usage: {CELL_USAGE}"
            )
        agent = Agent(
            args.name or name_from(goal),
            model=args.model,
            tools=self._tools(args.tools),
            workspace=args.workspace,
            store=args.store,
            policy=_policy(args.policy),
            worker=args.worker,
            **_budget(args.budget),
        )
        _display(agent.start(goal))

    def _tools(self, spec: str | None) -> list[ToolLike] | None:
        """Built-ins by name; any other name is a tool (or function) in the notebook."""
        if spec is None:
            return None
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise MagicUsageError(
                f"--tools names no tool ({spec!r}): give names, e.g. shell,python"
            )
        user_ns = self.shell.user_ns if self.shell is not None else {}
        tools: list[ToolLike] = []
        for name in names:
            found = user_ns.get(name)
            if name in BUILTIN_TOOLS:
                tools.append(name)
            elif isinstance(found, Tool) or (callable(found) and not isinstance(found, type)):
                try:
                    tools.append(tool(found) if not isinstance(found, Tool) else found)
                except (TypeError, ValueError) as exc:  # e.g. a parameter with no annotation
                    raise MagicUsageError(f"--tools {name}: {exc}") from None
            else:
                raise MagicUsageError(
                    f"unknown tool {name!r}: name a built-in ({', '.join(BUILTIN_TOOLS)}) "
                    "or a @tool function defined in this notebook"
                )
        return tools

    def _open(self, session_id: str, store: str | None) -> Session:
        """A handle that can resume the session: its own tools are looked up in the notebook
        (so ``%agent resume`` works once the cell defining them has run again)."""
        session = open_session(session_id, store=_existing(store))
        own = {n for n in session.state.tools if n not in BUILTIN_TOOLS}
        user_ns = self.shell.user_ns if self.shell is not None else {}
        tools = [t for t in user_ns.values() if isinstance(t, Tool) and t.name in own]
        found = {t.name for t in tools}
        for name in sorted(own - found):  # a plain function %%agent --tools made a tool of
            fn = user_ns.get(name)
            if callable(fn) and not isinstance(fn, type | Tool):
                with contextlib.suppress(TypeError, ValueError):
                    tools.append(tool(fn))
        if not tools:
            return session
        return open_session(session.id, store=store, tools=tools)

    # -- %agent VERB -----------------------------------------------------------------------

    def _run_verb(self, line: str) -> None:
        verb, rest = [*line.split(maxsplit=1), "", ""][:2]
        if verb in ("", "help", "--help", "-h"):
            print(HELP)
        elif verb in VERBS and _asks_help(_options(verb, rest)):
            print(f"usage: {VERBS[verb]}")
        elif verb == "tell":
            self._tell(rest)
        elif verb == "deny":  # the reason is free text, as typed ("it's not safe")
            options, said, reason = f" {rest}".partition(" --reason")
            reason, store = _trailing_store(reason)
            if store is not None:  # (given after the reason, as other verbs take it)
                options = f"{options} --store {store}"
            args = self._parsers[verb].parse_args(_split(options, VERBS[verb]))
            args.reason = [_unquote(reason.strip())] if said else []
            self._deny(args)
        elif verb in self._verbs:
            self._verbs[verb](self._parsers[verb].parse_args(_split(rest, VERBS[verb])))
        else:
            raise MagicUsageError(
                f"unknown verb {verb!r}; one of: {', '.join(VERBS)} (see %agent help)"
            )

    def _list(self, args: argparse.Namespace) -> None:
        _display(sessions(store=_existing(args.store), status=args.status))

    def _show(self, args: argparse.Namespace) -> None:
        _display(self._open(args.id, args.store))

    def _tell(self, rest: str) -> None:
        """``tell [--store PATH] ID MESSAGE...``: the message is the rest of the line as written
        (no shell quoting, so "don't" stays as it is); one pair of enclosing quotes is dropped."""
        found = _TELL.fullmatch(rest)
        assert found is not None  # every part of the pattern is optional
        message, store_last = _trailing_store(found["message"])
        session_id, message = found["id"], _unquote(message.strip())
        if sum(1 for s in (found["store"], found["store_after"], store_last) if s) > 1:
            raise MagicUsageError(f"give --store once; usage: {VERBS['tell']}")
        if session_id.startswith("-"):
            raise MagicUsageError(f"unrecognized arguments: {session_id}; usage: {VERBS['tell']}")
        if not session_id or not message:
            missing = "a message" if session_id else "a session id and a message"
            raise MagicUsageError(f"tell needs {missing}; usage: {VERBS['tell']}")
        store = found["store"] or found["store_after"] or store_last
        session = self._open(session_id, _unquote(store) if store else None)
        session.tell(message)
        print(f"{session.id}: message sent")

    def _control(self, args: argparse.Namespace, verb: str, done: str) -> None:
        session = self._open(args.id, args.store)
        getattr(session, verb)()
        print(f"{session.id}: {done}")

    def _approve(self, args: argparse.Namespace) -> None:
        session = self._open(args.id, args.store)
        session.approve(args.call)
        print(f"{session.id}: approved {args.call}")

    def _deny(self, args: argparse.Namespace) -> None:
        session = self._open(args.id, args.store)
        session.deny(args.call, reason=" ".join(args.reason))
        print(f"{session.id}: denied {args.call}")

    def _fork(self, args: argparse.Namespace) -> None:
        session = self._open(args.id, args.store)
        new = session.fork(at=args.at, name=args.name, workspace=args.workspace)
        where = "its latest event" if args.at is None else f"event {args.at}"
        print(f"forked {session.id} after {where}: new session {new.id}")
        print(f"  it is paused: %agent tell {new.id} ... then %agent resume {new.id}")
        if new.state.workspace == session.state.workspace:
            print(f"  it shares the folder {new.state.workspace} with {session.id} (--workspace")
            print("  gives it a copy of its own): what one does to the files the other sees")
        _display(new)

    def _restore(self, args: argparse.Namespace) -> None:
        session = self._open(args.id, args.store)
        if not session.restore(at=args.at):
            print(f"{session.id}: restore to event {args.at} sent to the process that holds it")
        else:
            print(f"{session.id}: restored to event {args.at}; now {session.status}")

    def _export(self, args: argparse.Namespace) -> None:
        store = open_store(_existing(args.store))
        row = store.find_session(args.id)
        text = EXPORTERS[args.format](store, row)
        if args.out:
            write_export(text, args.out, store)
            print(f"wrote {args.out}")
        else:
            sys.stdout.write(text)


HELP = inspect.cleandoc(AgentMagics.agent.__doc__ or "")
_STORE = r"""--store(?:=|\s+)(?P<{}>"[^"]*"|'[^']*'|\S+)"""
_TELL = re.compile(
    rf"\s*(?:{_STORE.format('store')})?\s*(?P<id>\S*)\s*(?:{_STORE.format('store_after')})?"
    r"\s*(?P<message>.*)",
    re.S,
)


_STORE_LAST = re.compile(rf"(?P<text>.*?)\s+{_STORE.format('store')}\s*", re.S)


def _trailing_store(text: str) -> tuple[str, str | None]:
    """Free text (a message, a reason) and a ``--store PATH`` given at its end, if one is (not
    inside text given in quotes: ``"use --store x"`` is a message)."""
    kept = text.strip()
    if len(kept) > 1 and kept[0] == kept[-1] and kept[0] in "\"'":
        return text, None
    found = _STORE_LAST.fullmatch(text)
    return (text, None) if found is None else (found["text"], found["store"])


def _asks_help(args: str) -> bool:
    return any(word in ("-h", "--help") for word in args.split())


def _options(verb: str, rest: str) -> str:
    """The part of a verb's line that holds options, not free text (a message, a reason)."""
    if verb == "tell":
        return " ".join(rest.split()[:1])
    return rest.split(" --reason", 1)[0]


def name_from(goal: str) -> str:
    """A session's default name: the goal's first words (three at most, up to 24 characters),
    lowercased and joined by dashes, so that a list of sessions tells them apart."""
    words = re.findall(r"\w+", goal.lower())[:3]
    name = "-".join(words)[:24].strip("-_")
    return name or "agent"


def _existing(store: str | None) -> str | None:
    """The store must exist: a mistyped path would otherwise become a new, empty store, and
    a look at the default one would make it (only ``%%agent`` makes one)."""
    if store is not None and not Path(store).expanduser().exists():
        raise MagicUsageError(f"no store at {store}: check the path (%%agent --store makes one)")
    if store is None and not (path := default_store_path()).exists():
        named = f" (${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
        raise MagicUsageError(
            f"no store at {path}{named} yet: %%agent makes one (or give --store PATH)"
        )
    return store


def _display(obj: object) -> None:
    display(obj)  # type: ignore[no-untyped-call]


def _split(text: str, usage: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unbalanced quote
        raise MagicUsageError(f"{exc}; usage: {usage}") from None


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _budget(spec: str | None) -> _Budget:
    """``steps=50`` → ``{"max_steps": 50}``; a key the Agent cannot enforce yet is an error."""
    budget = _Budget()
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise MagicUsageError(f"--budget takes key=value pairs, not {item!r}")
        if key not in BUDGET_KEYS:
            supported = ", ".join(f"{k}=N" for k in BUDGET_KEYS)
            raise MagicUsageError(f"budget {key!r} is not supported yet; supported: {supported}")
        if "max_steps" in budget:
            raise MagicUsageError(f"--budget gives {key} twice; give it once")
        try:
            budget["max_steps"] = int(value)
        except ValueError:
            raise MagicUsageError(f"budget {key} must be a whole number, not {value!r}") from None
    return budget


def _policy(spec: str | None) -> dict[str, str]:
    """``shell=ask,write_file=deny`` → ``{"shell": "ask", "write_file": "deny"}``."""
    policy: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        tool_name, sep, rule = (s.strip() for s in item.partition("="))
        if not sep or not tool_name:
            raise MagicUsageError(f"--policy takes tool=rule pairs, not {item!r}")
        if tool_name in policy:
            raise MagicUsageError(f"--policy gives {tool_name} twice; give it once")
        policy[tool_name] = rule
    return policy


def register(shell: InteractiveShell) -> None:
    shell.register_magics(AgentMagics)


def unregister(shell: InteractiveShell) -> None:
    """Remove ``%agent``/``%%agent`` if they are still ours (``%unload_ext``, ``%reload_ext``)."""
    manager = shell.magics_manager
    for kind in ("line", "cell"):
        fn = manager.magics[kind].get("agent")
        if isinstance(getattr(fn, "__self__", None), AgentMagics):
            del manager.magics[kind]["agent"]
    manager.registry.pop(AgentMagics.__name__, None)
