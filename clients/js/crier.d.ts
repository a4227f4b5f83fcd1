// Type declarations of the crier JavaScript client (crier.js).

export type Severity = "debug" | "info" | "warning" | "error" | "critical";

/** An event as the hub stores and sends it (API §1). */
export interface CrierEvent {
  /** Strictly increasing and gapless across the log: the resume cursor. */
  seq: number;
  id: string;
  /** RFC 3339, UTC. */
  time: string;
  tenant: string;
  type: string;
  source: string;
  category?: string | null;
  severity: Severity;
  subject?: string | null;
  actor: string;
  tags: string[];
  data?: unknown;
  metadata?: unknown;
}

/**
 * Which events (API §2): every key given must match; `type`, `category`, `source` and
 * `subject` are globs where `*` matches any run of characters; `severity` is a minimum;
 * `tags` matches events with at least one of them (`tag` is accepted as an alias).
 */
export interface Filter {
  type?: string | string[];
  category?: string | string[];
  source?: string | string[];
  subject?: string | string[];
  severity?: Severity;
  tags?: string | string[];
  tag?: string | string[];
}

/** A token, or a (possibly async) function returning one: called before every (re)connect. */
export type TokenSource = string | null | undefined | (() => string | null | undefined | Promise<string | null | undefined>);

export interface Backoff {
  /** First delay, ms (default 1000). */
  initial?: number;
  /** Largest delay, ms (default 30000). */
  max?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /** ± fraction of random jitter, 0 to 1 (default 0.2). */
  jitter?: number;
}

/** A WebSocket constructor (the browser's, Node's global one, or e.g. the `ws` package's). */
export type WebSocketConstructor = new (url: string) => {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
};

export interface ClientOptions {
  /** The hub, e.g. "http://127.0.0.1:7400" (in a browser, defaults to the page's origin). */
  url?: string;
  token?: TokenSource;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  /** A WebSocket constructor (default: the global one). */
  WebSocket?: WebSocketConstructor;
}

export interface ConnectOptions extends ClientOptions {
  /** A filter, or the name of one of the tenant's saved filters (`/v1/filters`). */
  filter?: Filter | string;
  /** Resume after this seq: history first, then live, with no gap. */
  after?: number;
  /** Start with the last n matching events (at most 10000), then live. */
  last?: number;
  /** "sse" (default) or "ws". */
  transport?: "sse" | "ws";
  backoff?: Backoff;
  /** Consecutive failed attempts before giving up (default: unlimited). */
  maxRetries?: number;
  /** Reconnect when nothing (not even a heartbeat) arrived for this long, ms (default 45000; 0: never). */
  idleTimeout?: number;
  /** Events the iterator may leave waiting before SSE reading pauses (default 1000). */
  highWaterMark?: number;
  /** An admin may read another tenant's events, or all with "*". */
  tenant?: string;
}

export type State = "connecting" | "open" | "reconnecting" | "closed";

/** The payload of a "status" event. */
export interface StatusChange {
  state: State;
  /** With "connecting" (0 for the first attempt) and "reconnecting": consecutive failed attempts. */
  attempt?: number;
  /** With "reconnecting": the delay before the next attempt, ms. */
  retryInMs?: number;
  /** With "reconnecting": why the last attempt failed (absent when the stream just ended);
   *  with "closed": the final refusal (absent after close()). */
  error?: CrierError;
}

/** The payload of a "reset" event (API §4): the hub moved the cursor. */
export interface ResetInfo {
  /** "retention": events after the cursor were deleted, delivery continues at `oldest`;
   *  "unknown_cursor": the cursor is above the head (the log was replaced), delivery continues live. */
  reason: "retention" | "unknown_cursor" | string;
  oldest?: number;
  head?: number;
}

/** An error answered by the hub (status, code, message from its JSON error) or raised by the client (status 0). */
export class CrierError extends Error {
  constructor(message: string, options?: { status?: number; code?: string; retryAfter?: number; cause?: unknown });
  /** The HTTP status (or the one a WebSocket refusal stands for); 0 for client-side errors. */
  readonly status: number;
  /** The hub's snake_case code, or the client's: "network_error", "timeout", "invalid_option",
   *  "invalid_filter", "no_websocket", "token_error", "retries_exhausted", "bad_response". */
  readonly code: string;
  /** Seconds, from a Retry-After header. */
  readonly retryAfter?: number;
}

