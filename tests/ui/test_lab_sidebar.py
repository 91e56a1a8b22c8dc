"""The lab extension in a real JupyterLab: the Agents sidebar lists every session in the store,
a session panel approves a waiting call while the owning kernel is busy in a long cell, and
notifications tell a person when a session needs them and when it finishes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from jupyter_agent import Agent, SqliteStore
from jupyter_agent.testing import ScriptedModel, call, reply

from .conftest import Lab, LabNotebook

pytestmark = pytest.mark.ui
Open = Callable[[str, list[str]], LabNotebook]

LOAD = "%load_ext jupyter_agent"
ALPHA = "%%agent --name alpha --model demo:loop?steps=3\nCount to three."
BETA = """
from jupyter_agent import Agent
from jupyter_agent.testing import ScriptedModel, call, reply
model = ScriptedModel([call("shell", command="echo approved"), reply("all done")])
beta = Agent("beta", model=model, tools=["shell"], policy={"shell": "ask"}).start("say it")
"""
BUSY = "import time\ntime.sleep(30)"
SHOWN = 300  # sessions the sidebar lists besides those that run or wait (index.ts)


def status_of(store: Path, name: str) -> str:
    with SqliteStore(store) as s:
        return next(r.status for r in s.list_sessions() if r.name == name)


def wait_for_status(store: Path, name: str, wanted: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while status_of(store, name) != wanted:
        assert time.monotonic() < deadline, f"{name} is still {status_of(store, name)}"
        time.sleep(0.1)


def kernel_state(lab: Lab, notebook: str) -> str:
    """The execution state of the notebook's kernel, as the server sees it."""
    session = next(s for s in lab.api("GET", "api/sessions") if s["path"] == notebook)
    return str(lab.api("GET", f"api/kernels/{session['kernel']['id']}")["execution_state"])


def open_sidebar(page: Page) -> None:
    page.locator('li[data-id="jupyter-agent-sidebar"]').click()
    expect(page.locator("#jupyter-agent-sidebar")).to_be_visible()


def test_sidebar_lists_both_notebooks_sessions_and_approves_while_the_kernel_sleeps(
    page: Page, lab: Lab, notebook: Open, tmp_path: Path
) -> None:
    first = notebook("first.ipynb", [LOAD, ALPHA])
    first.run(0)
    first.run(1)
    wait_for_status(lab.store, "alpha", "done")

    second = notebook("second.ipynb", [BETA, BUSY])
    second.run(0)
    wait_for_status(lab.store, "beta", "awaiting_approval")
    second.start(1)  # the kernel is now busy for 30 s
    deadline = time.monotonic() + 10
    while kernel_state(lab, "second.ipynb") != "busy":
        assert time.monotonic() < deadline, "the busy cell did not start"
        time.sleep(0.05)
    busy_since = time.monotonic()

    open_sidebar(page)
    items = page.locator("#jupyter-agent-sidebar .ja-sidebar-item")
    expect(items).to_have_count(2, timeout=10_000)
    alpha = items.filter(has_text="alpha")
    beta = items.filter(has_text="beta")
    expect(alpha).to_have_attribute("data-status", "done")
    expect(alpha).to_contain_text("first.ipynb")
    expect(beta).to_have_attribute("data-status", "awaiting_approval")
    expect(beta).to_contain_text("second.ipynb")
    expect(page.locator(".ja-statusbar")).to_have_text("0 running · 1 need you")
    expect(page.locator(".Toastify__toast").filter(has_text="beta needs you")).to_be_visible()

    beta.click()
    panel = page.locator(".jp-MainAreaWidget .ja-panel .ja-session")
    expect(panel).to_be_visible(timeout=10_000)
    approve = panel.locator(".ja-approvals .ja-approval button.ja-approve")
    expect(approve).to_have_count(1)
    approve.click()

    wait_for_status(lab.store, "beta", "done", timeout=10)
    assert time.monotonic() - busy_since < 25  # well before the busy cell ends
    assert kernel_state(lab, "second.ipynb") == "busy"
    expect(page.locator(".Toastify__toast").filter(has_text="beta finished")).to_be_visible(
        timeout=10_000
    )
    expect(beta).to_have_attribute("data-status", "done")
    expect(panel.locator('.ja-row[data-kind="result"]')).to_contain_text("all done")
    expect(panel).to_have_attribute("data-status", "done")  # the panel's header follows
    expect(page.locator(".Toastify__toast").filter(has_text="beta needs you")).to_have_count(0)
    expect(panel.locator(".ja-approvals .ja-approval")).to_have_count(0)
    page.screenshot(path=tmp_path / "sidebar.png")


