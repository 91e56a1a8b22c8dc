// jupyter-agent: the live view of one session. Plain DOM, no dependencies, no build step.
//
// `render({model, el})` is the anywidget entry point. `SessionView` takes any data source:
//   source.state()       -> {session_id, header, plan, approvals, live, error, notice, initial_page}
//   source.subscribe(fn) -> unsubscribe; fn({type: "state"}) or fn({type: "event", event})
//   source.request(msg)  -> Promise of the answer to {type: "hello" | "page" | "detail" | "control"}
// so a JupyterLab panel can show a session with the same code and a REST source.
// The timeline folds events into rows the way jupyter_agent/_timeline.py does.

const PAGE = 200;
const GANTT_SPANS = 300; // the chart shows the newest calls and model turns: one bar each
const REQUEST_TIMEOUT_MS = 30000;
const READ_WAIT_MS = 1500; // a read the kernel has not answered by then is asked of the server
const CONFIRM_MS = 8000; // how long "Confirm restore" waits for its second click
const MARK = { ok: "✓", error: "✗", running: "…", waiting: "?", skipped: "-", info: "·" };
const TERMINAL = new Set(["done", "failed", "stopped"]);
// The controls that cannot apply in a status, shown disabled: nothing runs a finished session
// (a restore or a fork still can), a running one is not resumed, a resting one not paused.
const FINISHED_OFF = ["pause", "resume", "stop", "tell"];
const CONTROLS_OFF = {
  done: FINISHED_OFF,
  failed: FINISHED_OFF,
  stopped: FINISHED_OFF,
  running: ["resume"],
  sleeping: ["resume"],
  awaiting_approval: ["resume"],
  paused: ["pause"],
  interrupted: ["pause"],
};
const COUNTING = new Set(["running", "sleeping", "awaiting_approval"]);

// ---- formatting ---------------------------------------------------------------------------

export function short(text, n) {
  const s = String(text ?? "").split(/\s+/).filter(Boolean).join(" ");
  return s.length <= n ? s : s.slice(0, n - 1) + "…";
}

export function argsText(raw) {
  try {
    const value = JSON.parse(raw);
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const parts = Object.entries(value).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
      return short(parts.join(", "), 70);
    }
  } catch (_) {
    // cut in the delta or not JSON: show it as text
  }
  return short(raw, 70);
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtElapsed(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${pad(Math.floor((s % 86400) / 3600))}h`;
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "unknown";
  if (usd > 0 && usd < 0.00005) return "<$0.0001"; // spent, but less (as cost_text says)
  return `$${Number(usd.toFixed(4)) < 1 ? usd.toFixed(4) : usd.toFixed(2)}`;
}

function fmtClock(ts) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDate(ts) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(ts)}`;
}

// ---- events -> rows (the semantics of _timeline.py; a result completes its call's row) -----

export function newFold() {
  return { rows: [], calls: new Map(), undone: [], askedAt: new Map() };
}

// A restore to ``to``: rows an earlier restore closed that were open at ``to`` are open again,
// as they were then; rows still open that began after it are undone (a call whose approval
// was asked after it runs again). As _timeline._rewind does.
function rewind(fold, restoreSeq, to, changed) {
  const back = new Map(); // row -> its state as of ``to``: the latest begun by then
  for (const u of fold.undone) {
    if (u.since <= to && to < u.restoreSeq && (!back.has(u.row) || u.since > back.get(u.row).since)) {
      back.set(u.row, u);
    }
  }
  for (const u of back.values()) {
    u.row.status = u.status;
    u.row.detail = u.detail;
    u.row.duration_ms = u.duration_ms;
    u.row.result_seq = u.result_seq;
    u.row.end_seq = u.end_seq;
    fold.calls.set(u.key, u.row);
    changed.push(u.row);
  }
  fold.undone = fold.undone.filter((u) => !(u.since <= to && to < u.restoreSeq));
  const keep = (key, row, since, status = row.status) => fold.undone.push({
    key, row, status, detail: row.detail, duration_ms: row.duration_ms, result_seq: row.result_seq,
    end_seq: row.end_seq, since, restoreSeq,
  });
  const close = (key, row, since, status) => {
    keep(key, row, since);
    row.status = status;
    if (status === "skipped") row.detail = `${row.detail}  ⇒ cut off by the restore`.trim();
    changed.push(row);
  };
  const before = new Map(fold.calls);
  for (const [key, row] of before) {
    const asked = before.get(`?${key}`);
    if (row.seq > to && (row.status === "running" || row.status === "waiting")) {
      if (row.status === "waiting" && asked) {  // running until it was asked
        keep(key, row, row.seq, "running");
        close(key, row, asked.seq, "skipped");
      } else {
        close(key, row, row.seq, "skipped");
      }
      fold.calls.delete(key);
    } else if (row.status === "waiting" && asked && asked.seq > to) {
      close(key, row, asked.seq, "running"); // asked after the point: it runs again
    } else if (row.seq <= to && row.result_seq > to) {
      if (key.startsWith("?")) {  // a question answered after the point: asked again
        close(key, row, row.result_seq, "waiting");
        row.result_seq = undefined;
        continue;
      }
      // its result is on the branch left: open again, as at the point (it runs again, or
      // waits for the person its question is open to again)
      const waits = asked && asked.seq <= to && !(asked.result_seq <= to);
      close(key, row, row.result_seq, waits ? "waiting" : "running");
      row.detail = row.detail.slice(0, Math.max(0, row.detail.lastIndexOf("  ⇒ ")));
      row.duration_ms = null;
      row.result_seq = undefined;
      row.end_seq = row.seq;
    }
  }
}

