// Keep the static HTML snapshot inside each agent widget's output current, so a saved notebook
// opened without a kernel (another user, nbviewer, GitHub) shows the session as it was at the
// save, not as it was when the cell ran. Fresh snapshots are fetched as sessions change and
// written into the outputs synchronously when a save starts, before the notebook is serialized.
//
// The same snapshot stands in for a widget whose model is gone: after a kernel restart (or with
// the notebook opened on another kernel), JupyterLab's widget renderer can only say "Error
// displaying widget: model not found"; the output shows the session's snapshot there instead.

import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IOutputModel, IRenderMime, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { requestJSON, stream } from './api';

const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
const SESSION_ID = /class="ja-snapshot" data-session-id="([\w-]+)"/;
const FETCH_DELAY_MS = 1000;
const MODEL_NOT_FOUND = 'Error displaying widget: model not found'; // ipywidgets' renderer says

function* agentOutputs(panel: NotebookPanel): Generator<[IOutputModel, string]> {
  const cells = panel.content.model?.cells;
  if (!cells) {
    return;
  }
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') {
      continue;
    }
    const outputs = (cell as unknown as { outputs: { length: number; get(i: number): IOutputModel } })
      .outputs;
    for (let k = 0; k < outputs.length; k++) {
      const output = outputs.get(k);
      const id = sessionShown(output);
      if (id) {
        yield [output, id];
      }
    }
  }
}

/** The session an output shows as an agent widget (with its snapshot beside), if it does. */
function sessionShown(output: IOutputModel): string | null {
  const html = output.data['text/html'];
  const match = typeof html === 'string' && WIDGET_MIME in output.data && SESSION_ID.exec(html);
  return match ? match[1] : null;
}

/** A snapshot drawn in place of a lost widget. */
interface IStandIn {
  renderer: IRenderMime.IRenderer;
  trusted: boolean;
}

/** The newest snapshot fetched of each session, and the stand-ins that draw it. */
class Snapshots {
  private html = new Map<string, string>();
  private standIns = new Map<string, Set<IStandIn>>();

  get(id: string): string | undefined {
    return this.html.get(id);
  }

  set(id: string, html: string): void {
    this.html.set(id, html);
    for (const standIn of this.standIns.get(id) ?? []) {
      this.draw(standIn, html);
    }
  }

  /** A stand-in drawn with ``drawn``: drawn again with each newer snapshot. */
  add(id: string, standIn: IStandIn, drawn: string): void {
    for (const other of this.standIns.get(id) ?? []) {
      this.draw(other, null); // (drops those whose output was drawn anew)
    }
    let set = this.standIns.get(id);
    if (!set) {
      set = new Set();
      this.standIns.set(id, set);
    }
    set.add(standIn);
    standIn.renderer.disposed.connect(() => {
      set.delete(standIn);
      if (!set.size && this.standIns.get(id) === set) {
        this.standIns.delete(id);
      }
    });
    const newest = this.html.get(id);
    if (newest !== undefined && newest !== drawn) {
      this.draw(standIn, newest); // it came while the stand-in was first drawn
    }
  }

  private draw({ renderer, trusted }: IStandIn, html: string | null): void {
    if (!renderer.node.isConnected) {
      dispose(renderer); // its output was drawn anew (a save sets its data): another stands in
    } else if (html !== null) {
      void renderer.renderModel(new MimeModel({ data: { 'text/html': html }, trusted }));
    }
  }
}

