"""jupyter-agent: long-horizon LLM agents inside Jupyter, durable in SQLite.

Example:
    >>> from jupyter_agent import Agent
    >>> s = Agent("fixer", model="demo:fix").start("make the tests pass")
    >>> s.wait(); print(s.result)
"""

from typing import TYPE_CHECKING

from ._agent import Agent, open_session, open_store, resume_interrupted, sessions
from ._errors import (
    BudgetExceeded,
    ConfigError,
    InvalidSessionState,
    JupyterAgentError,
    ModelError,
    ModelHTTPError,
    PolicyError,
    SessionConflict,
    SessionError,
    SessionNotFound,
    StoreCorrupt,
    StoreError,
    StoreVersionError,
    ToolArgsInvalid,
    ToolError,
    UnknownTool,
    WorkspaceEscape,
)
from ._events import Event, EventKind
from ._models import Model, ModelRequest, ModelResponse
from ._models._anthropic import AnthropicModel
from ._models._http import RetryPolicy
from ._models._openai import OpenAIModel
from ._models._prices import set_price
from ._schedule import Schedule
from ._session import Session
from ._state import ApprovalRequest
from ._store import SqliteStore
from ._store._leases import SessionLeased
from ._tools import Tool, ToolOutput, tool
from ._tools._context import Effect, PlanItem, ToolContext

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AnthropicModel",
    "ApprovalRequest",
    "BudgetExceeded",
    "ConfigError",
    "Effect",
    "Event",
    "EventKind",
    "InvalidSessionState",
    "JupyterAgentError",
    "Model",
    "ModelError",
    "ModelHTTPError",
    "ModelRequest",
    "ModelResponse",
    "OpenAIModel",
    "PlanItem",
    "PolicyError",
    "RetryPolicy",
    "Schedule",
    "Session",
    "SessionConflict",
    "SessionError",
    "SessionLeased",
    "SessionNotFound",
    "SqliteStore",
    "StoreCorrupt",
    "StoreError",
    "StoreVersionError",
    "Tool",
    "ToolArgsInvalid",
    "ToolContext",
    "ToolError",
    "ToolOutput",
    "UnknownTool",
    "WorkspaceEscape",
    "__version__",
    "open_session",
    "open_store",
    "resume_interrupted",
    "sessions",
    "set_price",
    "tool",
]


AUTO_RESUME_ENV = "JUPYTER_AGENT_AUTO_RESUME"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The REST API for the lab extension, the CLI's peers and scripts (``_server``)."""
    return [{"module": "jupyter_agent._server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-agent"}]


def load_ipython_extension(ipython: "InteractiveShell") -> None:
    """``%load_ext jupyter_agent``: adds the ``%agent`` and ``%%agent`` magics (``%agent help``).

    With ``JUPYTER_AGENT_AUTO_RESUME=1`` in the kernel's environment, sessions a dead kernel
    left ``interrupted`` are resumed here too (built-in tools only; off by default).
    """
    import os

    from ._magics import register

    register(ipython)
    if os.environ.get(AUTO_RESUME_ENV) == "1":
        resume_interrupted()


def unload_ipython_extension(ipython: "InteractiveShell") -> None:
    """``%unload_ext jupyter_agent``: removes the magics; running sessions go on."""
    from ._magics import unregister

    unregister(ipython)
