// The JavaScript client's API against a real hub (the `crier` binary named by CRIER_BIN), no
// mocks except for the SSE parser's byte-level cases: publish and history, a browser-like
// fetch, backoff, Retry-After and giving up, backpressure, option checks and the SSE parser.

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, createClient, publish, history, backoffDelay, readSse, CrierError } from "../crier.js";
import { freePort } from "../../../tests/e2e/hub.mjs";
import { SECRET, startHub, jwt, delay, take, waitFor, record, rejectsWith, seqs } from "./helpers.js";

// ---------------------------------------------------------------------------------------
// Publish and history.

test("publish and history: the hub's answers; errors are CrierErrors with status, code, message", async (t) => {
  const hub = await startHub({ CRIER_AUTH_JWT_SECRET: SECRET });
  t.after(() => hub.stop());
  const writer = jwt({ sub: "w", tenant: "acme", role: "publisher" });
  const c = createClient({ url: hub.url + "/", token: async () => writer });
  const r = await c.publish([{ type: "a.b", id: "x1", tags: ["t1"] }, { type: "a.c" }]);
  assert.equal(r.events.length, 2);
  assert.deepEqual(r.events[0], { id: "x1", seq: r.events[0].seq, duplicate: false });
  assert.ok(r.events[1].seq > r.events[0].seq);
  const dup = await publish({ url: hub.url, token: writer }, { type: "a.b", id: "x1" });
  assert.deepEqual(dup.events[0], { id: "x1", seq: r.events[0].seq, duplicate: true });

  const page = await c.history({ filter: { type: "a.*" }, limit: 1 });
  assert.equal(page.events.length, 1);
  assert.equal(page.next_after, r.events[0].seq);
  assert.equal(page.head, r.events[1].seq);
  const rest = await c.history({ filter: { type: ["a.*"] }, after: page.next_after });
  assert.deepEqual(seqs(rest.events), [r.events[1].seq]);
  const desc = await history({ url: hub.url, token: writer }, { order: "desc", limit: 10 });
  assert.deepEqual(seqs(desc.events), [r.events[1].seq, r.events[0].seq]);
  const tagged = await c.history({ filter: { tags: "t1" } });
  assert.deepEqual(tagged.events.map((e) => e.id), ["x1"]);
  assert.equal(tagged.events[0].actor, "w");

  await rejectsWith(c.publish({ type: "bad type!" }), { status: 400, code: "invalid_event" });
  await rejectsWith(c.publish({ type: "a", colour: "red" }), { status: 400 });
  await rejectsWith(c.history({ filter: { severity: "loud" } }), { status: 400 });
  await rejectsWith(publish({ url: hub.url }, { type: "a" }), { status: 401, code: "unauthorized" });
  const reader = jwt({ sub: "r", tenant: "acme" });
  await rejectsWith(publish({ url: hub.url, token: reader }, { type: "a" }), { status: 403, code: "forbidden" });
  await rejectsWith(c.history({ filter: { nope: 1 } }), { status: 0, code: "invalid_filter" });
  const port = await freePort();
  await rejectsWith(publish({ url: `http://127.0.0.1:${port}` }, { type: "a" }), { status: 0, code: "network_error" });
  const stats = await c.request("GET", "/v1/stats");
  assert.equal(stats.events.total, 2);
});

test("a fetch that, like a browser's, refuses to be called as a method works everywhere", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  let calls = 0;
  const strictFetch = function (url, init) {
    if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
    calls++;
    return globalThis.fetch(url, init);
  };
  const c = createClient({ url: hub.url, fetch: strictFetch });
  const sub = c.connect({ filter: { type: "x" } });
  t.after(() => sub.close());
  await waitFor(sub, "open");
  await c.publish({ type: "x" });
  assert.equal((await take(sub, 1))[0].type, "x");
  assert.equal((await c.history()).events.length, 1);
  assert.ok(calls >= 3);
});

// ---------------------------------------------------------------------------------------
// Backoff, Retry-After, give-up.

