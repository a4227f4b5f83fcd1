// crier JavaScript client: live events over Server-Sent Events or WebSocket that resume by
// themselves after any disconnect, plus publish and history.
//
// The entry module: the API and the subscription. Its siblings (http.js, sse.js, ws.js)
// hold the HTTP helpers and errors, the event-stream reader and the WebSocket transport.
// ES modules with no dependencies and no Node-only imports: they run in browsers and in
// Node 20+ (global `fetch`; WebSocket is global in Node 22+, needs `--experimental-websocket`
// on Node 20, or pass a `WebSocket` constructor).
//
// Guarantees of a subscription: events arrive in seq order, each once. After a drop
// (network, hub restart, expired token) it reconnects with exponential backoff and jitter
// and resumes after the last seq it delivered, so nothing published meanwhile is lost and
// nothing is doubled (anything at or below that seq is dropped).

import { CrierError, MAX_TIMER, addFilter, baseUrl, errorOf, fetchOf, jsonFilter, networkError, nonNegativeInt, optionError, request, resolveToken } from "./http.js";
import { SseParser } from "./sse.js";
import { runWs } from "./ws.js";

export { CrierError } from "./http.js";
export { readSse } from "./sse.js";

const DEFAULT_BACKOFF = Object.freeze({ initial: 1000, max: 30000, factor: 2, jitter: 0.2 });

/**
 * Publishes one event or an array of up to 1000 (all or nothing). Resolves once they are
 * durable with the hub's answer: `{events: [{id, seq, duplicate}]}`, in input order.
 */
export function publish(opts, events) {
  if (events === null || typeof events !== "object") {
    return Promise.reject(optionError("publish takes an event object or an array of them"));
  }
  return request(opts, "POST", "/v1/events", { body: events });
}

/**
 * Reads history, ascending by seq (`order: "desc"` for newest first):
 * `{events, next_after, head}` (`next_before` with `order: "desc"`).
 */
export async function history(opts, query = {}) {
  const { filter, ...rest } = query ?? {};
  const params = new URLSearchParams();
  addFilter(params, filter);
  for (const k of ["after", "before", "since", "until", "limit", "order", "tenant"]) {
    if (rest[k] !== undefined && rest[k] !== null) params.set(k, String(rest[k]));
  }
  const qs = params.toString();
  return request(opts, "GET", "/v1/events" + (qs ? "?" + qs : ""));
}

/** A client bound to `{url, token, fetch, WebSocket}`: publish, history, connect, request. */
export function createClient(opts = {}) {
  const bound = { ...opts, url: baseUrl(opts.url) };
  return {
    url: bound.url,
    publish: (events) => publish(bound, events),
    history: (query) => history(bound, query),
    connect: (more = {}) => connect({ ...bound, ...more }),
    /** Any other path of the API; resolves with the parsed JSON, rejects with CrierError. */
    request: (method, path, body) => request(bound, method, path, { body }),
  };
}

/** Opens a live subscription that reconnects and resumes by itself. */
export function connect(opts) {
  return new Subscription(opts);
}

/**
 * The delay before reconnect attempt `attempt` (1-based): `initial * factor^(attempt-1)`,
 * capped at `max`, times a random factor in [1 - jitter, 1 + jitter], never above `max`.
 */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const b = { ...DEFAULT_BACKOFF, ...backoff };
  const raw = Math.min(b.max, b.initial * b.factor ** Math.max(0, attempt - 1));
  const jittered = raw * (1 + b.jitter * (2 * random() - 1));
  return Math.max(0, Math.min(b.max, Math.round(jittered)));
}

/** Resolves after `ms`, at once when `signal` aborts, or (in a browser) when the network returns. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    let timer;
    const online = typeof globalThis.addEventListener === "function" && globalThis.navigator?.onLine !== undefined;
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      if (online) globalThis.removeEventListener("online", done);
      resolve();
    };
    timer = setTimeout(done, Math.min(ms, MAX_TIMER));
    signal.addEventListener("abort", done);
    if (online) globalThis.addEventListener("online", done);
  });
}

/** Whether a refusal is final: a 4xx other than 408, 425 and 429 (or an explicit flag). */
function isFatal(err) {
  if (err.fatal) return true;
  return err.status >= 400 && err.status < 500 && ![408, 425, 429].includes(err.status);
}

function report(e) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(e);
  else setTimeout(() => {
    throw e;
  });
}

