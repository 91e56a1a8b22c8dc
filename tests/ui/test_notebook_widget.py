"""The session widget in a real JupyterLab: it shows a running agent live and steers it.

A ``%%agent`` cell runs the demo model's loop, paced so each model turn takes a quarter of a
second: slow enough to watch and to catch between steps, fast enough for a short test; once in
the kernel and once in its worker (``--worker``), which the widget reaches through the store. The
assertions are on the widget's DOM contract (``.ja-session``, ``.ja-row``, ``button.ja-pause``,
...), which is what a person sees and clicks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from jupyter_agent import SqliteStore, open_session

from .conftest import Lab, LabNotebook

pytestmark = pytest.mark.ui
Open = Callable[[str, list[str]], LabNotebook]

LOAD = "%load_ext jupyter_agent"
PACED = "%%agent --model demo:loop?steps=400&pace=0.25\nCount to four hundred, one step at a time."
QUICK = "%%agent --model demo:loop?steps=3\nCount to three."
AGENT_CELL = 1

# Counted in the page, from the cell's node, so a re-rendered widget is counted afresh.
_CELL = "window.jupyterapp.shell.currentWidget.content.widgets[i].node"
_ROW_COUNT = f"{_CELL}.querySelectorAll('.ja-session .ja-timeline .ja-row').length"
_ROWS = f"(i) => {_ROW_COUNT}"
_ROWS_ABOVE = f"([i, n]) => {_ROW_COUNT} > n"
_ROWS_AT_LEAST = f"([i, n]) => {_ROW_COUNT} >= n"
_STEPS = f"""(i) => {_CELL}.querySelector('.ja-session .ja-header [data-field="steps"]')"""
_STEPS_ABOVE = f"""([i, n]) => parseInt(({_STEPS})(i)?.textContent ?? '', 10) > n"""


def restart_kernel(lab: Lab, path: str) -> None:
    """Restart the kernel of the notebook at ``path`` (its widgets' models go with it)."""
    (kernel,) = [s["kernel"]["id"] for s in lab.api("GET", "api/sessions") if s["path"] == path]
    lab.api("POST", f"api/kernels/{kernel}/restart")


def start_agent(nb: LabNotebook) -> Locator:
    """Load the extension, start the agent cell, and return its widget once it shows."""
    nb.run(0)
    nb.start(AGENT_CELL)
    return shown_widget(nb)


def shown_widget(nb: LabNotebook) -> Locator:
    widget = nb.outputs(AGENT_CELL).locator(".ja-session")
    try:
        widget.wait_for(timeout=20_000)
    except PlaywrightTimeout:
        shown = nb.outputs(AGENT_CELL).inner_text()
        message = f"no .ja-session widget in the agent cell's output; it shows:\n{shown}"
    else:
        return widget
    pytest.fail(message, pytrace=False)


def rows(nb: LabNotebook) -> int:
    count: int = nb.page.evaluate(_ROWS, AGENT_CELL)
    return count


def wait_for_rows_above(nb: LabNotebook, n: int, *, timeout: float = 15) -> int:
    nb.page.wait_for_function(_ROWS_ABOVE, arg=[AGENT_CELL, n], timeout=timeout * 1000)
    return rows(nb)


def steps(widget: Locator) -> int:
    return int(widget.locator('.ja-header [data-field="steps"]').inner_text().strip())


def test_kernels_run_this_venvs_python_on_the_test_store(notebook: Open, lab: Lab) -> None:
    cell = "import os, sys\nprint(sys.executable, os.environ['JUPYTER_AGENT_DB'])"
    nb = notebook("env.ipynb", [cell])
    nb.run(0)
    text = nb.outputs(0).inner_text()
    assert sys.executable in text
    assert str(lab.store) in text


@pytest.mark.parametrize("where", ["kernel", "worker"])
def test_the_widget_shows_a_running_session_and_steers_it(
    notebook: Open, tmp_path: Path, where: str
) -> None:
    cell = PACED if where == "kernel" else PACED.replace("%%agent ", "%%agent --worker ", 1)
    nb = notebook(f"steer-{where}.ipynb", [LOAD, cell])
    widget = start_agent(nb)
    expect(widget).to_have_attribute("data-session-id", re.compile(r"\S"))
    expect(widget.locator(".ja-header")).to_be_visible()

    # Rows and the step count rise while the agent runs.
    first = wait_for_rows_above(nb, 0)
    wait_for_rows_above(nb, first)
    at = steps(widget)
    nb.page.wait_for_function(_STEPS_ABOVE, arg=[AGENT_CELL, at], timeout=15_000)
    assert int(widget.locator('.ja-header [data-field="tool_calls"]').inner_text()) > 0

    # Paused, nothing happens.
    widget.locator("button.ja-pause").click()
    expect(widget).to_have_attribute("data-status", "paused", timeout=10_000)
    paused_rows, paused_steps = rows(nb), steps(widget)
    time.sleep(2)  # the window in which a running agent would add about eight rows
    assert (rows(nb), steps(widget)) == (paused_rows, paused_steps)

    # Resumed, it goes on.
    widget.locator("button.ja-resume").click()
    expect(widget).not_to_have_attribute("data-status", "paused", timeout=10_000)
    wait_for_rows_above(nb, paused_rows)

    # A message typed in the widget reaches the agent and shows in its timeline.
    message = "please keep the steps short"
    widget.locator("input.ja-tell-input").fill(message)
    widget.locator("button.ja-tell").click()
    told = widget.locator('.ja-row[data-kind="message"]', has_text=message)
    expect(told).to_have_count(1, timeout=10_000)

    widget.scroll_into_view_if_needed()
    nb.page.screenshot(path=tmp_path / f"widget-{where}.png")
    print(f"screenshot: {tmp_path / f'widget-{where}.png'}")

    widget.locator("button.ja-stop").click()
    expect(widget).to_have_attribute("data-status", "stopped", timeout=10_000)
    for control in ("pause", "resume", "stop", "tell"):  # nothing runs it: they cannot apply
        expect(widget.locator(f"button.ja-{control}")).to_be_disabled()
    expect(widget.locator("button.ja-restore")).to_be_enabled()  # (a restore still can)


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_after_its_kernel_goes_the_widget_says_so_and_its_controls_answer(
    notebook: Open, lab: Lab, tmp_path: Path, how: str
) -> None:
    """The widget's model lives in the kernel: once that is gone it changes no more, so the
    widget takes the session's status from the store and its buttons say what to do. (Killed,
    the kernel cannot say so itself: the server finds it dead and the store says it.)"""
    nb = notebook("restart.ipynb", [LOAD, PACED])
    widget = start_agent(nb)
    wait_for_rows_above(nb, 2)
    if how == "restart":
        restart_kernel(lab, "restart.ipynb")
    else:
        session_id = widget.get_attribute("data-session-id")
        with SqliteStore(lab.store) as store:
            holder = store.get_runtime(store.get_session(session_id or "").runtime_id or "")
        assert holder is not None
        os.kill(holder.pid, signal.SIGKILL)
    expect(widget).to_have_attribute("data-status", "interrupted", timeout=30_000)
    dialog = nb.page.locator(".jp-Dialog")  # "the kernel appears to have died": a person's OK
    if dialog.count():
        dialog.locator("button.jp-mod-accept").click()
    notice = widget.locator(".ja-notice")
    expect(notice).to_contain_text("the process that ran this session ended")
    sid = widget.get_attribute("data-session-id")
    expect(notice).to_contain_text(f"or in a terminal, jupyter-agent resume {sid}")  # (it can)
    expect(widget.locator("button.ja-pause")).to_be_disabled()  # nothing runs it to pause
    widget.locator("button.ja-resume").click()  # nor to resume it: the server says what does
    expect(widget.locator(".ja-error")).to_contain_text(
        "no live process runs session", timeout=15_000
    )
    widget.scroll_into_view_if_needed()
    shot = tmp_path / f"widget-after-{how.replace(' ', '')}.png"
    nb.page.screenshot(path=shot)
    print(f"screenshot: {shot}")


def test_after_a_kernel_restart_the_widget_keeps_its_rows_and_shows_what_came_after(
    notebook: Open, lab: Lab, tmp_path: Path
) -> None:
    """A restart draws the widget again from its model, whose first page is the session as
    it was when the cell ran: the rest comes from the store (through the server), as the
    status does, and so do a row's details."""
    nb = notebook("kept.ipynb", [LOAD, PACED])
    widget = start_agent(nb)
    session_id = widget.get_attribute("data-session-id") or ""
    wait_for_rows_above(nb, 12)
    nb.save()  # with the widget's model in it, as it was first shown: a restart draws that
    restart_kernel(lab, "kept.ipynb")
    expect(widget).to_have_attribute("data-status", "interrupted", timeout=30_000)
    dialog = nb.page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator("button.jp-mod-accept").click()
    with SqliteStore(lab.store) as store:
        events = list(store.iter_events(session_id))
    interrupted = widget.locator('.ja-row[data-kind="status"]', has_text="interrupted")
    expect(interrupted).to_have_count(1, timeout=20_000)  # the newest row, from the store
    expect(widget.locator(f'.ja-row[data-seq="{events[-1].seq}"]')).to_have_count(1)
    assert rows(nb) > 12
    widget.locator(".ja-row[data-kind='tool']").first.click()  # its details, from the store
    expect(widget.locator(".ja-detail-event").first).to_contain_text("arguments", timeout=15_000)
    expect(widget.locator(".ja-error")).to_have_text("")
    notice = widget.locator(".ja-notice")
    expect(notice).to_contain_text(f'open_session("{session_id}", tools=[...]).resume()')
    shot = tmp_path / "kept-after-restart.png"
    widget.scroll_into_view_if_needed()
    nb.page.screenshot(path=shot)
    print(f"screenshot: {shot}")


def test_restore_here_asks_to_be_clicked_again_before_it_rewinds(
    notebook: Open, tmp_path: Path
) -> None:
    nb = notebook("confirm.ipynb", [LOAD, QUICK])
    widget = start_agent(nb)
    expect(widget).to_have_attribute("data-status", "done", timeout=30_000)
    restore = widget.locator("button.ja-restore")
    tools = widget.locator('.ja-row[data-kind="tool"]')
    tools.nth(0).click()
    restore.click()
    expect(restore).to_have_text(re.compile(r"^Confirm restore to #\d+$"))
    expect(widget.locator(".ja-notice")).to_contain_text("click again to confirm")
    tools.nth(1).click()  # another row: what was to be confirmed is not asked any more
    expect(restore).to_have_text("Restore here")
    restore.click()
    nb.page.screenshot(path=tmp_path / "confirm-restore.png")
    expect(widget).to_have_attribute("data-status", "done")  # nothing rewound yet
    expect(widget.locator('.ja-row[data-kind="restore"]')).to_have_count(0)
    restore.click()
    expect(widget.locator('.ja-row[data-kind="restore"]')).to_have_count(1, timeout=15_000)
    expect(widget).to_have_attribute("data-status", "paused", timeout=15_000)
    expect(restore).to_have_text("Restore here")
    print(f"screenshot: {tmp_path / 'confirm-restore.png'}")


def test_a_reloaded_page_catches_up_with_the_running_session(notebook: Open) -> None:
    nb = notebook("reload.ipynb", [LOAD, PACED])
    widget = start_agent(nb)
    session_id = widget.get_attribute("data-session-id")
    wait_for_rows_above(nb, 3)
    nb.save()  # the output names the widget's model; the model itself lives in the kernel
    before = rows(nb)

    nb.reload()
    widget = shown_widget(nb)
    expect(widget).to_have_attribute("data-session-id", session_id or "")
    nb.page.wait_for_function(_ROWS_AT_LEAST, arg=[AGENT_CELL, before], timeout=15_000)
    wait_for_rows_above(nb, rows(nb))  # and it is live again, not a picture


def test_after_a_restart_and_a_reload_the_output_shows_the_snapshot(
    notebook: Open, lab: Lab, tmp_path: Path
) -> None:
    """The widget's model lived in the kernel before its restart: reopened, the output shows
    the saved snapshot of the session, not JupyterLab's "model not found"."""
    nb = notebook("reopened.ipynb", [LOAD, QUICK])
    widget = start_agent(nb)
    expect(widget).to_have_attribute("data-status", "done", timeout=30_000)
    session_id = widget.get_attribute("data-session-id") or ""
    nb.save()
    restart_kernel(lab, "reopened.ipynb")
    nb.reload()
    output = nb.outputs(AGENT_CELL)
    snapshot = output.locator(f'.ja-snapshot[data-session-id="{session_id}"]')
    expect(snapshot).to_be_visible(timeout=20_000)
    expect(snapshot).to_contain_text("Count to three.")
    expect(output).not_to_contain_text("model not found")
    shot = tmp_path / "reopened.png"
    nb.page.screenshot(path=shot)
    print(f"screenshot: {shot}")
    # a page reload while the kernel lives keeps the live widget (test_a_reloaded_page_...)


def test_a_snapshot_standing_in_for_a_lost_widget_follows_the_session(
    notebook: Open, lab: Lab, tmp_path: Path
) -> None:
    """The session goes on elsewhere after the kernel restarted: the snapshot in its output
    shows each newer state, not the one it was first drawn with."""
    nb = notebook("followed.ipynb", [LOAD, "%%agent --model demo:loop?steps=6&pace=0.5\nCount."])
    widget = start_agent(nb)
    expect(widget).to_have_attribute("data-status", "running", timeout=30_000)
    session_id = widget.get_attribute("data-session-id") or ""
    nb.save()
    restart_kernel(lab, "followed.ipynb")  # the agent is interrupted with it
    nb.reload()
    snapshot = nb.outputs(AGENT_CELL).locator(f'.ja-snapshot[data-session-id="{session_id}"]')
    expect(snapshot).to_contain_text("status interrupted", timeout=20_000)
    nb.save()  # the output's data is set anew: it is drawn again, and stood in for again
    expect(snapshot).to_contain_text("status interrupted", timeout=20_000)

    session = open_session(session_id, store=lab.store)
    session.resume()
    assert session.wait(60) == "done"
    expect(snapshot).to_contain_text("status done", timeout=15_000)
    nb.page.screenshot(path=tmp_path / "followed.png")


# What of the widget does not fit its box: [class, scroll width, client width] for the widget
# itself (unless it scrolls) and for each button (its label cut short).
_CLIPPED = """(w) => {
  const out = [];
  const over = (el) => el.scrollWidth > el.clientWidth + 1;
  if (getComputedStyle(w).overflowX !== "auto" && over(w))
    out.push(["widget", w.scrollWidth, w.clientWidth]);
  for (const b of w.querySelectorAll("button"))
    if (b.offsetParent && over(b)) out.push([b.className, b.scrollWidth, b.clientWidth]);
  return out;
}"""


_AT_END = "(tl) => tl.scrollTop + tl.clientHeight >= tl.scrollHeight - 24"


def test_the_timeline_follows_the_session_after_its_tab_was_hidden(
    notebook: Open, tmp_path: Path
) -> None:
    fast = PACED.replace("pace=0.25", "pace=0.1")
    nb = notebook("follow.ipynb", [LOAD, fast])
    widget = start_agent(nb)
    timeline = widget.locator(".ja-timeline")
    wait_for_rows_above(nb, 30)  # more than its box holds
    assert timeline.evaluate(_AT_END), "the timeline did not follow the session"
    page = nb.page
    notebook_tab = page.evaluate("window.jupyterapp.shell.currentWidget.id")
    page.evaluate("window.jupyterapp.commands.execute('launcher:create')")
    page.wait_for_timeout(1000)  # the session goes on meanwhile
    page.evaluate(f"window.jupyterapp.shell.activateById({notebook_tab!r})")
    wait_for_rows_above(nb, rows(nb) + 3)
    page.wait_for_timeout(300)  # (its next frame)
    shot = tmp_path / "follow.png"
    page.screenshot(path=shot)
    assert timeline.evaluate(_AT_END), f"the timeline stopped following the session (see {shot})"
    widget.locator("button.ja-stop").click()


def test_the_widget_fits_a_narrow_window(notebook: Open, tmp_path: Path) -> None:
    nb = notebook("narrow.ipynb", [LOAD, QUICK])
    widget = start_agent(nb)
    expect(widget).to_have_attribute("data-status", "done", timeout=30_000)
    nb.page.set_viewport_size({"width": 560, "height": 800})  # the file browser stays open
    nb.page.wait_for_timeout(500)  # (a layout after the resize)
    shot = tmp_path / "narrow.png"
    nb.page.screenshot(path=shot)
    assert widget.evaluate(_CLIPPED) == [], f"clipped (see {shot})"


def test_the_saved_notebook_keeps_an_html_snapshot_of_the_session(notebook: Open) -> None:
    nb = notebook("snapshot.ipynb", [LOAD, QUICK])
    widget = start_agent(nb)
    expect(widget).to_have_attribute("data-status", "done", timeout=30_000)
    saved = nb.save()
    data = [out.get("data", {}) for out in saved.cells[AGENT_CELL].outputs]
    html = [d["text/html"] for d in data if "text/html" in d]
    assert html, f"no text/html in the saved outputs: {[sorted(d) for d in data]}"
    assert "Count to three." in "".join(html)

    # as nbviewer shows it: nbconvert's page, whose own table styles must not win
    html_page = nb.path.with_suffix(".html")
    subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", str(nb.path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    nb.page.goto(html_page.as_uri())
    detail = nb.page.locator(".ja-snapshot td.ja-s-detail").first
    styles = detail.evaluate(
        "(td) => [getComputedStyle(td).textAlign,"
        " getComputedStyle(td.closest('table')).tableLayout]"
    )
    assert styles == ["left", "auto"]
    box, table = detail.bounding_box(), nb.page.locator(".ja-snapshot table").first.bounding_box()
    assert box is not None and table is not None and box["width"] > table["width"] / 3
    nb.page.screenshot(path=html_page.with_suffix(".png"))
    print(f"screenshot: {html_page.with_suffix('.png')}")


# How late the page runs a timer set for now, sampled every 250 ms for ``s`` seconds (ms).
_LAG = """async (s) => {
  const lags = [];
  const end = performance.now() + s * 1000;
  while (performance.now() < end) {
    const asked = performance.now();
    await new Promise((ok) => setTimeout(ok, 0));
    lags.push(performance.now() - asked);
    await new Promise((ok) => setTimeout(ok, 250));
  }
  return lags;
}"""


def test_the_widget_of_a_quick_agent_keeps_up_and_the_page_stays_responsive(
    notebook: Open, lab: Lab
) -> None:
    # a bar per call redrawn and the layout read at every event: the page fell seconds behind
    model = "demo:loop?steps=100000&pace=0.01"
    quick = f"%%agent --model {model} --budget steps=100000\nCount, quickly."
    nb = notebook("quick.ipynb", [LOAD, quick])
    widget = start_agent(nb)
    session_id = widget.get_attribute("data-session-id") or ""
    lags = nb.page.evaluate(_LAG, 20)
    later = lags[len(lags) // 2 :]
    assert max(later) < 1000, f"the page ran timers this late (ms): {[round(x) for x in lags]}"
    with SqliteStore(lab.store) as store:
        done = store.get_session(session_id).steps
    assert done > 500, f"the agent made only {done} steps in 20 s"
    nb.page.wait_for_function(_STEPS_ABOVE, arg=[AGENT_CELL, done - 100], timeout=5_000)
    widget.locator("button.ja-stop").click()
    expect(widget).to_have_attribute("data-status", "stopped", timeout=15_000)