/**
 * A live subscription: an async iterator and an event emitter of events, in seq order, each
 * once, across reconnects. Events wait in a buffer until the iterator takes them (see
 * `highWaterMark`); breaking out of `for await` closes the subscription.
 */
export class Subscription implements AsyncIterable<CrierEvent> {
  private constructor(opts: ConnectOptions);
  readonly status: State;
  /** The seq of the last event delivered (or `after`, or where a reset moved it): the resume point. */
  readonly lastSeq: number | undefined;
  /** The error that closed the subscription, if any. */
  readonly error: CrierError | undefined;
  readonly transport: "sse" | "ws";
  on(type: "event", fn: (e: CrierEvent) => void): this;
  on(type: "status", fn: (s: StatusChange) => void): this;
  on(type: "reset", fn: (r: ResetInfo) => void): this;
  on(type: "error", fn: (e: CrierError) => void): this;
  off(type: "event" | "status" | "reset" | "error", fn: (...args: any[]) => void): this;
  /** Stops: the connection closes, the iterator ends, status becomes "closed". */
  close(): void;
  [Symbol.asyncIterator](): AsyncIterableIterator<CrierEvent>;
}

export interface PublishAnswer {
  events: { id: string; seq: number; duplicate: boolean }[];
}

export interface HistoryQuery {
  /** A filter, or the name of one of the tenant's saved filters (`/v1/filters`). */
  filter?: Filter | string;
  /** Events after this seq (exclusive). */
  after?: number;
  /** Events before this seq (exclusive). */
  before?: number;
  /** RFC 3339. */
  since?: string;
  /** RFC 3339. */
  until?: string;
  /** 1 to 1000 (default 100). */
  limit?: number;
  order?: "asc" | "desc";
  /** Admins: another tenant, or "*". */
  tenant?: string;
}

export interface HistoryPage {
  events: CrierEvent[];
  /** Pass as `after` for the next page (ascending); null at the end. */
  next_after: number | null;
  /** Pass as `before` for the next page (descending). */
  next_before?: number | null;
  head: number;
}

/** An event to publish: `type` is required; the hub sets seq, tenant and actor. */
export type EventInput = {
  type: string;
  id?: string;
  time?: string;
  source?: string;
  category?: string;
  severity?: Severity;
  subject?: string;
  tags?: string[];
  data?: unknown;
  metadata?: unknown;
  /** Admins only. */
  tenant?: string;
  /** Admins only. */
  actor?: string;
};

export interface Client {
  readonly url: string;
  publish(events: EventInput | EventInput[]): Promise<PublishAnswer>;
  history(query?: HistoryQuery): Promise<HistoryPage>;
  connect(opts?: Omit<ConnectOptions, "url"> & { url?: string }): Subscription;
  /** Any other path of the API (`/v1/subscriptions`, `/v1/stats`, ...); rejects with CrierError. */
  request<T = any>(method: string, path: string, body?: unknown): Promise<T>;
}

/** Opens a live subscription that reconnects and resumes by itself. Throws CrierError on bad options. */
export function connect(opts: ConnectOptions): Subscription;
/** A client bound to a hub and a credential. */
export function createClient(opts: ClientOptions): Client;
/** POST /v1/events: one event or up to 1000 (all or nothing); resolves once durable. */
export function publish(opts: ClientOptions, events: EventInput | EventInput[]): Promise<PublishAnswer>;
/** GET /v1/events. */
export function history(opts: ClientOptions, query?: HistoryQuery): Promise<HistoryPage>;
/** The delay before reconnect attempt `attempt` (1-based), ms. */
export function backoffDelay(attempt: number, backoff?: Backoff, random?: () => number): number;
/** Reads a text/event-stream response to its end, one callback per message (and per comment). */
export function readSse(
  response: Response,
  onMessage: (m: { event: string; data: string; id?: string }) => void,
  onComment?: (text: string) => void,
): Promise<void>;