// Fold one event (in seq order); returns {added: row | null, changed: [rows]}.
export function foldEvent(fold, e) {
  const p = e.p || {};
  const changed = [];
  const row = (kind, label, detail = "", status = "info", extra = {}) => ({
    seq: e.seq, end_seq: e.seq, ts: e.ts, kind, label, detail, status,
    duration_ms: null, actor: e.actor, ...extra,
  });
  let added = null;
  switch (e.kind) {
    case "session_started":
      added = row("status", "started", short(p.goal, 100));
      break;
    case "model_response": {
      // the newest answer's calls: when it asked for each
      fold.askedAt = new Map((p.tool_calls || []).map((c) => [c.id, e.ts]));
      const names = (p.tool_calls || []).map((c) => c.name).join(", ");
      let detail = names ? `→ ${names}` : `answer: ${short(p.text, 80)}`;
      if (names && p.text) detail = `${short(p.text, 50)} ${detail}`;
      const u = p.usage || {};
      const tokens = (u.input_tokens || 0) + (u.output_tokens || 0);
      // a branch "after" the answer takes the calls it asked for too (their intents follow
      // it, or for a call recorded with its result, that result), or they would never get one
      added = row("model", `step ${p.step}`, `${detail}  [${tokens} tok]`, "ok", {
        duration_ms: p.duration_ms ?? null,
        end_seq: e.seq + (p.tool_calls || []).length,
      });
      break;
    }
    case "model_retry": {
      const err = p.error || {};
      added = row("model", `retry ${p.attempt}`, `${short(err.message, 80)}; again in ${p.delay_s} s`, "error");
      break;
    }
    case "tool_call":
      added = row("tool", p.name, argsText(p.arguments), "running", { call_id: p.call_id });
      fold.calls.set(p.call_id, added);
      break;
    case "tool_result": {
      let call = fold.calls.get(p.call_id);
      // a row of its own if it is its own intent (recorded with it: the arguments are here),
      // if its intent is older than what is loaded, or if its row is closed (a call run again
      // after a restore to between its intent and its result)
      const fresh = !call || (call.status !== "running" && call.status !== "waiting");
      if (fresh) {
        const own = "arguments" in p; // its own intent: its row begins as the answer asked for it
        const detail = own ? argsText(p.arguments) : p.rerun ? "run again" : "";
        const ts = own ? fold.askedAt.get(p.call_id) ?? e.ts : e.ts;
        call = row("tool", p.name, detail, "info", { call_id: p.call_id, ts });
        fold.calls.set(p.call_id, call);
      }
      else if (p.rerun) call.detail = `${call.detail} (run again)`.trim(); // (reopened by a restore)
      call.status = p.skipped ? "skipped" : p.is_error ? "error" : "ok";
      call.duration_ms = p.duration_ms ?? null;
      call.detail = `${call.detail}  ⇒ ${short(p.output, 60)}`.trim();
      call.result_seq = e.seq;
      call.end_seq = e.seq;
      if (fresh) added = call;
      else changed.push(call);
      break;
    }
    case "message":
      added = row("message", `from ${e.actor}`, String(p.text ?? ""));
      break;
    case "plan_updated": {
      const marks = { done: "[x]", active: "[>]", pending: "[ ]" };
      const plan = (p.plan || []).map((i) => `${marks[i.status] || "[ ]"} ${i.step}`).join(" ");
      added = row("plan", "plan", short(plan, 120));
      break;
    }
    case "approval_requested": {
      const call = fold.calls.get(p.call_id);
      if (call) {
        call.status = "waiting";
        changed.push(call);
      }
      added = row("approval", "approval asked", `${p.name || ""} ${p.call_id} (${p.reason})`, "waiting", {
        call_id: p.call_id,
      });
      fold.calls.set(`?${p.call_id}`, added);
      break;
    }
    case "approval_decided": {
      const approved = p.decision === "approve";
      const asked = fold.calls.get(`?${p.call_id}`);
      if (asked) {  // answered: no longer a question (kept: a restore may ask it again)
        asked.status = approved ? "ok" : "skipped";
        asked.result_seq = e.seq;
        changed.push(asked);
      }
      const call = fold.calls.get(p.call_id);
      if (approved && call && call.status === "waiting") {
        call.status = "running"; // (until its result)
        changed.push(call);
      }
      const label = `${approved ? "approved" : "denied"} by ${e.actor}`;
      added = row("approval", label, String(p.call_id), "info", { call_id: p.call_id });
      break;
    }
    case "timer_set":
      added = row("timer", "sleep until", fmtDate(p.wake_at));
      break;
    case "status_changed":
      if (p.status !== "running" && p.status !== "sleeping") added = row("status", p.status, p.reason || "");
      break;
    case "budget_exceeded":
      added = row("status", "limit reached", `${p.kind}: ${p.used} of ${p.limit}`, "error");
      break;
    case "error":
      added = row("error", String(p.code), short(p.message, 120), "error");
      break;
    case "session_finished":
      added = row("result", "done", short(p.result, 120), "ok");
      break;
    case "session_failed":
      added = row("result", "failed", short((p.error || {}).message, 120), "error");
      break;
    case "fork":
      added = row("fork", `forked by ${e.actor}`, `from ${p.parent_id} after event ${p.fork_seq}: ${p.name}`);
      break;
    case "restore": {
      rewind(fold, e.seq, p.to_seq, changed);
      // the branch it leaves shows as left (greyed), and one a restore of a restore takes
      // back shows as it was at the point (one to a point in between leaves it again)
      for (const r of fold.rows) {
        let was;
        if (r.seq <= p.to_seq) {
          const then = (r.marks || []).filter(([at]) => at <= p.to_seq).pop();
          was = then ? then[1] : undefined;
        } else if (r.abandoned_by === undefined) {
          was = e.seq;
        } else {
          continue;
        }
        if (was === r.abandoned_by) continue;
        if (was === undefined) delete r.abandoned_by;
        else r.abandoned_by = was;
        (r.marks = r.marks || []).push([e.seq, was]); // (restore, its mark since)
        changed.push(r);
      }
      const files = (p.files || []).map((f) => f.path).join(", ");
      const detail = `back to event ${p.to_seq}` + (files ? `; files put back: ${files}` : "");
      added = row("restore", `restored by ${e.actor}`, short(detail, 120));
      break;
    }
    default:
      break;
  }
  if (added) fold.rows.push(added);
  return { added, changed };
}

export function foldEvents(events) {
  const fold = newFold();
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) foldEvent(fold, e);
  return fold;
}

// ---- the anywidget model as a data source -------------------------------------------------

const FIELDS = ["session_id", "header", "plan", "approvals", "live", "error", "notice", "initial_page"];

