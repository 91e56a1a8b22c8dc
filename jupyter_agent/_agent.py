"""``Agent``: a configuration that starts sessions; ``open_session`` and ``sessions`` find them."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ._clock import Clock, SystemClock
from ._engine import Engine, create_session
from ._errors import ConfigError, InvalidSessionState, JupyterAgentError, StoreError
from ._identity import current_identity
from ._models import Model, resolve_model
from ._policy import Limits, check_policy
from ._runtime import get_runtime
from ._schedule import Schedule
from ._session import Session
from ._session_list import SessionList
from ._state import SessionState, load_state
from ._store import SqliteStore, default_store_path
from ._tools import BUILTIN_TOOLS, Tool, resolve_tools
from ._worker import WorkerError, get_worker, launch_message, pack_agent

ToolLike = Tool | str | Callable[..., object]
log = logging.getLogger("jupyter_agent")

_stores: dict[Path, SqliteStore] = {}
_stores_lock = threading.Lock()


def open_store(
    store: SqliteStore | str | Path | None = None, *, existing: bool = False
) -> SqliteStore:
    """The store at ``store`` (a path), or ``$JUPYTER_AGENT_DB``, or the default location;
    made if missing, unless ``existing`` (a look at sessions: a mistyped path would become a
    new, empty store).

    Stores are shared per file within a process, so there is one writer thread per file.
    """
    if isinstance(store, SqliteStore):
        return store
    path = (Path(store) if store is not None else default_store_path()).expanduser().resolve()
    if existing and store is not None and not path.exists():
        raise StoreError(f"no store at {path}: check the path (an Agent(store=...) makes one)")
    if existing and path.is_file() and path.stat().st_size == 0:
        raise StoreError(f"{path} is an empty file, not a store (reading one never makes it one)")
    with _stores_lock:
        if path not in _stores:
            _stores[path] = SqliteStore(path)
            fresh = _stores[path]
        else:
            return _stores[path]
    get_runtime().attach(fresh)  # registers this process and finds sessions orphaned by others
    return fresh


class Agent:
    """A named agent: a model, tools, instructions, a workspace, limits and a policy.

    ``policy`` says per tool (``"*"``: any other) whether a call may run (``allow``), waits
    for a person's approval first (``ask``), or is refused (``deny``).

    ``worker=True`` runs its sessions in a process beside the kernel, so that however many
    agents run, the notebook answers as quickly as with none (in the kernel they share its
    interpreter lock). Its model and tools are sent there by value, so ones defined in a cell
    work; they see the notebook's variables as they were when the agent was made.

    Example:
        >>> agent = Agent("fixer", model="demo:fix")
        >>> s = agent.start("Make the tests in this folder pass")   # returns at once
        >>> s.wait(); s.result
    """

    def __init__(
        self,
        name: str = "agent",
        *,
        model: str | Model | None = None,
        tools: Sequence[ToolLike] | None = None,
        instructions: str = "",
        workspace: str | Path | None = None,
        max_steps: int = 500,
        policy: Mapping[str, str] | None = None,
        schedule: Schedule | None = None,
        store: SqliteStore | str | Path | None = None,
        clock: Clock | None = None,
        worker: bool = False,
    ) -> None:
        if not name or not name.strip():
            raise ValueError("an agent needs a name")
        self.name = name
        self.model = resolve_model(model)
        self.tools = resolve_tools(list(BUILTIN_TOOLS) if tools is None else list(tools))
        self.instructions = instructions
        self.workspace = Path(workspace).expanduser().resolve() if workspace else None
        self.limits = Limits(max_steps=max_steps)
        self.policy = check_policy(policy, self.tools)
        self.schedule = schedule
        self.store = open_store(store)
        self.clock = clock or SystemClock()
        self.namespace: dict[str, object] = {}
        self.worker = worker
        self._packed: bytes | None = None
        if worker:  # refused now, not at the first start, if it cannot go to a worker
            self._packed = pack_agent(
                {
                    "name": name,
                    "model": model,
                    "tools": tools,
                    "instructions": instructions,
                    "workspace": self.workspace,
                    "max_steps": max_steps,
                    "policy": self.policy,
                    "schedule": schedule,
                    "clock": clock,
                }
            )

    def start(self, goal: str) -> Session:
        """Start a session on ``goal`` in the background; returns its handle at once."""
        session_id = self._create(goal)
        self._launch(session_id)
        return self._handle(session_id)

    def run(self, goal: str, *, timeout: float | None = None) -> Session:
        """Start a session and wait until it finishes or must wait for a person."""
        session = self.start(goal)
        session.wait(timeout)
        return session

    def open(self, session_id: str) -> Session:
        """A handle on an existing session that this agent's model and tools can resume."""
        return self._handle(self.store.find_session(session_id).id)

    def _create(self, goal: str) -> str:
        if not goal or not goal.strip():
            raise ValueError("a session needs a goal: say what the agent should do")
        session_id = uuid.uuid4().hex[:12]
        workspace = self.workspace or self.store.path.parent / "workspaces" / session_id
        try:
            workspace.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot make the workspace {workspace}: {exc.strerror or exc}; give another "
                "workspace= (a folder this user can write)"
            ) from exc
        prepare = getattr(self.model, "prepare_workspace", None)
        if callable(prepare):
            prepare(workspace)
        runtime = get_runtime()
        runtime.attach(self.store)
        create_session(
            self.store,
            session_id=session_id,
            owner=current_identity(),
            clock=self.clock,
            runtime_id=runtime.id,
            started={
                "name": self.name,
                "model": getattr(self.model, "spec", self.model.name),
                "goal": goal,
                "instructions": self.instructions,
                "tools": list(self.tools),
                "workspace": str(workspace),
                "max_steps": self.limits.max_steps,
                "policy": self.policy,
                "schedule": self.schedule.to_payload() if self.schedule else None,
                **({"worker": True} if self.worker else {}),
                # a model object with options its name does not carry (a key, headers)
                **({} if getattr(self.model, "spec_is_whole", True) else {"model_object": True}),
            },
        )
        return session_id

    def _launch(self, session_id: str, *, takeover_from: str | None = None) -> None:
        if self._packed is not None:
            self._launch_in_worker(session_id)
            return
        engine = Engine(
            store=self.store,
            session_id=session_id,
            model=self.model,
            tools=self.tools,
            clock=self.clock,
            limits=self.limits,
            namespace=self.namespace,
            inbox=get_runtime().inbox(session_id),
        )
        get_runtime().launch(
            engine, relaunch=lambda: self._launch(session_id), takeover_from=takeover_from
        )

    def _launch_in_worker(self, session_id: str) -> None:
        """Lease the session here, then hand it to the worker, which takes it over only from
        this process: a launch given up on (the worker stopped) can never run later."""
        runtime = get_runtime()
        runtime.attach(self.store)
        inbox = runtime.inbox(session_id)
        if not inbox.activate():  # no launch here meanwhile, from another thread
            raise InvalidSessionState(f"session {session_id} is already running in this process")
        decisions = inbox.take_decisions()  # an approval that asked for this run goes with it
        try:
            self.store.acquire_lease(session_id, runtime.id, now=time.time())
            assert self._packed is not None
            message = launch_message(
                self.store.path, session_id, self._packed, runtime.id, decisions
            )
            worker = get_worker()
            try:
                worker.runtime_id = worker.request(message)
            except WorkerError as exc:
                with contextlib.suppress(JupyterAgentError):  # unless it is no longer ours
                    self.store.interrupt_session(
                        session_id, runtime.id, now=time.time(), reason=str(exc)
                    )
                raise
        except BaseException:
            for call_id, decision in decisions.items():  # kept for a run here
                inbox.post_decision(call_id, decision)
            raise
        finally:
            inbox.deactivate()

    def _handle(self, session_id: str) -> Session:
        return Session(self.store, session_id, agent_factory=lambda: self)


