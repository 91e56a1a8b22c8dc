// Keep the static HTML snapshot inside each agent widget's output current, so a saved notebook
// opened without a kernel (another user, nbviewer, GitHub) shows the session as it was at the
// save, not as it was when the cell ran. Fresh snapshots are fetched as sessions change and
// written into the outputs synchronously when a save starts, before the notebook is serialized.

import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IOutputModel } from '@jupyterlab/rendermime';

import { requestJSON, stream } from './api';

const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
const SESSION_ID = /class="ja-snapshot" data-session-id="([\w-]+)"/;
const FETCH_DELAY_MS = 1000;

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
      const html = output.data['text/html'];
      const match = typeof html === 'string' && WIDGET_MIME in output.data && SESSION_ID.exec(html);
      if (match) {
        yield [output, match[1]];
      }
    }
  }
}

export function keepSnapshotsFresh(tracker: INotebookTracker): void {
  const fresh = new Map<string, string>(); // session id -> newest snapshot html
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
      requestJSON<{ html: string }>(['sessions', id, 'snapshot'])
        .then(data => fresh.set(id, data.html))
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
