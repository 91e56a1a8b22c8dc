"""The exception tree: one root, a small tree, a stable ``code`` on each.

    JupyterAgentError
    ├── ConfigError              a setting the user must fix (unknown model, bad store path)
    ├── ModelError               the model could not answer
    ├── ToolError                ├── UnknownTool  └── ToolArgsInvalid
    │                            └── WorkspaceEscape
    ├── PolicyError              └── BudgetExceeded
    ├── SessionError             ├── SessionNotFound  └── InvalidSessionState
    │                            └── SessionConflict (another writer appended to the session)
    └── StoreError               ├── StoreVersionError  └── StoreCorrupt

Each error's ``str()`` is one line a person can act on; ``to_dict()`` is what the CLI, the REST
API and the widget show.
"""

from __future__ import annotations


class JupyterAgentError(Exception):
    """Root of every error this package raises on purpose."""

    code = "error"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": str(self)}


class ConfigError(JupyterAgentError):
    code = "config"


class ModelError(JupyterAgentError):
    code = "model"


class ToolError(JupyterAgentError):
    code = "tool"


class UnknownTool(ToolError):
    code = "unknown_tool"


class ToolArgsInvalid(ToolError):
    code = "tool_args_invalid"


class WorkspaceEscape(ToolError):
    code = "workspace_escape"


class PolicyError(JupyterAgentError):
    code = "policy"


class BudgetExceeded(PolicyError):
    code = "budget_exceeded"

    def __init__(self, kind: str, limit: float, used: float) -> None:
        super().__init__(f"budget exceeded: {kind} used {used:g} of {limit:g}")
        self.kind, self.limit, self.used = kind, limit, used


class SessionError(JupyterAgentError):
    code = "session"


class SessionNotFound(SessionError):
    code = "session_not_found"

    def __init__(self, session_id: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no session {session_id!r} in this store (list them: jupyter-agent sessions)"
        )
        self.session_id = session_id


class InvalidSessionState(SessionError):
    code = "invalid_session_state"


class SessionConflict(SessionError):
    code = "session_conflict"


class StoreError(JupyterAgentError):
    code = "store"


class StoreVersionError(StoreError):
    code = "store_version"


class StoreCorrupt(StoreError):
    code = "store_corrupt"
