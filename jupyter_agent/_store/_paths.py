"""Where the store lives when nobody says: ``JUPYTER_AGENT_DB``, else the Jupyter data dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "JUPYTER_AGENT_DB"


def jupyter_data_dir() -> Path:
    """Jupyter's per-user data directory, as jupyter_core computes it (without importing it)."""
    if os.environ.get("JUPYTER_DATA_DIR"):
        return Path(os.environ["JUPYTER_DATA_DIR"])
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Jupyter"
    if os.name == "nt":
        appdata = os.environ.get("APPDATA")
        return Path(appdata) / "jupyter" if appdata else home / ".jupyter" / "data"
    xdg = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(xdg) / "jupyter"


def default_store_path() -> Path:
    """``$JUPYTER_AGENT_DB`` if set, else ``<jupyter data dir>/agent/agent.db``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return jupyter_data_dir() / "agent" / "agent.db"
