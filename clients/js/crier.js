// crier JavaScript client: live events over Server-Sent Events or WebSocket that resume by
// themselves after any disconnect, plus publish and history. One file, no dependencies;
// works in browsers and in Node 20+ (WebSocket needs Node 22, `--experimental-websocket`
// on Node 20, or a `WebSocket` option such as the `ws` package).

const DEFAULT_BACKOFF = Object.freeze({ initial: 1000, max: 30000, factor: 2, jitter: 0.2 });
const LIST_KEYS = ["type", "category", "source", "subject"];

/** An error answered by the hub (`status`, `code`) or raised by the client. */
export class CrierError extends Error {
  constructor(message, { status = 0, code = "client_error", retryAfter } = {}) {
    super(message);
    this.name = "CrierError";
    this.status = status;
    this.code = code;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

function baseUrl(url) {
  if (!url) throw new CrierError("`url` is required (e.g. http://127.0.0.1:7400)", { code: "invalid_option" });
  return String(url).replace(/\/+$/, "");
}

async function resolveToken(token) {
  const t = typeof token === "function" ? await token() : token;
  return t ? String(t) : undefined;
}

function fetchOf(opts) {
  const f = opts.fetch ?? globalThis.fetch;
  if (!f) throw new CrierError("no fetch implementation; pass `fetch`", { code: "invalid_option" });
  return f;
}

/** Appends a §2 filter to URL search params (comma-separated lists; `tag` for tags). */
function addFilter(params, filter = {}) {
  for (const [k, v] of Object.entries(filter)) {
    if (v === undefined || v === null) continue;
    if (LIST_KEYS.includes(k) || k === "tags" || k === "tag") {
      const list = Array.isArray(v) ? v : [v];
      if (list.length) params.set(k === "tags" ? "tag" : k, list.join(","));
    } else if (k === "severity") {
      params.set("severity", String(v));
    } else {
      throw new CrierError(`unknown filter key \`${k}\``, { code: "invalid_filter" });
    }
  }
}

/** The §2 filter in its JSON form (`tags`, lists), for WebSocket subscriptions. */
function jsonFilter(filter = {}) {
  const out = {};
  for (const [k, v] of Object.entries(filter)) {
    if (v === undefined || v === null) continue;
    const key = k === "tag" ? "tags" : k;
    out[key] = key === "severity" ? String(v) : Array.isArray(v) ? v : [v];
  }
  return out;
}

async function errorOf(res) {
  let code = "http_" + res.status;
  let message = `${res.status} ${res.statusText || "error"}`;
  try {
    const body = await res.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // not JSON
  }
  const ra = Number(res.headers.get("retry-after"));
  return new CrierError(message, { status: res.status, code, retryAfter: Number.isFinite(ra) && ra > 0 ? ra : undefined });
}

async function request(opts, method, path, { body, headers = {} } = {}) {
  const token = await resolveToken(opts.token);
  const h = { accept: "application/json", ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (body !== undefined) h["content-type"] = "application/json";
  const res = await fetchOf(opts)(baseUrl(opts.url) + path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await errorOf(res);
  return res.status === 204 ? null : res.json();
}

/**
 * Publishes one event or an array of events; resolves with the hub's answer
 * (`{events: [{id, seq, duplicate}]}`) once they are durable.
 */
export function publish(opts, events) {
  return request(opts, "POST", "/v1/events", { body: events });
}

/** Reads history: `{events, next_after, head}` (with `next_before` for `order: "desc"`). */
export async function history(opts, query = {}) {
  const params = new URLSearchParams();
  const { filter, ...rest } = query;
  addFilter(params, filter);
  for (const k of ["after", "before", "since", "until", "limit", "order", "tenant"]) {
    if (rest[k] !== undefined && rest[k] !== null) params.set(k, String(rest[k]));
  }
  const qs = params.toString();
  return request(opts, "GET", "/v1/events" + (qs ? "?" + qs : ""));
}

/** A client bound to `{url, token, fetch, WebSocket}`. */
export function createClient(opts) {
  baseUrl(opts?.url);
  return {
    publish: (events) => publish(opts, events),
    history: (query) => history(opts, query),
    connect: (more = {}) => connect({ ...opts, ...more }),
    request: (method, path, body) => request(opts, method, path, { body }),
  };
}

/** Opens a live subscription that reconnects and resumes by itself. */
export function connect(opts) {
  return new Subscription(opts);
}

/** The delay before reconnect attempt `attempt` (1-based): exponential, capped, jittered. */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const b = { ...DEFAULT_BACKOFF, ...backoff };
  const raw = Math.min(b.max, b.initial * b.factor ** Math.max(0, attempt - 1));
  const jittered = raw * (1 + b.jitter * (2 * random() - 1));
  return Math.max(0, Math.min(b.max, Math.round(jittered)));
}

/** Incremental parser of a text/event-stream (WHATWG HTML, server-sent events). */
class SseParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buf = "";
    this.reset();
  }
  reset() {
    this.data = [];
    this.event = "";
    this.id = undefined;
  }
  push(text) {
    this.buf += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) return;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (m[0] === "\r" && m.index === this.buf.length - 1) return;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
    }
  }
  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onMessage({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // comment (ping, head)
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
    // `retry` is the server's hint for EventSource; this client keeps its own backoff.
  }
}

