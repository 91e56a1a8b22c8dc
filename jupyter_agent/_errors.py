"""The exception tree: one root, a small tree, a stable ``code`` on each.

    JupyterAgentError
    ├── ConfigError              a setting the user must fix (unknown model, bad store path)
    ├── ModelError               the model could not answer
    │                            ├── ModelHTTPError (status, provider message, request id)
    │                            ├── ModelTimeout  ├── ModelConnectionError
    │                            └── ModelProtocolError (malformed JSON, a stream cut short)
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

    def to_dict(self) -> dict[str, str | int | float]:
        return {"code": self.code, "message": str(self)}


class ConfigError(JupyterAgentError):
    code = "config"


class ModelError(JupyterAgentError):
    """The model could not answer. ``retryable`` errors are tried again (and each retry is
    recorded); ``retry_after_s`` is the provider's Retry-After, when it sent one."""

    code = "model"
    retryable = False
    retry_after_s: float | None = None


class ModelHTTPError(ModelError):
    code = "model_http"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code, self.request_id = status_code, request_id
        self.retry_after_s = retry_after_s
        self.retryable = status_code in (408, 409, 429) or status_code >= 500

    def to_dict(self) -> dict[str, str | int | float]:
        data = super().to_dict()
        data["status_code"] = self.status_code  # a number, as HTTP has it
        if self.request_id:
            data["request_id"] = self.request_id
        if self.retry_after_s is not None:  # the provider's own "not before"
            data["retry_after_s"] = self.retry_after_s
        return data


class ModelTimeout(ModelError):
    code = "model_timeout"
    retryable = True


class ModelConnectionError(ModelError):
    code = "model_connection"
    retryable = True


class ModelProtocolError(ModelError):
    """The provider's answer could not be read: malformed JSON, a stream cut short (tried
    again), or an answer of the wrong shape (``retryable=False``: asking again will not help)."""

    code = "model_protocol"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


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
