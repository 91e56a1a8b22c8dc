"""Who is acting: the JupyterHub user when there is one, else the OS user."""

from __future__ import annotations

import getpass
import os


def current_identity() -> str:
    hub_user = os.environ.get("JUPYTERHUB_USER")
    if hub_user:
        return hub_user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def current_notebook() -> str | None:
    """The notebook this kernel runs for, as Jupyter tells its kernels (else None)."""
    return os.environ.get("JPY_SESSION_NAME") or None
