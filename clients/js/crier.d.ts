// Type declarations of the crier JavaScript client (crier.js).

/** An event as the hub stores and sends it. */
export interface CrierEvent {
  seq: number;
  id: string;
  time: string;
  tenant: string;
  type: string;
  source: string;
  category?: string | null;
  severity: "debug" | "info" | "warning" | "error" | "critical";
  subject?: string | null;
  actor: string;
  tags: string[];
  data?: unknown;
  metadata?: unknown;
}

/** Which events: every key given must match; globs with `*`; severity is a minimum. */
export interface Filter {
  type?: string | string[];
  category?: string | string[];
  source?: string | string[];
  subject?: string | string[];
  severity?: "debug" | "info" | "warning" | "error" | "critical";
  tags?: string | string[];
}

/** A token, or a (possibly async) function returning one: called on every (re)connect. */
export type TokenSource = string | undefined | (() => string | undefined | Promise<string | undefined>);

export interface Backoff {
  /** First delay, ms (default 1000). */
  initial?: number;
  /** Largest delay, ms (default 30000). */
  max?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** ± fraction of random jitter (default 0.2). */
  jitter?: number;
}

export interface ClientOptions {
  /** The hub, e.g. "http://127.0.0.1:7400". */
  url: string;
  token?: TokenSource;
  fetch?: typeof fetch;
  WebSocket?: unknown;
}

export interface ConnectOptions extends ClientOptions {
  filter?: Filter;
  /** Resume after this seq (history first, then live). */
  after?: number;
  /** Start with the last n matching events. */
  last?: number;
  transport?: "sse" | "ws";
  backoff?: Backoff;
  /** Consecutive failed attempts before giving up (default: unlimited). */
  maxRetries?: number;
  /** SSE only: reconnect when nothing (not even a ping) arrived for this long, ms (default 45000). */
  idleTimeout?: number;
}

export type State = "connecting" | "open" | "reconnecting" | "closed";

export interface StatusChange {
  state: State;
  attempt?: number;
  /** Set while reconnecting: the delay before the next attempt. */
  retryInMs?: number;
  error?: CrierError;
}

export interface ResetInfo {
  reason: "retention" | "unknown_cursor" | string;
  oldest?: number;
  head?: number;
}

export class CrierError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter?: number;
}

export class Subscription implements AsyncIterable<CrierEvent> {
  readonly status: State;
  /** The seq of the last event delivered (the resume point). */
  readonly lastSeq: number | undefined;
  readonly error: CrierError | undefined;
  on(type: "event", fn: (e: CrierEvent) => void): this;
  on(type: "status", fn: (s: StatusChange) => void): this;
  on(type: "reset", fn: (r: ResetInfo) => void): this;
  on(type: "error", fn: (e: CrierError) => void): this;
  off(type: "event" | "status" | "reset" | "error", fn: (...args: any[]) => void): this;
  close(): void;
  [Symbol.asyncIterator](): AsyncIterator<CrierEvent>;
}

export interface PublishAnswer {
  events: { id: string; seq: number; duplicate: boolean }[];
}

export interface HistoryQuery {
  filter?: Filter;
  after?: number;
  before?: number;
  since?: string;
  until?: string;
  limit?: number;
  order?: "asc" | "desc";
  tenant?: string;
}

export interface HistoryPage {
  events: CrierEvent[];
  next_after: number | null;
  next_before?: number | null;
  head: number;
}

export type EventInput = Partial<Omit<CrierEvent, "seq" | "tenant" | "actor">> & { type: string };

export interface Client {
  publish(events: EventInput | EventInput[]): Promise<PublishAnswer>;
  history(query?: HistoryQuery): Promise<HistoryPage>;
  connect(opts?: Partial<ConnectOptions>): Subscription;
  /** Any other path of the API (`/v1/subscriptions`, `/v1/stats`, ...); rejects with CrierError. */
  request(method: string, path: string, body?: unknown): Promise<any>;
}

export function connect(opts: ConnectOptions): Subscription;
export function createClient(opts: ClientOptions): Client;
export function publish(opts: ClientOptions, events: EventInput | EventInput[]): Promise<PublishAnswer>;
export function history(opts: ClientOptions, query?: HistoryQuery): Promise<HistoryPage>;
/** The delay before reconnect attempt `attempt` (1-based). */
export function backoffDelay(attempt: number, backoff?: Backoff, random?: () => number): number;

/** Reads a text/event-stream response to its end, one callback per message. */
export function readSse(response: Response, onMessage: (m: { event: string; data: string; id?: string }) => void): Promise<void>;