/**
 * Reads a `text/event-stream` response body to its end, calling `onMessage({event, data, id})`
 * for each message (for streams the subscription does not cover, such as a replay's).
 */
export async function readSse(response, onMessage) {
  const parser = new SseParser(onMessage);
  const decoder = new TextDecoder();
  const reader = response.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.push(decoder.decode(value, { stream: true }));
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/**
 * A live subscription: an async iterator and an event emitter of events, in seq order, each
 * once, across reconnects. Events arriving faster than the iterator consumes them are
 * buffered (use the "event" listener to handle them as they come instead).
 */
export class Subscription {
  constructor(opts = {}) {
    this.url = baseUrl(opts.url);
    this.opts = opts;
    this.transport = opts.transport ?? "sse";
    if (this.transport !== "sse" && this.transport !== "ws") {
      throw new CrierError('`transport` is "sse" or "ws"', { code: "invalid_option" });
    }
    this.backoff = { ...DEFAULT_BACKOFF, ...(opts.backoff ?? {}) };
    this.maxRetries = opts.maxRetries ?? Infinity;
    this.idleTimeout = opts.idleTimeout ?? 45000;
    this.lastSeq = opts.after ?? undefined;
    this.status = "connecting";
    this.error = undefined;
    this.listeners = new Map();
    this.queue = [];
    this.waiters = [];
    this.abort = new AbortController();
    this.filter = opts.filter ?? {};
    if (this.transport === "sse") {
      const p = new URLSearchParams();
      addFilter(p, this.filter); // validates the filter keys now
    }
    queueMicrotask(() => this.run());
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return this;
  }

  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
    return this;
  }

  emit(type, value) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(value);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  setStatus(state, extra = {}) {
    this.status = state;
    this.emit("status", { state, ...extra });
  }

  /** Stops the subscription; the iterator ends. */
  close() {
    if (this.status === "closed") return;
    this.abort.abort();
    this.finish(undefined);
  }

  finish(error) {
    if (this.status === "closed") return;
    this.error = error;
    this.setStatus("closed", error ? { error } : {});
    if (error) this.emit("error", error);
    for (const w of this.waiters.splice(0)) {
      if (error) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  deliver(event) {
    if (this.status === "closed" || typeof event?.seq !== "number") return;
    if (this.lastSeq !== undefined && event.seq <= this.lastSeq) return; // never twice
    this.lastSeq = event.seq;
    this.emit("event", event);
    const w = this.waiters.shift();
    if (w) w.resolve({ value: event, done: false });
    else this.queue.push(event);
  }

  /** A `crier.reset`: the hub moved the cursor (retention, or a replaced log). */
  resetTo(info) {
    if (info?.reason === "retention" && typeof info.oldest === "number") this.lastSeq = info.oldest - 1;
    else if (info?.reason === "unknown_cursor" && typeof info.head === "number") this.lastSeq = info.head;
    this.emit("reset", info);
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.queue.length) return Promise.resolve({ value: this.queue.shift(), done: false });
        if (this.status === "closed") {
          return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  async run() {
    let failures = 0;
    let refreshedAfter401 = false;
    while (this.status !== "closed") {
      this.setStatus("connecting", { attempt: failures });
      let opened = false;
      let retryAfterMs;
      try {
        opened = await (this.transport === "ws" ? this.runWs() : this.runSse());
        refreshedAfter401 = false;
      } catch (e) {
        if (this.status === "closed") return;
        const err = e instanceof CrierError ? e : new CrierError(String(e?.message ?? e), { code: "network_error" });
        if (err.status === 401 && typeof this.opts.token === "function" && !refreshedAfter401) {
          // The token may just have expired: one more try with a fresh one.
          refreshedAfter401 = true;
        } else if ([400, 401, 403, 404].includes(err.status)) {
          return this.finish(err);
        }
        opened = err.opened === true;
        if (err.retryAfter) retryAfterMs = err.retryAfter * 1000;
      }
      if (this.status === "closed") return;
      failures = opened ? 1 : failures + 1;
      if (failures > this.maxRetries) {
        return this.finish(new CrierError(`gave up after ${this.maxRetries} retries`, { code: "retries_exhausted" }));
      }
      const delay = retryAfterMs ?? backoffDelay(failures, this.backoff);
      this.setStatus("reconnecting", { attempt: failures, retryInMs: delay });
      await sleep(delay, this.abort.signal);
    }
  }

  /** One SSE connection; resolves when it ends (true if it had opened), throws on refusal. */
  async runSse() {
    const params = new URLSearchParams();
    addFilter(params, this.filter);
    const headers = { accept: "text/event-stream" };
    if (this.lastSeq !== undefined) headers["last-event-id"] = String(this.lastSeq);
    else if (this.opts.last !== undefined) params.set("last", String(this.opts.last));
    const token = await resolveToken(this.opts.token);
    if (token) headers.authorization = `Bearer ${token}`;
    const ctl = new AbortController();
    const onAbort = () => ctl.abort();
    this.abort.signal.addEventListener("abort", onAbort, { once: true });
    let idle;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctl.abort(), this.idleTimeout);
    };
    let opened = false;
    try {
      touch();
      const qs = params.toString();
      const res = await fetchOf(this.opts)(`${this.url}/v1/stream${qs ? "?" + qs : ""}`, {
        headers,
        signal: ctl.signal,
        cache: "no-store",
      });
      if (!res.ok) throw await errorOf(res);
      opened = true;
      this.setStatus("open");
      const parser = new SseParser((m) => {
        if (m.event === "crier.reset") {
          try {
            this.resetTo(JSON.parse(m.data));
          } catch {
            this.emit("reset", { reason: "unknown" });
          }
          return;
        }
        let ev;
        try {
          ev = JSON.parse(m.data);
        } catch {
          return;
        }
        this.deliver(ev);
      });
      const decoder = new TextDecoder();
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        touch();
        parser.push(decoder.decode(value, { stream: true }));
      }
      return true;
    } catch (e) {
      if (e instanceof CrierError) throw e;
      if (this.status === "closed") return opened;
      const err = new CrierError(`stream interrupted: ${e?.message ?? e}`, { code: "network_error" });
      err.opened = opened;
      throw err;
    } finally {
      clearTimeout(idle);
      this.abort.signal.removeEventListener("abort", onAbort);
      ctl.abort();
    }
  }

  /** One WebSocket connection; resolves when it ends (true if it had opened). */
  async runWs() {
    const WS = this.opts.WebSocket ?? globalThis.WebSocket;
    if (!WS) {
      throw new CrierError(
        "no WebSocket implementation: use Node 22+, run Node 20 with --experimental-websocket, or pass `WebSocket`",
        { status: 400, code: "invalid_option" },
      );
    }
    const token = await resolveToken(this.opts.token);
    const wsUrl = new URL(this.url.replace(/^http/, "ws") + "/v1/ws");
    if (token) wsUrl.searchParams.set("token", token);
    const ws = new WS(wsUrl.toString());
    let opened = false;
    let subscribed = false;
    return new Promise((resolve, reject) => {
      let pinger;
      let lastPong = Date.now();
      let settled = false;
      const done = (err) => {
        if (settled) return;
        settled = true;
        clearInterval(pinger);
        this.abort.signal.removeEventListener("abort", onAbort);
        try {
          ws.close();
        } catch {
          // already closed
        }
        if (err) {
          err.opened = subscribed;
          reject(err);
        } else resolve(subscribed);
      };
      const onAbort = () => done();
      this.abort.signal.addEventListener("abort", onAbort, { once: true });
      ws.onopen = () => {
        opened = true;
      };
      ws.onmessage = (msg) => {
        let m;
        try {
          m = JSON.parse(typeof msg.data === "string" ? msg.data : String(msg.data));
        } catch {
          return;
        }
        lastPong = Date.now();
        switch (m.op) {
          case "welcome": {
            const sub = { op: "subscribe", id: "s", filter: jsonFilter(this.filter) };
            if (this.lastSeq !== undefined) sub.after = this.lastSeq;
            else if (this.opts.last !== undefined) sub.last = this.opts.last;
            ws.send(JSON.stringify(sub));
            const every = Math.max(1000, Number(m.heartbeat_ms) || 15000);
            pinger = setInterval(() => {
              if (Date.now() - lastPong > every * 2.5) {
                return done(new CrierError("the hub stopped answering", { code: "timeout" }));
              }
              try {
                ws.send(JSON.stringify({ op: "ping" }));
              } catch {
                // closing
              }
            }, every);
            break;
          }
          case "subscribed":
            subscribed = true;
            this.setStatus("open");
            break;
          case "event":
            if (m.sub === "s") this.deliver(m.event);
            break;
          case "reset":
            if (m.sub === "s") this.resetTo(m);
            break;
          case "error":
            if (!subscribed) {
              const status = m.code === "forbidden" ? 403 : 400;
              done(new CrierError(m.message ?? "refused", { status, code: m.code ?? "error" }));
            }
            break;
          default:
            break;
        }
      };
      ws.onerror = () => {
        // Browsers follow with onclose; some WebSocket implementations (Node 20's) do not
        // when the handshake itself failed, so that case is handled here too.
        if (!opened) ws.onclose({ code: 1006, reason: "" });
      };
      let closing = false;
      ws.onclose = async (ev) => {
        if (settled || closing) return;
        closing = true;
        if (ev.code === 4001) {
          // Credential expired or revoked: reconnect with a fresh token (the callback).
          return done(new CrierError(ev.reason || "credential expired", { status: 401, code: "credential_expired" }));
        }
        if (!opened) {
          // The upgrade was refused before opening; a browser cannot see why, so ask over HTTP.
          const why = await this.probe(token);
          if (why) return done(why);
        }
        done(new CrierError(`connection closed (${ev.code})`, { code: "network_error" }));
      };
    });
  }

  /** Why a WebSocket upgrade was refused, if the hub refuses the credential over HTTP too. */
  async probe(token) {
    try {
      const headers = token ? { authorization: `Bearer ${token}` } : {};
      const res = await fetchOf(this.opts)(`${this.url}/v1/ws`, { headers });
      if ([401, 403, 429].includes(res.status)) return await errorOf(res);
    } catch {
      // the hub is unreachable: a network error, retried
    }
    return undefined;
  }
}
