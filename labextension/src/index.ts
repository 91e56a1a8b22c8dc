// The "Agents" sidebar: every session in the store, live; a session panel in the main area
// (the same view as the notebook widget); a status bar item; notifications when a session
// needs a person, fails or finishes.

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { listIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { SessionView, fmtCost } from '../../jupyter_agent/static/widget.js';
import { ISessionRow, listSessions, stream } from './api';
import { keepSnapshotsFresh } from './snapshots';
import { restSource } from './source';

const OPEN = 'jupyter-agent:open-session';
const STATUS_ICON: Record<string, string> = {
  running: '●',
  sleeping: '◔',
  paused: '❚❚',
  awaiting_approval: '!',
  interrupted: '↯',
  done: '✓',
  failed: '✗',
  stopped: '■'
};

function ago(ts: number): string {
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) {
    return `${Math.round(s)} s ago`;
  }
  if (s < 3600) {
    return `${Math.round(s / 60)} min ago`;
  }
  if (s < 86400) {
    return `${Math.round(s / 3600)} h ago`;
  }
  return `${Math.round(s / 86400)} d ago`;
}

function cost(row: ISessionRow): string {
  // nothing answered yet: nothing spent (as the session's own header says)
  const usd = row.cost_usd === null && row.steps === 0 ? 0 : row.cost_usd;
  return usd === null ? 'cost unknown' : fmtCost(usd);
}

/** Whether ``a`` is at least as recent a state of its session as ``b``. */
function newer(a: ISessionRow, b: ISessionRow): boolean {
  return a.last_seq !== b.last_seq ? a.last_seq > b.last_seq : a.updated_at >= b.updated_at;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  node.textContent = text;
  return node;
}

/** Sessions known to the page, kept current from the stream; tells listeners of changes. */
class Sessions {
  rows = new Map<string, ISessionRow>();
  loaded = false;
  private listeners = new Set<(row: ISessionRow | null, old: ISessionRow | null) => void>();
  private loads = 0; // loads begun
  private shown = 0; // the load whose list the rows come from (the latest to arrive in order)
  private reading = 0; // loads whose list is on its way
  private streamed = new Map<string, ISessionRow>(); // rows the stream delivered meanwhile
  // where each session sits in the list: its update time when its status last changed, so a
  // session moves up when it starts, finishes or needs someone, not at each of its steps
  // (fifty running agents reordered the list under the pointer several times a second)
  private placed = new Map<string, { status: string; at: number }>();

  constructor() {
    stream.subscribe(m => {
      if (m.type === 'session') {
        const old = this.rows.get(m.row.id) ?? null;
        this.rows.set(m.row.id, m.row);
        if (this.reading) {
          this.streamed.set(m.row.id, m.row);
        }
        this.emit(m.row, old);
      } else if (m.type === 'open') {
        // (re)connected: anything may have changed meanwhile (a load that fails leaves the
        // rows as they were; the next change of each comes by the stream)
        void this.load().catch(err => console.warn('jupyter-agent: cannot list sessions', err));
      }
    });
  }

  async load(): Promise<void> {
    const load = ++this.loads;
    this.reading++;
    try {
      const rows = await listSessions();
      if (load < this.shown) {
        return; // a list asked for later came first
      }
      // a row the stream delivered while the list was read may be newer than the list's
      const fresh = new Map(rows.map(r => [r.id, r]));
      for (const row of this.streamed.values()) {
        const listed = fresh.get(row.id);
        if (!listed || newer(row, listed)) {
          fresh.set(row.id, row);
        }
      }
      this.shown = load;
      this.rows = fresh;
      this.loaded = true;
      this.emit(null, null);
    } finally {
      if (--this.reading === 0) {
        this.streamed.clear();
      }
    }
  }

  onChange(fn: (row: ISessionRow | null, old: ISessionRow | null) => void): void {
    this.listeners.add(fn);
  }

  sorted(): ISessionRow[] {
    const at = (row: ISessionRow): number => {
      const place = this.placed.get(row.id);
      if (place && place.status === row.status) {
        return place.at;
      }
      this.placed.set(row.id, { status: row.status, at: row.updated_at });
      return row.updated_at;
    };
    return [...this.rows.values()].sort((a, b) => at(b) - at(a));
  }

  private emit(row: ISessionRow | null, old: ISessionRow | null): void {
    this.listeners.forEach(fn => fn(row, old));
  }
}

/** How many sessions the sidebar lists besides those that run or wait: the newest ones. */
const SHOWN = 300;
const LIVE = new Set(['running', 'sleeping', 'awaiting_approval', 'paused']);