test("backoff delays grow from the initial delay to the cap, jittered within bounds", async (t) => {
  const port = await freePort(); // nothing listens: every attempt fails at once
  const exact = [];
  const sub = connect({ url: `http://127.0.0.1:${port}`, backoff: { initial: 20, max: 160, factor: 2, jitter: 0 } });
  t.after(() => sub.close());
  await new Promise((resolve) =>
    sub.on("status", (s) => {
      if (s.state === "reconnecting") {
        exact.push(s.retryInMs);
        assert.equal(s.attempt, exact.length);
        assert.equal(s.error.code, "network_error");
      }
      if (exact.length === 7) resolve();
    }),
  );
  sub.close();
  assert.deepEqual(exact, [20, 40, 80, 160, 160, 160, 160]);

  const jittered = [];
  const j = connect({ url: `http://127.0.0.1:${port}`, transport: "ws", backoff: { initial: 10, max: 80, factor: 3, jitter: 0.5 } });
  t.after(() => j.close());
  await new Promise((resolve) =>
    j.on("status", (s) => {
      if (s.state === "reconnecting") jittered.push(s.retryInMs);
      if (jittered.length === 6) resolve();
    }),
  );
  j.close();
  const bases = [10, 30, 80, 80, 80, 80];
  jittered.forEach((d, i) => assert.ok(d >= bases[i] * 0.5 - 1 && d <= Math.min(80, bases[i] * 1.5) + 1, `attempt ${i + 1}: ${d}`));

  // The defaults: 1 s doubling to 30 s, ±20 %, never above the cap.
  for (let attempt = 1; attempt < 12; attempt++) {
    for (const r of [0, 0.5, 0.999]) {
      const d = backoffDelay(attempt, undefined, () => r);
      const base = Math.min(30000, 1000 * 2 ** (attempt - 1));
      assert.ok(d >= base * 0.8 - 1 && d <= Math.min(30000, base * 1.2) + 1, `attempt ${attempt}: ${d}`);
    }
  }
});

test("sse: a 429 is retried no sooner than its Retry-After", async (t) => {
  const hub = await startHub({ CRIER_LIMITS_MAX_CONNECTIONS_PER_TENANT: "1" });
  t.after(() => hub.stop());
  const first = connect({ url: hub.url });
  t.after(() => first.close());
  await waitFor(first, "open");
  const second = connect({ url: hub.url, backoff: { initial: 10, jitter: 0 } });
  t.after(() => second.close());
  const s = await waitFor(second, "reconnecting");
  assert.equal(s.error.status, 429);
  assert.equal(s.error.code, "too_many_connections");
  assert.equal(s.error.retryAfter, 1);
  assert.ok(s.retryInMs >= 1000, `waited ${s.retryInMs} ms`);
  first.close();
  await waitFor(second, "open", 5000);
});

test("maxRetries gives up with a CrierError; close() ends the iterator", async (t) => {
  const port = await freePort();
  const sub = connect({ url: `http://127.0.0.1:${port}`, maxRetries: 2, backoff: { initial: 5, jitter: 0 } });
  t.after(() => sub.close());
  const log = record(sub);
  await rejectsWith(sub[Symbol.asyncIterator]().next(), { code: "retries_exhausted" });
  assert.equal(log.statuses.filter((s) => s.state === "connecting").length, 3);

  const hub = await startHub();
  t.after(() => hub.stop());
  const live = connect({ url: hub.url, transport: "ws" });
  t.after(() => live.close());
  await waitFor(live, "open");
  const seen = [];
  const loop = (async () => {
    for await (const e of live) {
      seen.push(e.seq);
      if (seen.length === 2) live.close();
    }
  })();
  await publish({ url: hub.url }, [{ type: "a" }, { type: "b" }, { type: "c" }]);
  await loop;
  assert.equal(seen.length, 2);
  assert.equal(live.status, "closed");
  assert.equal(live.error, undefined);
});

// ---------------------------------------------------------------------------------------
// Backpressure, options, the SSE parser.

