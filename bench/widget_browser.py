"""How long a long session's widget takes to be usable in a real JupyterLab in Chromium.

    python -m bench.widget_browser --steps 5000 --dir /tmp/x    # 5,000 steps: 10,003 events

Optional: skipped, with the reason, when Chromium (``$CHROMIUM``, else /usr/bin/chromium) or
Playwright is missing. The recipe is the browser tests' (tests/ui/conftest.py): ``jupyter lab``
on 127.0.0.1 with a token and temporary settings, the system Chromium, this venv's kernel.

A notebook opens the session (``open_session``) in one cell; the next cell shows it (``s``).
Timed in the page, from running that cell to the widget's timeline rows being present
(``.ja-session .ja-row``), for the long session and for a short one (25 steps, 53 events).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import parser, report

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PANEL = "window.jupyterapp.shell.currentWidget"
KERNEL_IDLE = f"() => {PANEL}?.sessionContext?.session?.kernel?.status === 'idle'"
RUN_CELL = f"""(i) => {{
  const nb = {PANEL}.content;
  nb.activeCellIndex = i;
  nb.deselectAll();
  window.__benchStart = performance.now();
  void window.jupyterapp.commands.execute('notebook:run-cell');
}}"""
CELL_DONE = f"""(i) => {PANEL}.content.widgets[i].model.executionCount !== null
  && {PANEL}.sessionContext.session?.kernel?.status === 'idle'"""
ROWS_SHOWN = f"""(i) => {{
  const n = {PANEL}.content.widgets[i].node.querySelectorAll('.ja-session .ja-row').length;
  return n > 0 ? [performance.now() - window.__benchStart, n] : false;
}}"""


def missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (set CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    return None


@contextlib.contextmanager
def jupyter_lab(folder: Path, store: Path) -> Iterator[tuple[str, str]]:
    """``jupyter lab`` on a free port: yields its base URL and token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    settings = folder / "settings"
    toast = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    toast.parent.mkdir(parents=True)
    toast.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
        "JUPYTER_CONFIG_DIR": str(folder / "config"),
        "JUPYTER_PREFER_ENV_PATH": "1",
        "JUPYTER_AGENT_DB": str(store),
    }
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={folder}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
    ]
    base = f"http://127.0.0.1:{port}"
    with (folder / "lab.log").open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(
                    f"{base}/api/status", headers={"Authorization": f"token {token}"}
                )
                urllib.request.urlopen(request, timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start; see lab.log") from None
                time.sleep(0.2)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def time_widget(page: Any, base: str, token: str, folder: Path, session_id: str) -> dict[str, Any]:
    import nbformat

    name = f"bench-{session_id}.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"from jupyter_agent import open_session\ns = open_session({session_id!r})"
        ),
        nbformat.v4.new_code_cell("s"),
    ]
    nbformat.write(nb, folder / name)
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)
    page.evaluate(RUN_CELL, 0)
    page.wait_for_function(CELL_DONE, arg=0, timeout=60_000)
    page.evaluate(RUN_CELL, 1)
    took_ms, rows = page.wait_for_function(
        ROWS_SHOWN, arg=1, timeout=120_000, polling="raf"
    ).json_value()
    return {"usable_ms": took_ms, "rows": rows}


def main() -> None:
    args = parser("python -m bench.widget_browser").parse_args()
    reason = missing()
    if reason is not None:
        report({"system": "widget_browser", "skipped": reason})
        return
    from playwright.sync_api import sync_playwright

    from jupyter_agent._store import SqliteStore

    from ._workload import run_session

    folder = Path(args.dir)
    store = folder / "agent.db"
    long_id, _ = run_session(str(store), args.steps)
    short_id, _ = run_session(str(store), 25)
    with SqliteStore(store) as st:
        events = {sid: st.get_session(sid).last_seq for sid in (long_id, short_id)}
    doc: dict[str, Any] = {"system": "widget_browser", "steps": args.steps}
    with jupyter_lab(folder, store) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        time_widget(page, base, token, folder, short_id)  # warm-up: lab, kernel, widget code
        for label, sid in (("short", short_id), ("long", long_id)):
            doc[label] = {"events": events[sid], **time_widget(page, base, token, folder, sid)}
        browser.close()
    report(doc)


if __name__ == "__main__":
    main()