export function modelSource(model) {
  const me = Math.random().toString(36).slice(2, 10);
  let counter = 0;
  const pending = new Map();
  const listeners = new Set();
  let heard = Date.now(); // when the kernel last said anything
  const onCustom = (msg) => {
    if (!msg || typeof msg !== "object") return;
    heard = Date.now();
    if (msg.req && pending.has(msg.req)) {
      const { resolve, timer } = pending.get(msg.req);
      pending.delete(msg.req);
      clearTimeout(timer);
      resolve(msg);
    } else if (msg.type === "event" && msg.event) {
      for (const fn of listeners) fn({ type: "event", event: msg.event });
    }
  };
  const onChange = () => {
    for (const fn of listeners) fn({ type: "state" });
  };
  const onModelChange = () => {
    heard = Date.now();
    onChange();
  };
  let commClosed = false; // ipywidgets says so when the kernel goes (a restart, a shutdown)
  const onCommLive = () => {
    commClosed = true;
    watch.soon(); // the store says at once what became of the session
  };
  model.on("msg:custom", onCustom);
  model.on("comm_live_update", onCommLive);
  for (const f of FIELDS) model.on(`change:${f}`, onModelChange);
  // the kernel's model stops changing when the kernel goes: the store (through the server)
  // still says how the session is, e.g. interrupted by a kernel restart, and holds the events
  // since: the newest is handed to the view, which asks for what it misses before it (a model
  // drawn again after a restart has only the page it was first shown with)
  const silentMs = () => Date.now() - heard;
  const onWatch = async () => {
    onChange();
    if (!commClosed && silentMs() < STALE_AFTER_MS) return;
    const newest = await serverRead(model.get("session_id"), { type: "newest" });
    const event = newest && (newest.events || []).slice(-1)[0];
    if (event) for (const fn of listeners) fn({ type: "event", event });
  };
  const watch = serverWatch(() => model.get("session_id"), () => (commClosed ? Infinity : silentMs()), onWatch);
  const gone = () => {
    const hd = model.get("header") || {};
    return kernelGone(model.get("session_id"), watch.newer(hd)?.status || hd.status);
  };
  // a read the kernel cannot answer (any more, or yet): the server can, the same answers from
  // the store (null for what is not a read, or without a server)
  const fromStore = (msg) => (READS.has(msg.type) ? serverRead(model.get("session_id"), msg) : null);
  return {
    state() {
      const out = {};
      for (const f of FIELDS) out[f] = model.get(f);
      const newer = watch.newer(out.header || {});
      if (newer) out.header = newer;
      if (out.header && out.header.status === "interrupted" && !out.notice) {
        out.notice = `the process that ran this session ended (a kernel restart?): ${resumeHint(out.session_id)}`;
      }
      return out;
    },
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    async request(msg) {
      let refused = ""; // what the server said, if only a kernel with the agent could do it
      if (msg.type === "control") {
        const viaServer = await serverControl(model.get("session_id"), msg);
        if (viaServer && !viaServer.refused) return viaServer;
        refused = viaServer ? viaServer.error : "";
      }
      if (commClosed) return (await fromStore(msg)) || { type: msg.type, ok: false, error: refused || gone() };
      const req = `${me}-${++counter}`;
      const viaKernel = new Promise((resolve) => {
        const fail = (error, extra = {}) => {
          if (!pending.has(req)) return;
          clearTimeout(pending.get(req).timer);
          pending.delete(req);
          resolve({ type: msg.type, ok: false, error, ...extra });
        };
        // when the server already said no process runs it, this kernel gets a short while
        const wait = refused ? REFUSED_WAIT_MS : REQUEST_TIMEOUT_MS;
        const busy = "no answer from the kernel yet (is it busy?)";
        const timer = setTimeout(() => fail(refused || busy, { timeout: true }), wait);
        pending.set(req, { resolve, timer });
        try {
          const sent = model.send({ ...msg, req });
          if (sent && typeof sent.catch === "function") sent.catch(() => fail(refused || gone()));
        } catch {
          fail(refused || gone()); // no comm: its kernel restarted or stopped
        }
      });
      if (!READS.has(msg.type)) return viaKernel;
      // a read the kernel does not answer at once (a cell keeps it busy, or the model was
      // drawn again from a saved notebook after a restart: no comm, and nothing says so) is
      // answered from the store, as the kernel would
      const quick = await Promise.race([viaKernel, new Promise((r) => setTimeout(() => r(null), READ_WAIT_MS))]);
      if (quick && quick.ok !== false) return quick;
      return (await fromStore(msg)) || quick || (await viaKernel);
    },
    close() {
      watch.stop();
      model.off("msg:custom", onCustom);
      model.off("comm_live_update", onCommLive);
      for (const f of FIELDS) model.off(`change:${f}`, onModelChange);
      for (const { timer } of pending.values()) clearTimeout(timer);
      pending.clear();
      listeners.clear();
    },
  };
}

const READS = new Set(["hello", "page", "detail"]); // what the store answers as the kernel did

// How to run a session again that no process runs.
function resumeHint(sessionId) {
  const id = JSON.stringify(String(sessionId || ""));
  return `resume it from a cell with the tools (and model object) it ran with, open_session(${id}, tools=[...]).resume(), or in a terminal, jupyter-agent resume ${sessionId} (built-in tools)`;
}

function kernelGone(sessionId, status) {
  const gone = "the kernel that showed this widget is gone (restarted?)";
  return TERMINAL.has(status) ? `${gone}, and the session is ${status}` : `${gone}: ${resumeHint(sessionId)}`;
}
const WATCH_EVERY_MS = 5000;
const REFUSED_WAIT_MS = 5000;
const STALE_AFTER_MS = 4000;