const EVENT_TYPES = ["event", "status", "reset", "error"];

/** A FIFO with O(1) push and shift. */
class Queue {
  #items = [];
  #head = 0;
  get length() {
    return this.#items.length - this.#head;
  }
  push(x) {
    this.#items.push(x);
  }
  shift() {
    const x = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return x;
  }
  clear() {
    this.#items = [];
    this.#head = 0;
  }
}

/**
 * A live subscription: an async iterator and an event emitter of events, in seq order, each
 * once, across reconnects.
 *
 * Buffering: events the iterator has not taken yet wait in memory, from the start (so events
 * that arrive before the first `for await` are not missed). Over SSE, reading pauses once
 * `highWaterMark` events wait (the hub keeps the rest: a slow reader falls back to its log
 * and misses nothing) and resumes when half of them are taken; over WebSocket the buffer is
 * not bounded. "event" listeners get each event as it is read; while a subscription has
 * listeners and no iterator, only the newest `highWaterMark` events are kept for a later
 * iterator.
 */
export class Subscription {
  #opts;
  #url;
  #transport;
  #backoff;
  #maxRetries;
  #idleTimeout;
  #highWaterMark;
  #fetch;
  #WS;
  #query;
  #wsFilter;
  #tenant;
  #status = "connecting";
  #error;
  #lastSeq;
  /** The resume point: the last seq delivered, or the head when the first connection opened. */
  #cursor;
  #closed = false;
  #listeners = new Map();
  #iterating = false;
  #queue = new Queue();
  #waiters = [];
  #drained;
  #abort = new AbortController();

