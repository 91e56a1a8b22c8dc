// Types for widget.js, the session view shared by the notebook widget and the lab extension.

export interface ViewSource {
  /** header, plan, approvals, live, error, notice, session_id, initial_page */
  state(): Record<string, unknown>;
  /** called with {type: "event", event} for a new event, {type: "state"} when values change */
  subscribe(fn: (message: { type: string; event?: unknown }) => void): () => void;
  /** {type: "hello" | "page" | "detail" | "control", ...} -> the answer */
  request(message: Record<string, unknown>): Promise<Record<string, unknown>>;
  close(): void;
}

/** A cost as every view spells it: $0.0123 under a dollar, $12.34, <$0.0001, or "unknown". */
export function fmtCost(usd: number | null | undefined): string;

export class SessionView {
  constructor(el: HTMLElement, source: ViewSource, options?: { pageSize?: number });
  destroy(): void;
}

declare const _default: { render(context: { model: unknown; el: HTMLElement }): () => void };
export default _default;