// Reads the session's row from the server now and then; ``newer(header)`` is the header as
// the store has it when the two disagree and the kernel has said nothing for a while (its
// model no longer changes once its kernel is gone), else null.
function serverWatch(sessionId, silentMs, changed) {
  const server = jupyterServer();
  let row = null;
  let stopped = !server || typeof fetch !== "function";
  let timer = null;
  let polling = false;
  const poll = async () => {
    timer = null;
    if (stopped) return;
    polling = true;
    const sid = sessionId();
    if (sid) {
      try {
        const headers = server.token ? { Authorization: `token ${server.token}` } : {};
        const url = `${server.base}jupyter-agent/api/sessions/${encodeURIComponent(sid)}?row=1`;
        const resp = await fetch(url, { headers, credentials: "same-origin" });
        if (resp.status === 404) stopped = true; // not in the server's store (or no API)
        if (resp.ok) {
          row = (await resp.json()).session;
          changed(); // (a view compares it with the kernel's each time: cheap, every few s)
        }
      } catch {
        // no server (nbconvert, a static page): nothing to compare with
      }
    }
    polling = false;
    if (!stopped) timer = setTimeout(poll, WATCH_EVERY_MS);
  };
  if (!stopped) timer = setTimeout(poll, WATCH_EVERY_MS);
  return {
    soon() {
      if (stopped || polling) return; // (one in flight: it answers as soon)
      if (timer) clearTimeout(timer);
      timer = setTimeout(poll, 200); // (the kernel's last messages first)
    },
    newer(hd) {
      if (!row || row.status === hd.status || row.updated_at < (hd.updated_at ?? 0)) return null;
      if (silentMs() < STALE_AFTER_MS) return null; // the kernel speaks: its view is current
      return { ...hd, status: row.status, updated_at: row.updated_at };
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}

// A control goes to the Jupyter server's command endpoint when there is one: the kernel
// reads those from the store on its own thread, so a pause or an approval works while a cell
// keeps the kernel busy (comm messages wait until it is idle). Otherwise, or when only this
// kernel can do it (the server answers 409), it goes over the comm.
function jupyterServer() {
  const el = typeof document !== "undefined" && document.getElementById("jupyter-config-data");
  if (!el) return null;
  try {
    const config = JSON.parse(el.textContent || "{}");
    const base = String(config.baseUrl || "/");
    return { base: base.endsWith("/") ? base : `${base}/`, token: String(config.token || "") };
  } catch {
    return null;
  }
}

// ``hello``, ``page`` and ``detail`` (and ``newest``: the newest event) answered from the
// store through the server's REST API, as the kernel answers them; null without a server.
export async function serverRead(sessionId, msg) {
  const server = jupyterServer();
  if (!server || !sessionId || typeof fetch !== "function") return null;
  const params = {
    hello: { after: Number(msg.last_seq) || 0 },
    page: { before: Number(msg.before), limit: Number(msg.limit) || PAGE },
    detail: { seq: (msg.seqs || []).join(",") },
    newest: { limit: 1 },
  }[msg.type];
  if (!params) return null;
  const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const headers = server.token ? { Authorization: `token ${server.token}` } : {};
  const url = `${server.base}jupyter-agent/api/sessions/${encodeURIComponent(sessionId)}/events?${query}`;
  try {
    const resp = await fetch(url, { headers, credentials: "same-origin" });
    if (!resp.ok) return null;
    const data = await resp.json();
    const type = msg.type === "hello" ? "events" : msg.type;
    return msg.type === "page" ? { type, before: msg.before, ...data } : { type, ...data };
  } catch {
    return null;
  }
}

// When a control sent to the process that runs the session takes effect.
const SENT_WHEN = {
  pause: ": it pauses at its next step (after the tool call in progress, if any)",
  stop: ": it stops at its next step (after the tool call in progress, if any)",
  tell: ": the agent reads it at its next step",
};

export async function serverControl(sessionId, msg) {
  const server = jupyterServer();
  if (!server || !sessionId || typeof fetch !== "function") return null;
  const { type: _type, req: _req, action, seq, ...rest } = msg;
  const body = { verb: action, ...rest };
  if (seq !== undefined) body.at = seq;
  const headers = { "Content-Type": "application/json" };
  if (server.token) headers.Authorization = `token ${server.token}`;
  const xsrf = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  if (xsrf) headers["X-XSRFToken"] = decodeURIComponent(xsrf[1]);
  const url = `${server.base}jupyter-agent/api/sessions/${encodeURIComponent(sessionId)}/commands`;
  let resp;
  try {
    resp = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
  } catch {
    return null;
  }
  if (resp.status === 404 || resp.status >= 500) return null;
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 409 && data.no_process) {
    // no process runs it: this widget's kernel may still have the agent (its comm decides)
    return { type: "control", action, ok: false, refused: true, error: String(data.message) };
  }
  if (!resp.ok) return { type: "control", action, ok: false, error: String(data.message || resp.status) };
  const notice =
    action === "fork"
      ? `forked after event ${seq} as session ${data.session_id}: open_session(${JSON.stringify(data.session_id)})`
      : data.state === "queued" && !data.runtime_id
        ? `${action} recorded: it is acted on when the session is resumed`
        : data.state === "queued"
          ? `${action} sent${SENT_WHEN[action] || ""}`
          : `${action} done`;
  return { type: "control", action, ok: true, notice, via: "server" };
}

// ---- the view -----------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

// The chart's bars: the newest `max` tool calls and model turns (a bar each; a long session
// would otherwise rebuild thousands at every event), and the time they span. A call still open
// grows until `now` while the session is `live`; at rest (paused, a fork not yet run) it has no
// length: nothing runs it.
export function ganttSpans(rows, now, { live = true, max = GANTT_SPANS } = {}) {
  const spans = [];
  for (let i = rows.length - 1; i >= 0 && spans.length < max; i--) {
    const row = rows[i];
    if (row.kind === "tool") {
      const open = row.status === "running" && live;
      const end = row.duration_ms !== null ? row.ts + row.duration_ms / 1000 : open ? Math.max(row.ts, now) : row.ts;
      spans.push({ row, start: row.ts, end, cls: "ja-bar" });
    } else if (row.kind === "model" && row.duration_ms !== null) {
      spans.push({ row, start: row.ts - row.duration_ms / 1000, end: row.ts, cls: "ja-mbar" });
    }
  }
  spans.reverse();
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const s of spans) {
    t0 = Math.min(t0, s.start);
    t1 = Math.max(t1, s.end);
  }
  return { spans, t0, t1 };
}

const schedule = (fn) =>
  typeof requestAnimationFrame === "function" ? requestAnimationFrame(fn) : setTimeout(fn, 16);