def test_a_saved_notebook_carries_a_snapshot_as_fresh_as_the_session(
    lab: Lab, notebook: Open
) -> None:
    nb = notebook("saved.ipynb", [LOAD, "%%agent --name gamma --model demo:loop?steps=5\nFive."])
    nb.run(0)
    nb.run(1)  # the output's snapshot is taken now, at the session's first event
    wait_for_status(lab.store, "gamma", "done")
    with SqliteStore(lab.store) as store:
        last = next(r.last_seq for r in store.list_sessions() if r.name == "gamma")
    time.sleep(2.5)  # the extension fetches the newest snapshot when the session changes
    saved = nb.save()
    html = "".join(
        "".join(out["data"]["text/html"])
        for out in saved.cells[1].outputs
        if "text/html" in out.get("data", {})
    )
    assert f"snapshot of event {last}," in html
    assert "Finished all 5 steps" in html


def test_the_widgets_controls_work_while_its_kernel_is_busy(lab: Lab, notebook: Open) -> None:
    paced = "%%agent --name delta --model demo:loop?steps=400&pace=0.2\nCount slowly."
    nb = notebook("busy.ipynb", [LOAD, paced, BUSY])
    nb.run(0)
    nb.run(1)
    widget = nb.outputs(1).locator(".ja-session")
    expect(widget).to_have_attribute("data-status", "running", timeout=20_000)
    nb.start(2)
    deadline = time.monotonic() + 10
    while kernel_state(lab, "busy.ipynb") != "busy":
        assert time.monotonic() < deadline, "the busy cell did not start"
        time.sleep(0.05)

    widget.locator("button.ja-pause").click()  # a comm message would wait for the cell
    wait_for_status(lab.store, "delta", "paused", timeout=5)
    expect(widget).to_have_attribute("data-status", "paused")
    widget.locator("input.ja-tell-input").fill("noted while busy")
    widget.locator("button.ja-tell").click()
    expect(widget.locator('.ja-row[data-kind="message"]')).to_contain_text("noted while busy")
    widget.locator("button.ja-resume").click()
    wait_for_status(lab.store, "delta", "running", timeout=5)
    assert kernel_state(lab, "busy.ipynb") == "busy"


def hold_click(page: Page, item: Locator) -> None:
    """A person's click: press, hold a moment, release (the list may change meanwhile)."""
    box = item.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(150)
    page.mouse.up()


@contextmanager
def running_agents(page: Page, lab: Lab, name: str, n: int) -> Iterator[tuple[list, Locator]]:
    """``n`` agents named ``name0``... stepping until stopped, and the sidebar's items once it
    lists them running; the agents are stopped after."""
    busy = [
        Agent(f"{name}{i}", model="demo:loop?steps=100000&pace=0.02", store=lab.store).start("go")
        for i in range(n)
    ]
    try:
        page.goto(lab.url("lab?reset"))
        open_sidebar(page)
        items = page.locator("#jupyter-agent-sidebar .ja-sidebar-item")
        expect(items.filter(has_text=f"{name}{n - 1}")).to_have_attribute("data-status", "running")
        yield busy, items
    finally:
        for s in busy:
            s.stop()