test("sse: a consumer that does not keep up pauses the reading, then gets everything in order", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const sub = connect({ url: hub.url, highWaterMark: 20 });
  t.after(() => sub.close());
  const log = record(sub);
  const it = sub[Symbol.asyncIterator]();
  await waitFor(sub, "open");
  const pad = "x".repeat(2000);
  const batch = Array.from({ length: 300 }, (_, i) => ({ type: "bulk", data: { i, pad } }));
  await publish({ url: hub.url }, batch);
  await delay(500);
  assert.ok(log.events.length < 300, `reading paused (${log.events.length} read)`);
  const got = [];
  while (got.length < 300) got.push((await it.next()).value.data.i);
  assert.deepEqual(got, Array.from({ length: 300 }, (_, i) => i));
});

test("options are checked when connecting; no WebSocket is a clear error", async () => {
  assert.throws(() => connect({ url: "http://127.0.0.1:1", filter: { types: ["a"] } }), (e) => e instanceof CrierError && e.code === "invalid_filter");
  assert.throws(() => connect({ url: "http://127.0.0.1:1", transport: "smoke" }), (e) => e.code === "invalid_option");
  assert.throws(() => connect({ url: "http://127.0.0.1:1", after: -1 }), (e) => e.code === "invalid_option");
  assert.throws(() => connect({}), (e) => e.code === "invalid_option");
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    assert.throws(() => connect({ url: "http://127.0.0.1:1", transport: "ws" }), (e) => e.code === "no_websocket" && /WebSocket/.test(e.message));
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("the SSE parser: CRLF, CR, LF split anywhere, multi-line data, comments, id, retry", async () => {
  const stream =
    "\uFEFFretry: 1000\r\n: crier head=3\r\n\r\n" +
    'id: 1\r\nevent: a\r\ndata: {"seq":1,"type":"a"}\r\n\r\n' +
    "event: crier.reset\rdata: {\"reason\":\"retention\",\rdata: \"oldest\":5}\r\r" +
    ": ping\n\n" +
    "id: 5\nevent: b\ndata: {\"seq\":5,\ndata:\"type\":\"b\"}\n\n" +
    "event: ignored-without-data\nid: 6\n\n" +
    'data: {"seq":4,"type":"old"}\n\n' + // never twice or backwards
    'id: 9\nevent: crier.reset\ndata: {"seq":9,"type":"crier.reset"}\n\n' + // a published event
    'data: {"seq":10,"type":"no-terminator"}'; // incomplete at the end: dropped
  const bytes = new TextEncoder().encode(stream);
  // Every chunking from one byte at a time to the whole stream gives the same result.
  for (const size of [1, 2, 3, 7, 64, bytes.length]) {
    let served = false;
    const fakeFetch = async () => {
      if (served) return new Response("{}", { status: 503 });
      served = true;
      const body = new ReadableStream({
        start(ctl) {
          for (let i = 0; i < bytes.length; i += size) ctl.enqueue(bytes.slice(i, i + size));
          ctl.close();
        },
      });
      return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
    };
    const sub = connect({ url: "http://hub.invalid", fetch: fakeFetch, backoff: { initial: 60_000 } });
    const log = record(sub);
    await waitFor(sub, "reconnecting");
    sub.close();
    assert.deepEqual(log.events, [
      { seq: 1, type: "a" },
      { seq: 5, type: "b" },
      { seq: 9, type: "crier.reset" },
    ], `chunks of ${size}`);
    assert.deepEqual(log.resets, [{ reason: "retention", oldest: 5 }], `chunks of ${size}`);
  }
  // readSse, for other streams (a replay's).
  const messages = [];
  const comments = [];
  await readSse(new Response(stream), (m) => messages.push(m), (c) => comments.push(c));
  assert.deepEqual(messages.map((m) => m.event), ["a", "crier.reset", "b", "message", "crier.reset"]);
  assert.equal(messages[2].data, '{"seq":5,\n"type":"b"}');
  assert.equal(messages[3].id, "6", "the last event id carries over");
  assert.deepEqual(comments, ["crier head=3", "ping"]);
});