export class SessionView {
  constructor(el, source, { pageSize = PAGE } = {}) {
    this.host = el;
    this.source = source;
    this.pageSize = pageSize;
    this.events = new Map(); // seq -> compact event, for whatever range is loaded
    this.top = 0; // every event from the oldest loaded up to this seq is held
    this.based = false; // whether the loaded range has a known start (a page, not only deltas)
    this.maxFolded = 0;
    this.hasMore = false;
    this.loadingOlder = false;
    this.catchingUp = false;
    this.fold = newFold();
    this.rowEls = new Map(); // row -> element
    this.selected = null; // the selected row
    this.details = new Map(); // row seq -> fetched whole events
    this.localError = "";
    this.clockOffset = 0; // kernel time - browser time, in seconds
    this.pendingRender = false;
    this.arriving = []; // events received since the last frame
    // the timeline keeps its newest row in view until the reader scrolls up (and again once
    // they scroll back down); kept, not read from the layout when events come: a hidden tab's
    // timeline has no layout, and it is shown again scrolled to its top
    this.following = true;
    this.shownHeight = 0; // the timeline's height when last laid out (0: hidden)
    this.build();
    this.unsubscribe = source.subscribe((m) => this.onSource(m));
    const first = source.state().initial_page;
    if (first && Array.isArray(first.events) && first.events.length) {
      this.reset(first.events, Boolean(first.has_more));
    }
    this.renderState();
    this.scrollToEnd();
    this.catchUp();
    this.timer = setInterval(() => this.tick(), 1000);
  }

  destroy() {
    clearInterval(this.timer);
    this.resized.disconnect();
    this.unsubscribe();
    this.root.remove();
  }

  // -- building -----------------------------------------------------------------------------

