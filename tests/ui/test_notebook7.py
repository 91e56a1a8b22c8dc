"""The session widget in Notebook 7 (``jupyter notebook``), not only in JupyterLab.

Notebook 7 is a different shell on the same JupyterLab components: the notebook opens alone at
``/notebooks/NAME.ipynb``, and its app object is exposed in the page (as ``window.jupyterapp``)
only when the server is started with ``--JupyterNotebookApp.expose_app_in_browser=True``. With
it, cells run through the same ``notebook:run-cell`` command as in the lab, so ``LabNotebook``
drives this page too once it opens the notebook at Notebook 7's address.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Lab, LabNotebook, _free_port, serving

pytestmark = pytest.mark.ui

LOAD = "%load_ext jupyter_agent"
AGENT = "%%agent --model demo:loop?steps=40&pace=0.1\nCount to forty, one step at a time."
AGENT_CELL = 1

_CELL = "window.jupyterapp.shell.currentWidget.content.widgets[i].node"
_ROW_COUNT = f"{_CELL}.querySelectorAll('.ja-session .ja-timeline .ja-row').length"
_ROWS_ABOVE = f"([i, n]) => {_ROW_COUNT} > n"
_STEPS = f"""{_CELL}.querySelector('.ja-session .ja-header [data-field="steps"]')"""
_STEPS_ABOVE = f"([i, n]) => parseInt({_STEPS}?.textContent ?? '', 10) > n"


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``jupyter notebook`` (7) on a free port of 127.0.0.1, stopped at the end of the module."""
    root = tmp_path_factory.mktemp("nb7-notebooks")
    state = tmp_path_factory.mktemp("nb7")
    port = _free_port()
    server = Lab(
        f"http://127.0.0.1:{port}",
        secrets.token_hex(16),
        root,
        state / "agent.db",
        state / "notebook.log",
    )
    argv = [
        sys.executable,
        "-m",
        "notebook",
        "--no-browser",
        "--allow-root",  # CI runs as root
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={server.token}",
        f"--ServerApp.root_dir={root}",
        "--JupyterNotebookApp.expose_app_in_browser=True",  # window.jupyterapp, to run cells
    ]
    with serving(server, argv, state):
        yield server


class Notebook7(LabNotebook):
    def open(self) -> None:
        self.page.goto(self.lab.url(f"notebooks/{self.name}"))
        self.wait_until_ready()


def rows(nb: LabNotebook) -> int:
    count: int = nb.page.evaluate(f"(i) => {_ROW_COUNT}", AGENT_CELL)
    return count


def test_the_widget_runs_live_in_notebook_7(page: Page, notebook7: Lab, tmp_path: Path) -> None:
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}\n{error.stack}"))
    log_start = notebook7.log_size()
    nb = Notebook7(page, notebook7, "nb7.ipynb")
    nb.write([LOAD, AGENT])
    try:
        nb.open()
        assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"  # not lab

        nb.run(0)
        nb.start(AGENT_CELL)
        widget = nb.outputs(AGENT_CELL).locator(".ja-session")
        expect(widget).to_be_visible(timeout=20_000)
        expect(widget.locator(".ja-header")).to_be_visible()

        # Live: rows and the step count rise while the agent runs.
        page.wait_for_function(_ROWS_ABOVE, arg=[AGENT_CELL, 0], timeout=10_000)
        first = rows(nb)
        page.wait_for_function(_ROWS_ABOVE, arg=[AGENT_CELL, first], timeout=10_000)
        at = int(widget.locator('.ja-header [data-field="steps"]').inner_text())
        page.wait_for_function(_STEPS_ABOVE, arg=[AGENT_CELL, at], timeout=10_000)

        # Steerable: the pause button reaches the kernel and the status comes back.
        widget.locator("button.ja-pause").click()
        expect(widget).to_have_attribute("data-status", "paused", timeout=10_000)

        widget.scroll_into_view_if_needed()
        page.screenshot(path=tmp_path / "notebook7.png")
        print(f"screenshot: {tmp_path / 'notebook7.png'}")

        # Notebook 7.6 itself throws one page error on load (its shortcuts plugin reads
        # `.schema` of an unloaded plugin, with every third-party extension disabled too);
        # nothing may come from this package's widget or lab extension.
        ours = [p for p in problems if re.search(r"jupyter[-_]agent|anywidget|\bja-", p)]
        assert not ours, "\n".join(ours)
    finally:
        print("\n".join(["-- browser console", *problems]))
        print("-- notebook log\n" + notebook7.log_tail(since=log_start))
        notebook7.shutdown_kernels()
