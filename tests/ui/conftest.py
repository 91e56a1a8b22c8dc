"""A real ``jupyter lab`` for browser tests, and a helper to drive a notebook in it.

The recipe is the one measured in notes/jupyter-recipe.md: lab on 127.0.0.1 with a token and
temporary settings, workspaces and runtime dirs; the system Chromium, never a browser Playwright
downloads; kernels from this venv's ``python3`` kernelspec (jupyter_client runs it with the
server's own python); the kernel's agents on a store in a temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Locator, Page

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The notebook in the lab's current tab, its kernel, and one of its cells, seen from the page.
_PANEL = "window.jupyterapp.shell.currentWidget"
_KERNEL_IDLE = f"""() => {{
  const k = {_PANEL}?.sessionContext?.session?.kernel;
  return !!k && k.status === 'idle';
}}"""
_RUN_CELL = f"""(i) => {{
  const nb = {_PANEL}.content;
  nb.activeCellIndex = i;
  nb.deselectAll();
  void window.jupyterapp.commands.execute('notebook:run-cell');
}}"""
_CELL_DONE = f"""(i) => {{
  const panel = {_PANEL};
  const cell = panel.content.widgets[i];
  return cell.model.executionCount !== null
    && panel.sessionContext.session?.kernel?.status === 'idle';
}}"""
_CELL_ERRORS = f"""(i) => {_PANEL}.content.widgets[i].model.outputs.toJSON()
  .filter(o => o.output_type === 'error')
  .map(o => [o.ename + ': ' + o.evalue, ...o.traceback].join('\\n'))"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last, whatever order they were named in.

    Playwright's sync API leaves its event loop marked as running in the main thread until the
    session ends, and every asyncio test after it would fail with "Cannot run the event loop
    while another loop is running".
    """
    here = Path(__file__).parent
    items.sort(key=lambda item: item.path.is_relative_to(here))  # stable: otherwise as collected


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Launch the system Chromium: Playwright must never try to download a browser."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"The browser tests need Chromium, which is not at {CHROMIUM}. Install it "
            "(`apt-get install chromium` on Debian; .ci/run does this) or point the CHROMIUM "
            "environment variable at a Chromium binary.",
            pytrace=False,
        )
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}}


@dataclass(frozen=True, slots=True)
class Lab:
    """A running ``jupyter lab``: where it is, its token, its notebook dir and agent store."""

    base: str
    token: str
    root: Path
    store: Path
    log: Path

    def url(self, path: str) -> str:
        joiner = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{joiner}token={self.token}"

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base}/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every notebook session and its kernel, so one test's agents don't outlive it."""
        for session in self.api("GET", "api/sessions"):
            with contextlib.suppress(OSError):
                self.api("DELETE", f"api/sessions/{session['id']}")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_tail(self, lines: int = 40, *, since: int = 0) -> str:
        """The last lines of the lab's log, from byte ``since`` on."""
        with self.log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``jupyter lab`` on a free port of 127.0.0.1, stopped (terminate, then kill) at the end."""
    root = tmp_path_factory.mktemp("notebooks")
    state = tmp_path_factory.mktemp("lab")
    port = _free_port()
    lab = Lab(
        f"http://127.0.0.1:{port}",
        secrets.token_hex(16),
        root,
        state / "agent.db",
        state / "lab.log",
    )
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI runs as root
        f"--port={port}",
        "--ServerApp.port_retries=0",  # another port would not be the one we talk to
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={lab.token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run cells and save
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
    ]
    with serving(lab, argv, state):
        yield lab


@contextlib.contextmanager
def serving(server: Lab, argv: list[str], state: Path) -> Iterator[None]:
    """Run a Jupyter server (lab or notebook) until the block ends: up first, its kernels shut
    down after, then the process terminated (killed if it hangs)."""
    with server.log.open("w") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_lab_env(state, server.store),
            cwd=server.root,
        )
    try:
        _wait_until_up(server, proc)
        yield
        with contextlib.suppress(OSError):
            server.shutdown_kernels()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lab_env(state: Path, store: Path) -> dict[str, str]:
    settings = state / "settings"
    toast = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    toast.parent.mkdir(parents=True)
    toast.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # else ipykernel
    return {  # skips fd capture in the kernels
        **env,
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),  # no user config
        "JUPYTER_PREFER_ENV_PATH": "1",  # this venv's kernelspec before any user one
        "JUPYTER_AGENT_DB": str(store),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_until_up(lab: Lab, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            lab.api("GET", "api/status")
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not start:\n{lab.log_tail()}", pytrace=False)
            time.sleep(0.2)


class LabNotebook:
    """One notebook open in the page: run its cells, find their outputs, save and reload it."""

    def __init__(self, page: Page, lab: Lab, name: str) -> None:
        self.page, self.lab, self.name = page, lab, name
        self.path = lab.root / name

    def write(self, cells: list[str]) -> None:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        nbformat.write(nb, self.path)

    def open(self) -> None:
        """Show the notebook alone (``reset``: no tabs restored) once its kernel is idle."""
        self.page.goto(self.lab.url(f"lab/tree/{self.name}?reset"))
        self.wait_until_ready()

    def reload(self) -> None:
        self.page.reload()
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        self.page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
        self.page.wait_for_function(_KERNEL_IDLE, timeout=60_000)

    def cell(self, index: int) -> Locator:
        return self.page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(index)

    def outputs(self, index: int) -> Locator:
        return self.cell(index).locator(".jp-Cell-outputArea")

    def start(self, index: int) -> None:
        """Run a cell without waiting for it to finish."""
        self.page.evaluate(_RUN_CELL, index)

    def run(self, index: int, *, timeout: float = 30) -> None:
        """Run a cell and wait for it to finish; fail with its traceback if it raised."""
        self.start(index)
        self.page.wait_for_function(_CELL_DONE, arg=index, timeout=timeout * 1000)
        errors = self.page.evaluate(_CELL_ERRORS, index)
        if errors:
            pytest.fail(f"cell {index} raised:\n" + _ANSI.sub("", "\n".join(errors)))

    def save(self) -> nbformat.NotebookNode:
        """Save from the page (as a person would) and read back what landed on disk."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        return nbformat.read(self.path, as_version=4)


@pytest.fixture
def notebook(page: Page, lab: Lab) -> Iterator[Callable[[str, list[str]], LabNotebook]]:
    """Open a new notebook with these cells in the page; its kernel is shut down afterwards.

    The page's console errors and the tail of the lab's log are printed at teardown, so pytest
    shows them next to a failure.
    """
    log_start = lab.log_size()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def open_notebook(name: str, cells: list[str]) -> LabNotebook:
        nb = LabNotebook(page, lab, name)
        nb.write(cells)
        nb.open()
        return nb

    yield open_notebook
    print("\n".join(["-- browser errors", *problems, "-- lab log", lab.log_tail(since=log_start)]))
    lab.shutdown_kernels()