def test_sessions_open_at_the_first_click_while_agents_work(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    quiet = [Agent(n, model="demo:loop?steps=2", store=lab.store).run("two") for n in ("a", "b")]
    with running_agents(page, lab, "busy", 3) as (_, _):
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        for k in range(8):
            pick = quiet[k % 2]
            hold_click(page, page.locator(f'.ja-sidebar-item[data-session-id="{pick.id}"]'))
            expect(tab).to_contain_text(f"Agent: {pick.name}", timeout=3_000)
        page.screenshot(path=tmp_path / "sidebar-busy.png")


def test_running_sessions_keep_their_place_and_move_up_when_their_status_changes(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    with running_agents(page, lab, "run", 5) as (busy, items):
        order = "(els) => els.map((e) => e.dataset.sessionId)"
        ours, seen = {s.id for s in busy}, []
        for _ in range(8):  # each writes its row twice a second meanwhile
            seen.append([i for i in items.evaluate_all(order) if i in ours])
            page.wait_for_timeout(300)
        assert all(o == seen[0] for o in seen), f"the list moved under the pointer: {seen}"
        last = seen[0][-1]
        next(s for s in busy if s.id == last).pause()  # a change of status moves it up
        expect(items.first).to_have_attribute("data-session-id", last, timeout=10_000)
        expect(items.first).to_have_attribute("data-status", "paused")
        page.screenshot(path=tmp_path / "sidebar-order.png")


def test_a_long_list_shows_the_newest_and_every_one_that_waits(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    model = ScriptedModel([call("shell", command="echo hi"), reply("ok")])
    asking = Agent("old-ask", model=model, store=lab.store, policy={"shell": "ask"}).start("ask")
    assert asking.wait(30) == "awaiting_approval"
    try:
        for i in range(SHOWN + 5):
            Agent(f"s{i}", model=ScriptedModel([reply("hi")]), store=lab.store).run("hi")
        with SqliteStore(lab.store) as store:
            total = len(store.list_sessions())
        page.goto(lab.url("lab?reset"))
        open_sidebar(page)
        items = page.locator("#jupyter-agent-sidebar .ja-sidebar-item")
        expect(items).to_have_count(SHOWN + 1, timeout=20_000)  # the newest, and the one asking
        expect(items.first).to_contain_text("old-ask")  # who needs a person comes first
        expect(items.first).to_have_attribute("data-status", "awaiting_approval")
        more = page.locator("#jupyter-agent-sidebar .ja-sidebar-more")
        expect(more).to_contain_text(f"and {total - SHOWN - 1} older sessions")
        expect(page.locator(".ja-statusbar")).to_contain_text("1 need you")
        page.screenshot(path=tmp_path / "sidebar-long.png")
    finally:
        asking.stop()


def hold_lists(page: Page, lab: Lab, count: int) -> list[Route]:
    """Open JupyterLab with the sidebar, holding its first ``count`` requests for the session
    list (unanswered); return them once it has made them. Later ones go through."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        if len(held) < count:
            held.append(route)
        else:
            route.continue_()

    page.route(LISTS, hold)
    page.goto(lab.url("lab?reset"))
    open_sidebar(page)
    deadline = time.monotonic() + 20
    while len(held) < count:
        assert time.monotonic() < deadline, f"the page asked for the list {len(held)} times"
        page.wait_for_timeout(50)
    return held


LISTS = re.compile(r"/jupyter-agent/api/sessions\?limit=")


def test_a_session_that_moves_while_the_list_loads_keeps_its_newer_state(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    Agent("bystander", model=ScriptedModel([reply("hi")]), store=lab.store).run("hi")
    model = ScriptedModel([call("shell", command="echo hi"), reply("ok")])
    racer = Agent("racer", model=model, store=lab.store, policy={"shell": "ask"}).start("ask")
    assert racer.wait(30) == "awaiting_approval"
    # the page lists the sessions twice as it starts (its own load, and the stream's once it
    # connects): both lists are read now and answered after the session moved on
    held = [(route, route.fetch()) for route in hold_lists(page, lab, 2)]
    racer.approve(racer.pending_approvals[0].call_id)
    assert racer.wait(30) == "done"
    items = page.locator("#jupyter-agent-sidebar .ja-sidebar-item")
    item = items.filter(has_text="racer")
    expect(item).to_have_attribute("data-status", "done", timeout=10_000)  # from the stream

    (first, listed), (second, relisted) = held
    first.fulfill(response=listed)
    body = relisted.json()  # the second, with one more session: when it shows, both are in
    marker = {**next(r for r in body["sessions"] if r["name"] == "bystander"), "id": "marker1"}
    body["sessions"].append({**marker, "name": "marker"})
    body["total"] += 1
    second.fulfill(response=relisted, json=body)
    expect(items.filter(has_text="marker")).to_have_count(1, timeout=10_000)
    expect(items.filter(has_text="bystander")).to_have_count(1)
    expect(item).to_have_attribute("data-status", "done")
    expect(page.locator(".Toastify__toast").filter(has_text="racer needs you")).to_have_count(0)
    page.screenshot(path=tmp_path / "sidebar-race.png")


def test_a_list_that_fails_after_one_asked_for_earlier_leaves_that_one_shown(
    page: Page, lab: Lab
) -> None:
    Agent("listed", model=ScriptedModel([reply("hi")]), store=lab.store).run("hi")
    (first, second) = hold_lists(page, lab, 2)
    listed = first.fetch()
    second.fulfill(status=500, json={"message": "the store is busy"})
    first.fulfill(response=listed)
    items = page.locator("#jupyter-agent-sidebar .ja-sidebar-item")
    expect(items.filter(has_text="listed")).to_have_count(1, timeout=10_000)