class AgentSidebar extends Widget {
  private list = el('div', 'ja-sidebar-list');
  private empty = el('div', 'ja-sidebar-empty', 'No agent sessions yet: run a %%agent cell.');
  private more = el('div', 'ja-sidebar-more');
  private items = new Map<string, HTMLElement>(); // session id -> its item, kept across renders
  private pending = false;

  constructor(
    private sessions: Sessions,
    private open: (id: string) => void
  ) {
    super();
    this.id = 'jupyter-agent-sidebar';
    this.addClass('ja-sidebar');
    this.title.icon = listIcon;
    this.title.caption = 'Agents';
    const head = el('div', 'ja-sidebar-head');
    head.append(el('h2', '', 'Agents'));
    this.node.append(head, this.list);
    // one listener for every item: an item updated between press and release still opens
    this.list.addEventListener('click', ev => {
      const item = (ev.target as HTMLElement).closest<HTMLElement>('.ja-sidebar-item');
      if (item?.dataset.sessionId) {
        this.open(item.dataset.sessionId);
      }
    });
    sessions.onChange(() => this.renderSoon());
    window.setInterval(() => this.render(), 10_000); // "last activity" ages
  }

  /** Many changes a second (agents at work) make one render a frame, not one each. */
  renderSoon(): void {
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.render();
      });
    }
  }

  render(): void {
    const all = this.sessions.sorted();
    const listed = all.filter((r, i) => i < SHOWN || LIVE.has(r.status));
    // those that wait for a person first, however long they have waited
    const asking = (r: ISessionRow) => r.status === 'awaiting_approval';
    const rows = [...listed.filter(asking), ...listed.filter(r => !asking(r))];
    const hidden = all.length - rows.length;
    const wanted: HTMLElement[] = rows.map(r => this.item(r));
    if (hidden > 0) {
      this.more.textContent = `… and ${hidden} older sessions (\`jupyter-agent sessions\` lists them all)`;
      wanted.push(this.more);
    }
    if (!wanted.length) {
      wanted.push(this.empty);
    }
    const keep = new Set(rows.map(r => r.id));
    for (const [id, node] of this.items) {
      if (!keep.has(id)) {
        node.remove();
        this.items.delete(id);
      }
    }
    for (const node of [this.empty, this.more]) {
      if (!wanted.includes(node)) {
        node.remove();
      }
    }
    // moved only where the order changed: an item under the pointer stays where it is
    let at: ChildNode | null = this.list.firstChild;
    for (const node of wanted) {
      if (node === at) {
        at = at.nextSibling;
      } else {
        this.list.insertBefore(node, at);
      }
    }
  }

  private item(row: ISessionRow): HTMLElement {
    let item = this.items.get(row.id);
    if (!item) {
      item = el('div', 'ja-sidebar-item');
      item.dataset.sessionId = row.id;
      const top = el('div', 'ja-sidebar-top');
      top.append(
        el('span', 'ja-sidebar-icon'),
        el('span', 'ja-sidebar-name'),
        el('span', 'ja-sidebar-status')
      );
      item.append(top, el('div', 'ja-sidebar-meta'));
      this.items.set(row.id, item);
    }
    const set = (node: HTMLElement, text: string) => {
      if (node.textContent !== text) {
        node.textContent = text;
      }
    };
    item.dataset.status = row.status;
    item.title = [row.goal ?? '', `${row.id} · ${row.model ?? ''}`, row.notebook ?? '']
      .filter(Boolean)
      .join('\n');
    const icon = item.querySelector<HTMLElement>('.ja-sidebar-icon')!;
    icon.className = `ja-sidebar-icon ja-st-${row.status}`;
    icon.title = row.status;
    set(icon, STATUS_ICON[row.status] ?? '?');
    set(item.querySelector<HTMLElement>('.ja-sidebar-name')!, row.name || row.id);
    set(item.querySelector<HTMLElement>('.ja-sidebar-status')!, row.status.replace('_', ' '));
    const meta = [ // what changes first; where it runs and whose it is after
      `${row.steps} step${row.steps === 1 ? '' : 's'}`,
      cost(row),
      ago(row.updated_at),
      (row.notebook ?? '').split('/').pop() ?? '',
      row.owner ?? ''
    ];
    set(item.querySelector<HTMLElement>('.ja-sidebar-meta')!, meta.filter(Boolean).join(' · '));
    return item;
  }
}

class SessionPanel extends Widget {
  private view: SessionView | null = null;
  private close_: (() => void) | null = null;

