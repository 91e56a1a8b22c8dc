"""The jupyter_server extension: a REST API over the store (``/jupyter-agent/api/``).

Enabled by the pip install (``etc/jupyter/jupyter_server_config.d/jupyter_agent.json``); it
serves the store the kernels use (``$JUPYTER_AGENT_DB``, else the default in the Jupyter
data directory).
"""

from __future__ import annotations

from typing import Any

from .._store import SqliteStore
from ._handlers import setup_handlers


def _load_jupyter_server_extension(server_app: Any) -> None:
    store = SqliteStore()
    setup_handlers(server_app.web_app, store)
    server_app.log.info(
        "jupyter_agent: REST API on /jupyter-agent/api/ for the store %s", store.path
    )
