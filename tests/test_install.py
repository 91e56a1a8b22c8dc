"""The one pip install builds and enables both Jupyter extensions (what a new machine gets)."""

from __future__ import annotations

import re
import subprocess
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def jupyter(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return ANSI.sub("", done.stdout + done.stderr)


def test_the_lab_extension_is_installed_and_enabled() -> None:
    listed = jupyter("labextension", "list")
    assert re.search(r"jupyter-agent v\S+ enabled OK", listed), listed


def test_the_server_extension_is_enabled_by_the_install() -> None:
    listed = jupyter("server", "extension", "list")
    assert re.search(r"jupyter_agent enabled", listed), listed
    assert re.search(r"jupyter_agent \S+ OK", listed), listed