  constructor(opts = {}) {
    this.#opts = opts;
    this.#url = baseUrl(opts.url);
    this.#transport = opts.transport ?? "sse";
    if (this.#transport !== "sse" && this.#transport !== "ws") throw optionError('`transport` is "sse" or "ws"');
    const backoff = { ...DEFAULT_BACKOFF, ...(opts.backoff ?? {}) };
    for (const k of ["initial", "max", "factor", "jitter"]) {
      if (typeof backoff[k] !== "number" || !(backoff[k] >= 0)) throw optionError(`\`backoff.${k}\` must be a non-negative number`);
    }
    if (backoff.jitter > 1) throw optionError("`backoff.jitter` is a fraction between 0 and 1");
    this.#backoff = backoff;
    this.#maxRetries = opts.maxRetries ?? Infinity;
    if (!(this.#maxRetries >= 0)) throw optionError("`maxRetries` must be a non-negative number");
    this.#idleTimeout = opts.idleTimeout ?? 45000;
    if (typeof this.#idleTimeout !== "number" || !(this.#idleTimeout >= 0)) throw optionError("`idleTimeout` must be a number of ms (0: never)");
    this.#highWaterMark = opts.highWaterMark ?? 1000;
    if (!(this.#highWaterMark >= 1)) throw optionError("`highWaterMark` must be at least 1");
    this.#lastSeq = nonNegativeInt(opts.after, "after");
    this.#cursor = this.#lastSeq;
    nonNegativeInt(opts.last, "last");
    this.#tenant = opts.tenant;
    // Validate the filter now: a typo throws here instead of reconnecting forever.
    const params = new URLSearchParams();
    addFilter(params, opts.filter);
    this.#query = params;
    this.#wsFilter = jsonFilter(opts.filter);
    if (this.#transport === "ws") {
      this.#WS = opts.WebSocket ?? globalThis.WebSocket;
      if (typeof this.#WS !== "function") {
        throw new CrierError(
          "no WebSocket implementation: use a browser or Node 22+, run Node 20 with --experimental-websocket, or pass `WebSocket`",
          { code: "no_websocket" },
        );
      }
    } else {
      // Called through a plain function: a browser's fetch refuses any other `this`.
      const f = fetchOf(opts);
      this.#fetch = (url, init) => f(url, init);
    }
    queueMicrotask(() =>
      this.#run().catch((e) => this.#finish(new CrierError(`internal error: ${e?.message ?? e}`, { cause: e }))),
    );
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get status() {
    return this.#status;
  }

  /** The seq of the last event delivered (or of `after`, or moved by a reset): the resume point. */
  get lastSeq() {
    return this.#lastSeq;
  }

  /** The error that closed the subscription, if one did. */
  get error() {
    return this.#error;
  }

  get transport() {
    return this.#transport;
  }

  on(type, fn) {
    if (!EVENT_TYPES.includes(type)) throw optionError(`unknown event "${type}" (one of ${EVENT_TYPES.join(", ")})`);
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return this;
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
    return this;
  }

  /** Stops the subscription: the connection closes, the iterator ends, status becomes "closed". */
  close() {
    if (this.#closed) return;
    this.#queue.clear();
    this.#finish(undefined);
  }

  [Symbol.asyncIterator]() {
    this.#iterating = true;
    const it = {
      next: () => {
        if (this.#queue.length) {
          const value = this.#queue.shift();
          if (this.#drained && this.#queue.length <= this.#highWaterMark / 2) this.#release();
          return Promise.resolve({ value, done: false });
        }
        if (this.#closed) {
          return this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
        }
        this.#release();
        return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  #emit(type, value) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        report(e);
      }
    }
  }

  #setStatus(state, extra = {}) {
    this.#status = state;
    this.#emit("status", { state, ...extra });
  }

  #finish(error) {
    if (this.#closed) return;
    this.#closed = true;
    this.#error = error;
    this.#abort.abort();
    this.#release();
    this.#setStatus("closed", error ? { error } : {});
    if (error) this.#emit("error", error);
    for (const w of this.#waiters.splice(0)) {
      if (error) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  #deliver(event) {
    if (this.#closed || typeof event?.seq !== "number") return;
    if (this.#lastSeq !== undefined && event.seq <= this.#lastSeq) return; // never twice, never backwards
    this.#lastSeq = event.seq;
    this.#cursor = event.seq;
    this.#emit("event", event);
    if (this.#closed) return;
    const w = this.#waiters.shift();
    if (w) w.resolve({ value: event, done: false });
    else {
      this.#queue.push(event);
      // Listeners only, no iterator yet: keep just the newest events, so an emitter-only
      // subscription does not grow without bound.
      if (this.#listenersOnly() && this.#queue.length > this.#highWaterMark) this.#queue.shift();
    }
  }

  /** `crier.reset` (§4): the hub moved the cursor; continue from where it says. */
  #reset(info) {
    if (info?.reason === "retention" && typeof info.oldest === "number") {
      const s = Math.max(this.#lastSeq ?? -1, info.oldest - 1);
      this.#lastSeq = s < 0 ? undefined : s;
      this.#cursor = this.#lastSeq;
    } else if (info?.reason === "unknown_cursor" && typeof info.head === "number") {
      // The log was replaced: seqs start again below ours.
      this.#lastSeq = info.head;
      this.#cursor = info.head;
    }
    this.#emit("reset", info);
  }

  /** The first connection's head becomes the resume point if nothing was delivered yet. */
  #opened(head) {
    if (this.#cursor === undefined && typeof head === "number") this.#cursor = head;
  }

  #position() {
    if (this.#cursor !== undefined) return { after: this.#cursor };
    if (this.#opts.last !== undefined && this.#opts.last !== null) return { last: Number(this.#opts.last) };
    return {};
  }

  #listenersOnly() {
    return !this.#iterating && this.#listeners.get("event")?.size > 0;
  }

  #shouldPause() {
    return this.#queue.length >= this.#highWaterMark && !this.#listenersOnly() && !this.#closed;
  }

  #drain() {
    return new Promise((resolve) => (this.#drained = resolve));
  }

  #release() {
    const r = this.#drained;
    this.#drained = undefined;
    r?.();
  }

  async #run() {
    let failures = 0;
    let refreshed = false;
    while (!this.#closed) {
      this.#setStatus("connecting", { attempt: failures });
      let result;
      let token;
      try {
        token = await resolveToken(this.#opts.token);
      } catch (e) {
        result = { opened: false, error: new CrierError(`the token callback failed: ${e?.message ?? e}`, { code: "token_error", cause: e }) };
      }
      if (this.#closed) return;
      result ??= await (this.#transport === "ws" ? this.#runWs(token) : this.#runSse(token));
      if (this.#closed) return;
      const err = result.error;
      if (result.opened) {
        failures = 0;
        refreshed = false;
      }
      if (err && isFatal(err)) {
        // A 401 may be a token that just expired: one more try with a fresh one.
        if (err.status === 401 && typeof this.#opts.token === "function" && !refreshed) refreshed = true;
        else return this.#finish(err);
      }
      failures += 1;
      if (failures > this.#maxRetries) {
        const why = err ? `: ${err.message}` : "";
        return this.#finish(new CrierError(`gave up after ${failures} failed attempts${why}`, { code: "retries_exhausted", cause: err }));
      }
      let delay = backoffDelay(failures, this.#backoff);
      if (err?.retryAfter !== undefined) delay = Math.max(delay, Math.round(err.retryAfter * 1000));
      // The hub ended the stream because the credential expired: come back at once with a fresh one.
      if (result.credentialEnded) delay = 0;
      this.#setStatus("reconnecting", { attempt: failures, retryInMs: delay, ...(err ? { error: err } : {}) });
      await sleep(delay, this.#abort.signal);
    }
  }

  /** One SSE connection, to its end: `{opened, error?, credentialEnded?}`. */
  async #runSse(token) {
    const params = new URLSearchParams(this.#query);
    const pos = this.#position();
    if (pos.after !== undefined) params.set("after", String(pos.after));
    else if (pos.last !== undefined) params.set("last", String(pos.last));
    if (this.#tenant !== undefined) params.set("tenant", String(this.#tenant));
    const headers = { accept: "text/event-stream" };
    if (token) headers.authorization = `Bearer ${token}`;
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    this.#abort.signal.addEventListener("abort", stop);
    let idle;
    let timedOut = false;
    const touch = () => {
      clearTimeout(idle);
      if (this.#idleTimeout > 0 && this.#idleTimeout <= MAX_TIMER) {
        idle = setTimeout(() => {
          timedOut = true;
          ctl.abort();
        }, this.#idleTimeout);
      }
    };
    let opened = false;
    let credentialEnded = false;
    try {
      touch();
      const qs = params.toString();
      const res = await this.#fetch(`${this.#url}/v1/stream${qs ? "?" + qs : ""}`, { headers, signal: ctl.signal, cache: "no-store" });
      if (!res.ok) return { opened, error: await errorOf(res) };
      const type = res.headers.get("content-type") ?? "";
      if (!type.includes("text/event-stream") || !res.body) {
        return { opened, error: new CrierError(`expected an event stream, got ${type || "no content type"}`, { status: res.status, code: "bad_response" }) };
      }
      opened = true;
      this.#setStatus("open");
      const parser = new SseParser({
        message: (m) => this.#onSseMessage(m),
        comment: (c) => {
          const head = /^crier head=(\d+)/.exec(c);
          if (head) this.#opened(Number(head[1]));
          else if (/^credential (expired|revoked)/.test(c)) credentialEnded = true;
        },
      });
      const decoder = new TextDecoder();
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#closed) break;
        touch();
        parser.push(decoder.decode(value, { stream: true }));
        if (this.#shouldPause()) {
          clearTimeout(idle);
          await this.#drain();
          if (this.#closed) break;
          touch();
        }
      }
      return { opened, credentialEnded };
    } catch (e) {
      if (this.#closed) return { opened };
      if (timedOut) {
        return { opened, error: new CrierError(`nothing received for ${this.#idleTimeout} ms`, { code: "timeout" }) };
      }
      return { opened, error: networkError(e, opened ? "the stream broke" : "cannot reach the hub") };
    } finally {
      clearTimeout(idle);
      this.#abort.signal.removeEventListener("abort", stop);
      ctl.abort();
    }
  }

  #onSseMessage(m) {
    let value;
    try {
      value = JSON.parse(m.data);
    } catch {
      return; // not an event of this protocol
    }
    // A control message carries no id and no seq; a published event of type
    // "crier.reset" has both and is an ordinary event.
    if (m.event === "crier.reset" && !m.hasId && typeof value?.seq !== "number") return this.#reset(value);
    this.#deliver(value);
  }

  /** One WebSocket connection, to its end: `{opened, error?}` (ws.js). */
  #runWs(token) {
    return runWs(
      {
        url: this.#url,
        WebSocket: this.#WS,
        fetch: this.#opts.fetch,
        tokenSource: this.#opts.token,
        signal: this.#abort.signal,
        idleTimeout: this.#idleTimeout,
        filter: this.#wsFilter,
        tenant: this.#tenant,
        position: () => this.#position(),
        opened: (head) => this.#opened(head),
        open: () => this.#setStatus("open"),
        deliver: (event) => this.#deliver(event),
        reset: (info) => this.#reset(info),
      },
      token,
    );
  }
}
