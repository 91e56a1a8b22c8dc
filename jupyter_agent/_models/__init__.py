"""The models box: the ``Model`` protocol, the offline demo model, and name resolution."""

from __future__ import annotations

import logging
import os

from .._errors import ConfigError
from ._base import Message, Model, ModelRequest, ModelResponse, ToolCallRequest, ToolSpec, Usage
from ._demo import DemoModel

ENV_VAR = "JUPYTER_AGENT_MODEL"
log = logging.getLogger("jupyter_agent")

__all__ = [
    "DemoModel",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ToolCallRequest",
    "ToolSpec",
    "Usage",
    "resolve_model",
]


def resolve_model(model: str | Model | None) -> Model:
    """A ``Model`` from a ``provider:model`` name (or a ``Model`` as is).

    With no model named, ``$JUPYTER_AGENT_MODEL`` is used, else the offline ``demo`` model, and
    the choice is logged.
    """
    if model is None:
        model = os.environ.get(ENV_VAR) or "demo"
        log.warning("no model named; using %r (set %s or pass model=...)", model, ENV_VAR)
    if not isinstance(model, str):
        return model
    provider, _, rest = model.partition(":")
    if provider == "demo":
        return DemoModel.from_spec(rest or "fix")
    if provider == "openai":
        from ._openai import OpenAIModel

        return OpenAIModel.from_spec(rest)
    if provider == "anthropic":
        from ._anthropic import AnthropicModel

        return AnthropicModel.from_spec(rest)
    raise ConfigError(
        f"unknown model {model!r}: name it provider:model with provider one of "
        "openai, anthropic, demo"
    )