export function keepSnapshotsFresh(tracker: INotebookTracker): void {
  const fresh = new Snapshots();
  const asked = new Map<string, number>(); // session id -> its latest fetch (a later one wins)
  const stale = new Set<string>();
  let timer: number | null = null;

  const shown = (): Set<string> => {
    const ids = new Set<string>();
    tracker.forEach(panel => {
      for (const [, id] of agentOutputs(panel)) {
        ids.add(id);
      }
    });
    return ids;
  };

  const fetchStale = () => {
    timer = null;
    const wanted = shown();
    for (const id of [...stale]) {
      stale.delete(id);
      if (!wanted.has(id)) {
        continue;
      }
      const fetch = (asked.get(id) ?? 0) + 1;
      asked.set(id, fetch);
      requestJSON<{ html: string }>(['sessions', id, 'snapshot'])
        .then(data => {
          if (asked.get(id) === fetch) {
            fresh.set(id, data.html);
          }
        })
        .catch(() => stale.add(id));
    }
  };

  const markStale = (id: string) => {
    stale.add(id);
    if (timer === null) {
      timer = window.setTimeout(fetchStale, FETCH_DELAY_MS);
    }
  };

  stream.subscribe(m => {
    if (m.type === 'session') {
      markStale(m.row.id);
    }
  });

  tracker.widgetAdded.connect((_, panel) => {
    void panel.context.ready.then(() => {
      for (const [, id] of agentOutputs(panel)) {
        markStale(id);
      }
      standInForLostWidgets(panel, fresh);
    });
    panel.context.saveState.connect((__, state) => {
      if (state !== 'started') {
        return;
      }
      for (const [output, id] of agentOutputs(panel)) {
        const html = fresh.get(id);
        if (html && html !== output.data['text/html']) {
          output.setData({ data: { ...output.data, 'text/html': html } });
        }
      }
    });
  });
}

/** A code cell's output area: a widget per output, in the order of its model's outputs. */
interface IShownOutputs {
  widgets: readonly Widget[];
  model: { length: number; get(i: number): IOutputModel };
}

/** Watch the notebook for agent outputs whose widget model is gone, and show the session's
 * snapshot in each (the newest fetched, else the one saved with the output). A look is at most
 * once a frame and reads no live widget's content: cells, outputs, and each output's nodes. */
function standInForLostWidgets(panel: NotebookPanel, fresh: Snapshots): void {
  let queued = false;
  const look = () => {
    queued = false;
    for (const cell of panel.content.widgets) {
      if (cell.model.type !== 'code') {
        continue;
      }
      const area = (cell as unknown as { outputArea?: IShownOutputs }).outputArea;
      if (!area || area.widgets.length !== area.model.length) {
        continue; // (an input prompt, or outputs trimmed: left as JupyterLab shows them)
      }
      area.widgets.forEach((shown, i) => {
        const output = area.model.get(i);
        const id = sessionShown(output);
        if (!id) {
          return;
        }
        // the renderer's own node, beside the prompt: its text alone (not a live widget's)
        for (const node of shown.node.children) {
          if (node.childElementCount === 0 && node.textContent === MODEL_NOT_FOUND) {
            const html = fresh.get(id) ?? String(output.data['text/html']);
            void showSnapshot(panel, shown, node as HTMLElement, html, output.trusted).then(
              standIn => standIn && fresh.add(id, standIn, html)
            );
          }
        }
      });
    }
  };
  const observer = new MutationObserver(() => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(look);
    }
  });
  observer.observe(panel.content.node, { childList: true, subtree: true });
  panel.disposed.connect(() => observer.disconnect());
  look();
}

async function showSnapshot(
  panel: NotebookPanel,
  shown: Widget,
  node: HTMLElement,
  html: string,
  trusted: boolean
): Promise<IStandIn | null> {
  node.textContent = ''; // (no longer what a look matches)
  node.classList.add('ja-lost-widget');
  node.title =
    'The widget of this session lived in a kernel that has since restarted: ' +
    'this is the session as last saved (the Agents sidebar shows it live).';
  const renderer = panel.content.rendermime.createRenderer('text/html');
  await renderer.renderModel(new MimeModel({ data: { 'text/html': html }, trusted }));
  // the widget's renderer may have written over the node meanwhile (a later look handles it)
  if (shown.isDisposed || !node.isConnected || node.firstChild !== null) {
    renderer.dispose();
    return null;
  }
  Widget.attach(renderer, node);
  shown.disposed.connect(() => dispose(renderer));
  return { renderer, trusted };
}

/** Dispose a stand-in, attached or not. Its node may be out of the page already: the output's
 * own renderer empties the node it was attached in when it draws again (after a save), and
 * Lumino refuses to detach a widget whose node is not in the page. */
function dispose(renderer: Widget): void {
  if (renderer.isAttached && !renderer.node.isConnected) {
    renderer.processMessage(Widget.Msg.BeforeDetach);
    renderer.processMessage(Widget.Msg.AfterDetach); // (no longer counted as attached)
  }
  renderer.dispose();
}
