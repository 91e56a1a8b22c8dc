"""A real jupyter_server with the extension loaded, from pytest-jupyter's fixtures (imported
here, not as a plugin for the whole suite: their autouse fixtures would touch every test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from pytest_jupyter.pytest_tornasync import *  # noqa: F403


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store" / "agent.db"
    monkeypatch.setenv("JUPYTER_AGENT_DB", str(path))
    return path


@pytest.fixture
def jp_server_config(store_path: Path) -> dict[str, object]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_agent": True}}}