  constructor(readonly sessionId: string) {
    super();
    this.addClass('ja-panel');
    this.node.textContent = 'Loading…';
    void this.load();
  }

  private async load(): Promise<void> {
    try {
      const source = await restSource(this.sessionId);
      if (this.isDisposed) {
        source.close(); // closed while it loaded
        return;
      }
      this.node.textContent = '';
      this.view = new SessionView(this.node, source);
      this.close_ = () => source.close();
    } catch (err) {
      this.node.textContent = `Cannot show session ${this.sessionId}: ${err}`;
    }
  }

  dispose(): void {
    this.view?.destroy();
    this.close_?.();
    super.dispose();
  }
}

class StatusItem extends Widget {
  constructor(
    private sessions: Sessions,
    showSidebar: () => void
  ) {
    super();
    this.addClass('ja-statusbar');
    this.node.title = 'Agent sessions: click to show them';
    this.node.addEventListener('click', showSidebar);
    sessions.onChange(() => this.render());
    this.render();
  }

  render(): void {
    const rows = [...this.sessions.rows.values()];
    const running = rows.filter(r => r.status === 'running' || r.status === 'sleeping').length;
    const waiting = rows.filter(r => r.status === 'awaiting_approval').length;
    this.node.textContent = `${running} running · ${waiting} need you`;
    this.node.classList.toggle('ja-statusbar-attention', waiting > 0);
  }
}

const lastSeen = new Map<string, string>(); // session id -> the status last told about
const waiting = new Map<string, string>(); // session id -> its "needs you" notification

function notify(row: ISessionRow, old: ISessionRow | null, open: (id: string) => void): void {
  if (old?.status === row.status || lastSeen.get(row.id) === row.status) {
    return;
  }
  lastSeen.set(row.id, row.status);
  if (old === null && row.status !== 'awaiting_approval' && Date.now() / 1000 - row.updated_at > 60) {
    return; // old news about a session this page had not seen
  }
  const asking = waiting.get(row.id);
  if (asking !== undefined && row.status !== 'awaiting_approval') {
    Notification.dismiss(asking); // answered: the call no longer waits
    waiting.delete(row.id);
  }
  const name = row.name || row.id;
  const options = {
    autoClose: 8000 as number | false,
    actions: [{ label: 'Open', callback: () => open(row.id) }]
  };
  if (row.status === 'awaiting_approval') {
    const id = Notification.warning(`Agent ${name} needs you: a call waits for approval`, {
      ...options,
      autoClose: false
    });
    waiting.set(row.id, id);
  } else if (row.status === 'failed') {
    Notification.error(`Agent ${name} failed`, options);
  } else if (row.status === 'done') {
    Notification.success(`Agent ${name} finished`, options);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-agent:plugin',
  description: 'Every jupyter-agent session in one sidebar, with panels and notifications.',
  autoStart: true,
  optional: [IStatusBar, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null
  ) => {
    const sessions = new Sessions();
    const panels = new Map<string, MainAreaWidget<SessionPanel>>();

    app.commands.addCommand(OPEN, {
      label: 'Open agent session',
      execute: args => {
        const id = String(args.id);
        let panel = panels.get(id);
        if (!panel || panel.isDisposed) {
          panel = new MainAreaWidget({ content: new SessionPanel(id) });
          const row = sessions.rows.get(id);
          panel.id = `jupyter-agent-session-${id}`;
          panel.title.label = `Agent: ${row?.name || id}`;
          panel.title.closable = true;
          panels.set(id, panel);
          app.shell.add(panel, 'main');
        }
        app.shell.activateById(panel.id);
      }
    });
    const open = (id: string) => void app.commands.execute(OPEN, { id });

    const sidebar = new AgentSidebar(sessions, open);
    app.shell.add(sidebar, 'left', { rank: 850 });
    sessions.onChange((row, old) => {
      if (row !== null) {
        notify(row, old, open);
      } else {
        sessions.sorted().forEach(r => r.status === 'awaiting_approval' && notify(r, null, open));
      }
    });
    if (statusBar) {
      const item = new StatusItem(sessions, () => app.shell.activateById(sidebar.id));
      statusBar.registerStatusItem('jupyter-agent:status', {
        item,
        align: 'left',
        rank: 50
      });
    }
    if (notebooks) {
      keepSnapshotsFresh(notebooks);
    }
    void sessions.load().catch(err => {
      sidebar.node.append(el('div', 'ja-error', `Cannot list agent sessions: ${err}`));
    });
  }
};

export default plugin;
