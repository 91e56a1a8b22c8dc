// A session as the shared SessionView reads it, over the REST API and the live stream
// (the notebook widget reads the same things over its comm).

import type { ViewSource } from '../../jupyter_agent/static/widget.js';
import { requestJSON, sendCommand, stream } from './api';

interface ISummary {
  session: { id: string };
  header: Record<string, unknown>;
  plan: unknown[];
  approvals: unknown[];
}

const REFRESH_MS = 150;

/** Load what a view needs to open at once (summary and newest page), then follow the stream. */
export async function restSource(sessionId: string): Promise<ViewSource & { id: string }> {
  const [summary, page] = await Promise.all([
    requestJSON<ISummary>(['sessions', sessionId]),
    requestJSON<Record<string, unknown>>(['sessions', sessionId, 'events'])
  ]);
  const id = summary.session.id;
  let state: Record<string, unknown> = {
    session_id: id,
    header: summary.header,
    plan: summary.plan,
    approvals: summary.approvals,
    live: {},
    error: '',
    notice: '',
    initial_page: page
  };
  const listeners = new Set<(m: { type: string; event?: unknown }) => void>();
  const emit = (m: { type: string; event?: unknown }) => listeners.forEach(fn => fn(m));
  let timer: number | null = null;
  const refresh = () => {
    if (timer !== null) {
      return;
    }
    timer = window.setTimeout(async () => {
      timer = null;
      try {
        const s = await requestJSON<ISummary>(['sessions', id]);
        state = { ...state, header: s.header, plan: s.plan, approvals: s.approvals };
        emit({ type: 'state' });
      } catch {
        // the next change tries again
      }
    }, REFRESH_MS);
  };
  const unsubscribe = stream.subscribe(m => {
    if (m.type === 'event' && m.session_id === id) {
      emit({ type: 'event', event: m.event });
    } else if (m.type === 'session' && m.row.id === id) {
      refresh();
    } else if (m.type === 'open' || (m.type === 'reload' && m.session_id === id)) {
      refresh();
      catchUp().catch(() => undefined); // the next change or reconnect tries again
    }
  });
  // After a reconnect or a burst too big for the stream: hand the view the newest event; a
  // gap before it makes the view ask ("hello") for what it is missing.
  const catchUp = async () => {
    const data = await requestJSON<{ events: unknown[] }>(
      ['sessions', id, 'events'],
      {},
      { limit: 1 }
    );
    const newest = data.events[data.events.length - 1];
    if (newest) {
      emit({ type: 'event', event: newest });
    }
  };

  const answer = async (m: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const events = ['sessions', id, 'events'];
    switch (m.type) {
      case 'hello':
        return { type: 'events', ...(await requestJSON(events, {}, { after: Number(m.last_seq) || 0 })) };
      case 'page':
        return {
          type: 'page',
          before: m.before,
          ...(await requestJSON(events, {}, { before: Number(m.before), limit: Number(m.limit) || 200 }))
        };
      case 'detail':
        return {
          type: 'detail',
          ...(await requestJSON(events, {}, { seq: (m.seqs as number[]).join(',') }))
        };
      case 'control':
        return control(m);
      default:
        throw new Error(`unknown request ${String(m.type)}`);
    }
  };

  const control = async (m: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const { type: _type, action, seq, ...rest } = m;
    const args: Record<string, unknown> = { ...rest };
    if (seq !== undefined) {
      args.at = seq;
    }
    const verb = String(action);
    const result = await sendCommand(id, verb, args);
    const notice =
      verb === 'fork'
        ? `forked as session ${String(result.session_id)}: open it from the Agents sidebar`
        : result.state === 'queued'
          ? `${verb} sent to the kernel that runs this session`
          : `${verb} done`;
    state = { ...state, error: '', notice };
    refresh();
    return { type: 'control', action: verb, ok: true, notice };
  };

  return {
    id,
    state: () => state,
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    async request(m) {
      try {
        return await answer(m);
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        if (m.type === 'control') {
          state = { ...state, error, notice: '' };
          emit({ type: 'state' });
        }
        return { type: String(m.type), ok: false, error };
      }
    },
    close() {
      unsubscribe();
      listeners.clear();
      if (timer !== null) {
        window.clearTimeout(timer);
      }
    }
  };
}