def open_session(
    session_id: str,
    *,
    store: SqliteStore | str | Path | None = None,
    tools: Sequence[ToolLike] = (),
    model: str | Model | None = None,
    clock: Clock | None = None,
) -> Session:
    """Re-attach to a session by id (or a unique prefix of it), to watch it or resume it.

    Built-in tools are found by name; pass your own tools (and a model object, if the session
    used one) so that ``resume()`` can run it.
    """
    st = open_store(store, existing=True)
    session_id = st.find_session(session_id).id

    def agent_factory() -> Agent:
        return _agent_for(load_state(st, session_id), st, tools, model, clock)

    return Session(st, session_id, agent_factory=agent_factory)


def sessions(
    *, store: SqliteStore | str | Path | None = None, status: str | None = None
) -> SessionList:
    """Every session in the store, most recently updated first; shown as a table."""
    st = open_store(store, existing=True)
    return SessionList(open_session(row.id, store=st) for row in st.list_sessions(status=status))


def _agent_for(
    state: SessionState,
    store: SqliteStore,
    tools: Sequence[ToolLike],
    model: str | Model | None,
    clock: Clock | None,
) -> Agent:
    given = resolve_tools(list(tools))
    missing = [n for n in state.tools if n not in given and n not in BUILTIN_TOOLS]
    if missing:
        raise ConfigError(
            f"session {state.id} uses tools not given here: {', '.join(missing)}; "
            "pass them: open_session(id, tools=[...])"
        )
    chosen = [given.get(n) or n for n in state.tools]
    if model is None and state.model_object:
        raise ConfigError(
            f"session {state.id} ran with a model object ({state.model!r}) given options its "
            "name does not carry (a key, headers, streaming): pass it, open_session(id, model=...)"
        )
    if model is None and state.model and ":" not in state.model:
        try:
            model = resolve_model(state.model)
        except ConfigError:
            raise ConfigError(
                f"session {state.id} ran with a model object ({state.model!r}), which cannot be "
                "made again from its name: pass it, open_session(id, model=...)"
            ) from None
    agent = Agent(
        state.name or "agent",
        schedule=Schedule.from_payload(state.schedule),
        model=model or state.model,
        tools=chosen,
        instructions=state.instructions,
        workspace=state.workspace,
        max_steps=state.max_steps or 500,
        # as recorded, less names of tools it lacks (accepted before they were refused; the
        # engine follows the recorded policy anyway)
        policy={k: v for k, v in state.policy.items() if k == "*" or k in state.tools},
        store=store,
        clock=clock,
        worker=state.worker,  # where it ran: a resume after a restart runs it there again
    )
    return agent


def resume_interrupted(
    *, store: SqliteStore | str | Path | None = None, tools: Sequence[ToolLike] = ()
) -> list[Session]:
    """Resume, in this process, every session left ``interrupted`` by a process that died or
    shut down. A session whose own tools are not given (or whose model cannot be rebuilt from
    its name) is left as it is, and logged."""
    resumed = []
    for session in sessions(store=store, status="interrupted"):
        handle = open_session(session.id, store=store, tools=tools)
        try:
            handle.resume()
        except JupyterAgentError as exc:
            log.warning("not resuming session %s: %s", session.id, exc)
            continue
        resumed.append(handle)
    return resumed
