// The server extension's REST API and its live stream, as the lab extension uses them.

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface ISessionRow {
  id: string;
  name: string | null;
  parent_id: string | null;
  fork_seq: number | null;
  status: string;
  owner: string | null;
  model: string | null;
  goal: string | null;
  notebook?: string | null;
  created_at: number;
  updated_at: number;
  last_seq: number;
  steps: number;
  tool_calls: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number | null;
  runtime_id: string | null;
  needs_you: boolean;
}

export interface ICompactEvent {
  seq: number;
  ts: number;
  kind: string;
  actor: string;
  p: Record<string, unknown>;
  clipped: boolean;
}

export type StreamMessage =
  | { type: 'session'; row: ISessionRow }
  | { type: 'event'; session_id: string; event: ICompactEvent }
  | { type: 'reload'; session_id: string; last_seq: number }
  | { type: 'open' };

const settings = ServerConnection.makeSettings();

export function apiUrl(...parts: string[]): string {
  return URLExt.join(settings.baseUrl, 'jupyter-agent', 'api', ...parts);
}

/** A JSON request to the API; a refused one throws an Error carrying the server's message. */
export async function requestJSON<T>(
  path: string[],
  init: RequestInit = {},
  query: Record<string, string | number> = {}
): Promise<T> {
  const q = Object.entries(query)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  const url = apiUrl(...path) + (q ? `?${q}` : '');
  const resp = await ServerConnection.makeRequest(url, init, settings);
  const text = await resp.text();
  const data = text ? JSON.parse(text) : {};
  if (!resp.ok) {
    throw new Error(data.message || `${resp.status} ${resp.statusText}`);
  }
  return data as T;
}

/** Every session in the store, a page of 1,000 at a time. */
export async function listSessions(): Promise<ISessionRow[]> {
  const rows: ISessionRow[] = [];
  for (;;) {
    const data = await requestJSON<{ sessions: ISessionRow[]; total: number }>(
      ['sessions'],
      {},
      { limit: 1000, offset: rows.length }
    );
    rows.push(...data.sessions);
    if (!data.sessions.length || rows.length >= data.total) {
      return rows;
    }
  }
}

export async function sendCommand(
  sessionId: string,
  verb: string,
  args: Record<string, unknown> = {}
): Promise<Record<string, unknown>> {
  return requestJSON(['sessions', sessionId, 'commands'], {
    method: 'POST',
    body: JSON.stringify({ verb, ...args })
  });
}

type Listener = (m: StreamMessage) => void;

/** One EventSource for the whole page, shared by the sidebar and every panel; reconnects. */
export class Stream {
  private listeners = new Set<Listener>();
  private source: EventSource | null = null;

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    this.open();
    return () => this.listeners.delete(fn);
  }

  private open(): void {
    if (this.source) {
      return;
    }
    const token = settings.token ? `?token=${encodeURIComponent(settings.token)}` : '';
    const source = new EventSource(apiUrl('stream') + token, { withCredentials: true });
    const emit = (m: StreamMessage) => this.listeners.forEach(fn => fn(m));
    source.addEventListener('hello', () => emit({ type: 'open' }));
    source.addEventListener('session', ev =>
      emit({ type: 'session', row: JSON.parse((ev as MessageEvent).data) })
    );
    source.addEventListener('event', ev => {
      const data = JSON.parse((ev as MessageEvent).data);
      emit({ type: 'event', session_id: data.session_id, event: data.event });
    });
    source.addEventListener('reload', ev => {
      const data = JSON.parse((ev as MessageEvent).data);
      emit({ type: 'reload', session_id: data.session_id, last_seq: data.last_seq });
    });
    this.source = source; // EventSource reconnects by itself; 'hello' says it is back
  }
}

export const stream = new Stream();