  build() {
    const stat = (field, label) =>
      h("span", { class: "ja-stat" }, h("span", { class: "ja-stat-label", text: label }), h("span", { "data-field": field, text: "0" }));
    this.root = h("div", { class: "ja-session", "data-session-id": "", "data-status": "" });
    this.nameEl = h("span", { class: "ja-name" });
    this.statusEl = h("span", { class: "ja-status" });
    this.budgetsEl = h("div", { class: "ja-budgets" });
    this.header = h(
      "div", { class: "ja-header" },
      h("div", { class: "ja-title" }, this.nameEl, this.statusEl,
        h("span", { class: "ja-meta", "data-field": "model" }), h("span", { class: "ja-meta", "data-field": "owner" })),
      h("div", { class: "ja-stats" }, stat("steps", "steps"), stat("tool_calls", "tool calls"), stat("tokens", "tokens"),
        stat("cost", "cost"), stat("elapsed", "elapsed")),
      this.budgetsEl,
    );
    this.tellInput = h("input", { class: "ja-tell-input", type: "text", placeholder: "Tell the agent…" });
    this.tellInput.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !this.buttons.tell.disabled) this.tell();
    });
    const button = (cls, text, title, fn) => h("button", { class: `ja-button ${cls}`, type: "button", title, text, onclick: fn });
    this.buttons = {
      pause: button("ja-pause", "Pause", "Pause at the next step boundary", () => this.control("pause")),
      resume: button("ja-resume", "Resume", "Run the session again", () => this.control("resume")),
      stop: button("ja-stop", "Stop", "Stop the session (a restore can still take it back)", () => this.control("stop")),
      tell: button("ja-tell", "Tell", "Send the agent a message", () => this.tell()),
    };
    this.controls = h(
      "div", { class: "ja-controls" },
      this.buttons.pause,
      this.buttons.resume,
      this.buttons.stop,
      h("span", { class: "ja-tell-group" }, this.tellInput, this.buttons.tell),
      h("span", { class: "ja-branch-group" },
        button("ja-fork", "Fork here", "New session branching after the selected row", () => this.branch("fork")),
        (this.restoreButton = button("ja-restore", "Restore here", "Rewind this session to the selected row", () => this.branch("restore")))),
    );
    this.errorEl = h("div", { class: "ja-error", role: "alert" });
    this.noticeEl = h("div", { class: "ja-notice" });
    this.approvalsEl = h("div", { class: "ja-approvals" });
    this.ganttEl = h("div", { class: "ja-gantt" });
    this.moreEl = button("ja-more", "Load earlier events", "Fetch the previous page", () => this.loadOlder());
    this.timelineEl = h("div", { class: "ja-timeline" }, this.moreEl);
    this.timelineEl.addEventListener("scroll", () => {
      if (!this.shownHeight || !this.timelineEl.clientHeight) return; // hidden, or being shown
      this.following = this.atEnd();
      if (this.timelineEl.scrollTop < 40) this.loadOlder();
    });
    this.resized = new ResizeObserver(() => {
      this.shownHeight = this.timelineEl.clientHeight;
      if (this.shownHeight && this.following) this.scrollToEnd(); // (shown again)
    });
    this.resized.observe(this.timelineEl);
    this.planEl = h("ol", { class: "ja-plan" });
    this.liveEl = h("div", { class: "ja-live" });
    this.root.append(
      this.header, this.controls, this.errorEl, this.noticeEl, this.approvalsEl, this.ganttEl,
      h("div", { class: "ja-body" }, this.timelineEl, h("div", { class: "ja-side" }, this.planEl)),
      this.liveEl,
    );
    this.host.append(this.root);
  }

  // -- data ---------------------------------------------------------------------------------

  onSource(m) {
    if (m.type === "event") this.onEvent(m.event);
    else if (!this.pendingRender) {
      this.pendingRender = true;
      schedule(() => {
        this.pendingRender = false;
        this.renderState();
      });
    }
  }

  // Events arrive one message each (hundreds a second from a quick agent): they are taken
  // once a frame, so the timeline's layout is read and its end scrolled to once, not per event.
  onEvent(e) {
    if (this.events.has(e.seq)) return;
    this.arriving.push(e);
    if (this.arriving.length > 1) return;
    schedule(() => {
      const list = this.arriving;
      this.arriving = [];
      this.ingest(list);
      if (this.following) this.scrollToEnd();
      if (list.some((e) => e.seq > this.top)) this.catchUp(); // a gap: ask for what is missing
    });
  }

  newest() {
    let max = 0;
    for (const seq of this.events.keys()) if (seq > max) max = seq;
    return max;
  }

  ingest(list) {
    const fresh = list.filter((e) => !this.events.has(e.seq)).sort((a, b) => a.seq - b.seq);
    if (!fresh.length) return;
    for (const e of fresh) this.events.set(e.seq, e);
    if (this.based) while (this.events.has(this.top + 1)) this.top += 1;
    if (fresh[0].seq > this.maxFolded) {
      for (const e of fresh) this.foldOne(e);
    } else {
      this.refold();
    }
    this.scheduleGantt();
  }

  minSeq() {
    let min = Infinity;
    for (const seq of this.events.keys()) if (seq < min) min = seq;
    return min === Infinity ? 0 : min;
  }

  // Start again from a page: the newest events, when the view was too far behind.
  reset(list, hasMore) {
    this.events.clear();
    for (const el of this.rowEls.values()) el.remove();
    this.rowEls.clear();
    this.selected = null;
    this.fold = newFold();
    this.maxFolded = 0;
    this.hasMore = hasMore;
    this.based = true;
    this.top = list.length ? list.reduce((min, e) => Math.min(min, e.seq), Infinity) - 1 : 0;
    this.ingest(list);
    this.renderMore();
  }

  foldOne(e) {
    const { added, changed } = foldEvent(this.fold, e);
    this.maxFolded = Math.max(this.maxFolded, e.seq);
    if (added) this.timelineEl.append(this.rowElement(added));
    for (const row of changed) this.updateRow(row);
  }

  refold() {
    const keep = this.selected ? this.selected.seq : null;
    this.fold = foldEvents(this.events.values());
    this.maxFolded = this.newest();
    for (const el of this.rowEls.values()) el.remove();
    this.rowEls.clear();
    this.selected = null;
    const frag = document.createDocumentFragment();
    for (const row of this.fold.rows) {
      frag.append(this.rowElement(row));
      if (row.seq === keep) this.select(row);
    }
    this.timelineEl.append(frag);
    this.renderMore();
  }

  async catchUp() {
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return;
    }
    this.catchingUp = true;
    this.catchUpAgain = false;
    const before = this.top;
    const answer = await this.source.request({ type: "hello", last_seq: this.top });
    this.catchingUp = false;
    if (!answer || answer.ok === false) return;
    if (answer.mode === "reset") {
      this.reset(answer.events || [], Boolean(answer.has_more));
    } else {
      if (!this.based) {
        this.based = true;
        this.top = answer.after || 0;
      }
      this.ingest(answer.events || []);
    }
    if (this.following) this.scrollToEnd();
    const gap = this.newest() > this.top;
    if ((gap && this.top > before) || this.catchUpAgain) this.catchUp();
  }

  async loadOlder() {
    if (!this.hasMore || this.loadingOlder) return;
    this.loadingOlder = true;
    this.renderMore();
    const answer = await this.source.request({ type: "page", before: this.minSeq(), limit: this.pageSize });
    this.loadingOlder = false;
    if (!answer || answer.ok === false) {
      this.renderMore();
      return;
    }
    this.hasMore = Boolean(answer.has_more);
    const tl = this.timelineEl;
    const height = tl.scrollHeight;
    const top = tl.scrollTop;
    this.ingest(answer.events || []);
    this.renderMore();
    tl.scrollTop = top + (tl.scrollHeight - height); // keep the rows in view where they were
  }

  // -- controls -----------------------------------------------------------------------------

  async control(action, args = {}, button = null) {
    const btn = button || this.root.querySelector(`.ja-${action}`);
    if (btn) btn.classList.add("ja-busy");
    const before = (this.source.state().header || {}).status;
    const answer = await this.source.request({ type: "control", action, ...args });
    if (btn) btn.classList.remove("ja-busy");
    this.localError = answer.ok ? "" : String(answer.error || "failed");
    // a fork's notice names the new session: it stays; "… sent" goes when the status moves,
    // and is not shown at all if it moved while the answer was on its way (it was acted on)
    this.noticeSticks = action === "fork";
    const moved = (this.source.state().header || {}).status !== before;
    this.localNotice = answer.ok && (this.noticeSticks || !moved) ? String(answer.notice || "") : "";
    if (answer.ok) this.hiddenError = this.source.state().error; // an older failure is over
    this.renderMessages();
    return Boolean(answer.ok);
  }

  async tell() {
    const text = this.tellInput.value.trim();
    if (!text) {
      this.showLocalError("type a message for the agent first");
      return;
    }
    if (await this.control("tell", { text })) this.tellInput.value = "";
  }

  branch(action) {
    if (!this.selected) {
      this.showLocalError(`select a row in the timeline first, then ${action} there`);
      return;
    }
    const seq = this.selected.end_seq;
    if (action === "restore" && this.confirming !== seq) {
      // it rewinds the session and puts files back: asked once more, on the same button
      this.unconfirm();
      this.confirming = seq;
      this.restoreButton.textContent = `Confirm restore to #${seq}`;
      this.restoreButton.classList.add("ja-confirming");
      this.localError = "";
      this.localNotice = `a restore rewinds this session to event ${seq} and puts back the files it has changed since: click again to confirm`;
      this.renderMessages();
      this.confirmTimer = setTimeout(() => this.unconfirm(true), CONFIRM_MS);
      return;
    }
    this.unconfirm();
    this.control(action, { seq });
  }

  unconfirm(expired = false) {
    if (this.confirming === null || this.confirming === undefined) return;
    clearTimeout(this.confirmTimer);
    this.confirming = null;
    this.restoreButton.textContent = "Restore here";
    this.restoreButton.classList.remove("ja-confirming");
    if (expired || String(this.localNotice || "").startsWith("a restore rewinds")) {
      this.localNotice = "";
      this.renderMessages();
    }
  }

  showLocalError(text) {
    this.localError = text;
    this.localNotice = "";
    this.renderMessages();
  }

  // -- rendering ----------------------------------------------------------------------------

  renderState() {
    const st = this.source.state();
    const hd = st.header || {};
    this.root.setAttribute("data-session-id", st.session_id || "");
    this.root.setAttribute("data-status", hd.status || "");
    if (hd.status !== this.lastStatus) {
      if (this.lastStatus !== undefined && !this.noticeSticks) this.localNotice = "";
      this.lastStatus = hd.status;
    }
    this.nameEl.textContent = hd.name || "agent";
    this.statusEl.textContent = hd.status || "";
    this.statusEl.className = `ja-status ja-status-${hd.status || "unknown"}`;
    const off = CONTROLS_OFF[hd.status] || [];
    for (const [name, el] of Object.entries(this.buttons)) el.disabled = off.includes(name);
    this.setField("model", hd.model || "");
    this.setField("owner", hd.owner ? `by ${hd.owner}` : "");
    this.setField("steps", String(hd.steps ?? 0));
    this.setField("tool_calls", String(hd.tool_calls ?? 0));
    this.setField("tokens", String(hd.tokens ?? 0));
    this.setField("cost", fmtCost(hd.cost_usd));
    const tokensEl = this.root.querySelector('[data-field="tokens"]');
    tokensEl.title = `in ${hd.input_tokens ?? 0} (cached ${hd.cached_tokens ?? 0}), out ${hd.output_tokens ?? 0}`;
    if (hd !== this.lastHeader && hd.started_at !== undefined && hd.elapsed_s !== undefined &&
        COUNTING.has(hd.status)) {
      this.lastHeader = hd; // the kernel's clock, as of when this header came (its elapsed counts)
      this.clockOffset = hd.started_at + hd.elapsed_s - Date.now() / 1000;
    }
    this.renderElapsed();
    this.renderBudgets(hd.budgets || []);
    this.renderPlan(st.plan || []);
    this.renderApprovals(st.approvals || []);
    this.renderLive(st.live || {});
    if (st.error !== this.lastError) {
      this.lastError = st.error;
      this.localError = "";
    }
    this.renderMessages();
    this.scheduleGantt();
  }

  setField(name, value) {
    const el = this.root.querySelector(`[data-field="${name}"]`);
    if (el && el.textContent !== value) el.textContent = value;
  }

  kernelNow() {
    return Date.now() / 1000 + this.clockOffset;
  }

  renderElapsed() {
    const hd = this.source.state().header || {};
    if (hd.started_at === undefined) return;
    // the clock runs while the session does (or waits for a person), not while it rests
    const end = COUNTING.has(hd.status) ? this.kernelNow() : hd.updated_at;
    this.setField("elapsed", fmtElapsed(end - hd.started_at));
  }

  renderBudgets(budgets) {
    this.budgetsEl.replaceChildren(
      ...budgets.filter((b) => b.limit).map((b) => {
        const frac = Math.min(1, b.used / b.limit);
        return h(
          "div", { class: "ja-budget", "data-budget": b.kind, title: `${b.kind}: ${b.used} of ${b.limit}` },
          h("span", { class: "ja-budget-label", text: `${b.kind} ${b.used}/${b.limit}` }),
          h("span", { class: "ja-meter" }, h("span", {
            class: `ja-meter-fill${frac >= 0.9 ? " ja-meter-high" : ""}`, style: `width: ${(frac * 100).toFixed(1)}%`,
          })),
        );
      }),
    );
    this.budgetsEl.hidden = budgets.length === 0;
  }

  renderPlan(plan) {
    const marks = { done: "✓", active: "▸", pending: "○" };
    this.planEl.replaceChildren(
      ...plan.map((i) => h("li", { "data-status": i.status, class: `ja-plan-${i.status}` },
        h("span", { class: "ja-plan-mark", text: marks[i.status] || "○" }), h("span", { text: i.step }))),
    );
    this.planEl.hidden = plan.length === 0;
    this.planEl.parentElement.hidden = plan.length === 0;
  }

  renderApprovals(approvals) {
    this.approvalsEl.replaceChildren(
      ...approvals.map((a) => {
        const approve = h("button", { class: "ja-button ja-approve", type: "button", text: "Approve" });
        const deny = h("button", { class: "ja-button ja-deny", type: "button", text: "Deny" });
        approve.addEventListener("click", () => this.control("approve", { call_id: a.call_id }, approve));
        deny.addEventListener("click", () => this.control("deny", { call_id: a.call_id }, deny));
        const why = a.reason === "in_doubt" ? "the process stopped while it ran: run it again?" : a.reason;
        return h("div", { class: "ja-approval", "data-call-id": a.call_id },
          h("span", { class: "ja-approval-text" },
            h("b", { text: a.name }), ` ${short(a.arguments, 120)} `, h("span", { class: "ja-muted", text: `(${why})` })),
          approve, deny);
      }),
    );
    this.approvalsEl.hidden = approvals.length === 0;
  }

  renderLive(live) {
    const text = live && live.text ? live.text : "";
    this.liveEl.hidden = !text;
    if (text) this.liveEl.textContent = text;
    this.liveEl.title = text ? `step ${live.step}, streaming` : "";
  }

  renderMessages() {
    const st = this.source.state();
    const error = this.localError || (st.error !== this.hiddenError ? st.error : "") || "";
    this.errorEl.textContent = error;
    this.errorEl.title = error; // whole, where the line is cut short
    this.errorEl.hidden = !error;
    const notice = error ? "" : this.localNotice || st.notice || "";
    this.noticeEl.textContent = notice;
    this.noticeEl.hidden = !notice;
  }

  renderMore() {
    this.moreEl.hidden = !this.hasMore;
    this.moreEl.textContent = this.loadingOlder ? "Loading…" : "Load earlier events";
    this.timelineEl.prepend(this.moreEl);
  }

  rowElement(row) {
    const el = h("div", { class: "ja-row" });
    el.append(h("div", { class: "ja-row-line", onclick: () => this.toggle(row) }));
    this.rowEls.set(row, el);
    this.updateRow(row);
    return el;
  }

  updateRow(row) {
    const el = this.rowEls.get(row);
    if (!el) return;
    el.setAttribute("data-seq", String(row.seq));
    el.setAttribute("data-kind", row.kind);
    el.setAttribute("data-status", row.status);
    el.classList.toggle("ja-selected", this.selected === row);
    el.classList.toggle("ja-abandoned", row.abandoned_by !== undefined);
    el.title = row.abandoned_by !== undefined ? `left by the restore at event ${row.abandoned_by}` : "";
    const line = el.firstChild;
    line.replaceChildren(
      h("span", { class: "ja-row-seq", text: String(row.seq) }),
      h("span", { class: "ja-row-time", text: fmtClock(row.ts) }),
      h("span", { class: `ja-row-mark ja-mark-${row.status}`, text: MARK[row.status] || "·" }),
      h("span", { class: "ja-row-kind", text: row.kind }),
      h("span", { class: "ja-row-label", text: row.label }),
      h("span", { class: "ja-row-text", text: row.detail, title: row.detail }),
      h("span", { class: "ja-row-dur", text: fmtDuration(row.duration_ms) }),
    );
    if (this.selected === row) this.renderDetail(row);
  }

  toggle(row) {
    if (this.selected === row) {
      this.select(null);
    } else {
      this.select(row);
    }
  }

  select(row) {
    const before = this.selected;
    this.selected = row;
    if (row !== before) this.unconfirm(); // a restore to be confirmed was to the row before
    if (before) {
      const el = this.rowEls.get(before);
      if (el) {
        el.classList.remove("ja-selected");
        const d = el.querySelector(".ja-row-detail");
        if (d) d.remove();
      }
    }
    if (row) {
      const el = this.rowEls.get(row);
      if (el) el.classList.add("ja-selected");
      this.renderDetail(row);
    }
    for (const bar of this.ganttEl.querySelectorAll(".ja-bar")) {
      bar.classList.toggle("ja-selected", Boolean(row) && bar.getAttribute("data-seq") === String(row.seq));
    }
  }

  async renderDetail(row) {
    const el = this.rowEls.get(row);
    if (!el) return;
    let detail = el.querySelector(".ja-row-detail");
    if (!detail) {
      detail = h("div", { class: "ja-row-detail" });
      el.append(detail);
    }
    const seqs = [row.seq, row.result_seq].filter((s) => s !== undefined && s !== null);
    const key = seqs.join(",");
    const known = this.details.get(key);
    if (known) {
      detail.replaceChildren(...known.map((e) => this.detailBlock(e)));
      return;
    }
    detail.textContent = "Loading…";
    const answer = await this.source.request({ type: "detail", seqs });
    if (!answer || answer.ok === false) {
      detail.textContent = answer && answer.error ? answer.error : "could not load this event";
      return;
    }
    const events = answer.events || [];
    if (row.status !== "running") this.details.set(key, events);
    if (this.selected === row) detail.replaceChildren(...events.map((e) => this.detailBlock(e)));
  }

  detailBlock(e) {
    const p = e.p || {};
    const blocks = [];
    const add = (label, text) => {
      if (text !== undefined && text !== null && text !== "") blocks.push(h("div", { class: "ja-detail-label", text: label }), h("pre", { text: String(text) }));
    };
    const pretty = (raw) => {
      try {
        return JSON.stringify(typeof raw === "string" ? JSON.parse(raw) : raw, null, 2);
      } catch (_) {
        return String(raw);
      }
    };
    if (e.kind === "tool_call") add("arguments", pretty(p.arguments));
    else if (e.kind === "tool_result") {
      if ("arguments" in p) add("arguments", pretty(p.arguments)); // (its own intent)
      add(p.is_error ? "output (error)" : "output", p.output);
      add("error", p.error);
      if (p.output_blob) add("whole output", `blob ${p.output_blob} in the store`);
    } else if (e.kind === "model_response") {
      add("text", p.text);
      if ((p.tool_calls || []).length) add("tool calls", (p.tool_calls || []).map((c) => `${c.name} ${pretty(c.arguments)}`).join("\n"));
      add("usage", JSON.stringify(p.usage || {}));
    } else if (e.kind === "message") add("text", p.text);
    else if (e.kind === "error") {
      add("message", `${p.code}: ${p.message}`);
      add("traceback", p.traceback);
    } else add("payload", JSON.stringify(p, null, 2));
    const head = `#${e.seq} ${e.kind} · ${e.actor} · ${fmtDate(e.ts)}${e.clipped ? " · (cut)" : ""}`;
    return h("div", { class: "ja-detail-event" }, h("div", { class: "ja-detail-head", text: head }), ...blocks);
  }

  scheduleGantt() {
    if (this.ganttPending) return;
    this.ganttPending = true;
    schedule(() => {
      this.ganttPending = false;
      this.renderGantt();
    });
  }

  renderGantt() {
    const live = COUNTING.has((this.source.state().header || {}).status);
    const { spans, t0, t1 } = ganttSpans(this.fold.rows, this.kernelNow(), { live });
    this.ganttEl.hidden = spans.length === 0;
    if (!spans.length) {
      this.ganttEl.replaceChildren();
      return;
    }
    const width = Math.max(t1 - t0, 0.001);
    const models = h("div", { class: "ja-gantt-lane ja-gantt-models", title: "model turns" });
    const tools = h("div", { class: "ja-gantt-lane ja-gantt-tools", title: "tool calls" });
    for (const s of spans) {
      const left = ((s.start - t0) / width) * 100;
      const pct = Math.max(((s.end - s.start) / width) * 100, 0.3);
      const bar = h("div", {
        class: `${s.cls}${this.selected === s.row ? " ja-selected" : ""}`,
        "data-seq": String(s.row.seq),
        "data-status": s.row.status,
        style: `left: ${left.toFixed(3)}%; width: ${Math.min(pct, 100 - left).toFixed(3)}%`,
        title: `${s.row.label} · ${fmtDuration((s.end - s.start) * 1000) || "running"}`,
      });
      bar.addEventListener("click", () => {
        this.select(s.row);
        const el = this.rowEls.get(s.row);
        if (el && el.scrollIntoView) el.scrollIntoView({ block: "nearest" });
      });
      (s.cls === "ja-bar" ? tools : models).append(bar);
    }
    const axis = h("div", { class: "ja-gantt-axis" },
      h("span", { text: fmtClock(t0) }), h("span", { text: fmtElapsed(t1 - t0) }), h("span", { text: fmtClock(t1) }));
    this.ganttEl.replaceChildren(models, tools, axis);
  }

  tick() {
    this.renderElapsed();
    if (this.fold.rows.some((r) => r.kind === "tool" && r.status === "running")) this.scheduleGantt();
  }

  atEnd() {
    const tl = this.timelineEl;
    return tl.scrollTop + tl.clientHeight >= tl.scrollHeight - 24;
  }

  scrollToEnd() {
    const go = () => {
      this.timelineEl.scrollTop = this.timelineEl.scrollHeight;
    };
    go();
    schedule(go); // once it is in the page and has a size
  }
}

// ---- anywidget ----------------------------------------------------------------------------

function render({ model, el }) {
  const source = modelSource(model);
  const view = new SessionView(el, source);
  return () => {
    view.destroy();
    source.close();
  };
}

export default { render };
