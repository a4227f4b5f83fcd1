// The JavaScript client against a real hub (the binary in CRIER_BIN): live delivery over SSE
// and WebSocket, resume after a cut connection and across a hub restart with nothing lost or
// doubled, token refresh, refusals, backoff, publish and history.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect as tcpConnect } from "node:net";
import { connect, createClient, publish, history, backoffDelay, CrierError } from "../crier.js";
import { startHub, token, freePort } from "../../../tests/e2e/hub.mjs";

const SECRET = "js-client-secret-of-at-least-32-chars!";

/** Takes `n` events from a subscription's iterator, or fails after `ms`. */
async function take(sub, n, ms = 10_000) {
  const out = [];
  const it = sub[Symbol.asyncIterator]();
  const deadline = setTimeout(() => sub.close(), ms);
  try {
    while (out.length < n) {
      const { value, done } = await it.next();
      if (done) break;
      out.push(value);
    }
  } finally {
    clearTimeout(deadline);
  }
  assert.equal(out.length, n, `expected ${n} events, got ${out.length}`);
  return out;
}

function waitFor(sub, state, ms = 10_000) {
  return new Promise((resolve, reject) => {
    if (sub.status === state) return resolve();
    const t = setTimeout(() => reject(new Error(`never ${state} (now ${sub.status})`)), ms);
    sub.on("status", (s) => {
      if (s.state === state) {
        clearTimeout(t);
        resolve(s);
      }
    });
  });
}

/** A TCP proxy that can be cut (every connection dropped, new ones refused) and restored. */
async function proxy(target) {
  const port = await freePort();
  const sockets = new Set();
  let server;
  const listen = () =>
    new Promise((resolve) => {
      server = createServer((c) => {
        const up = tcpConnect(target, "127.0.0.1");
        sockets.add(c);
        sockets.add(up);
        c.pipe(up).pipe(c);
        const drop = () => {
          c.destroy();
          up.destroy();
          sockets.delete(c);
          sockets.delete(up);
        };
        c.on("error", drop).on("close", drop);
        up.on("error", drop).on("close", drop);
      });
      server.listen(port, "127.0.0.1", resolve);
    });
  await listen();
  return {
    url: `http://127.0.0.1:${port}`,
    async cut() {
      const closed = new Promise((r) => server.close(r));
      for (const s of sockets) s.destroy();
      sockets.clear();
      await closed;
    },
    restore: listen,
    async close() {
      const closed = new Promise((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

const seqs = (events) => events.map((e) => e.seq);
const ascending = (xs) => xs.every((x, i) => i === 0 || x > xs[i - 1]);

for (const transport of ["sse", "ws"]) {
  test(`${transport}: live events in order, filtered`, async (t) => {
    const hub = await startHub();
    t.after(() => hub.stop());
    const sub = connect({ url: hub.url, transport, filter: { type: ["site.*"], severity: "warning", tags: ["prod"] } });
    t.after(() => sub.close());
    await waitFor(sub, "open");
    const c = createClient({ url: hub.url });
    await c.publish([
      { type: "site.created", severity: "error", tags: ["prod"] },
      { type: "site.created", severity: "info", tags: ["prod"] }, // below the severity
      { type: "user.created", severity: "error", tags: ["prod"] }, // another type
      { type: "site.deleted", severity: "critical", tags: ["dev", "prod"] },
      { type: "site.deleted", severity: "critical", tags: ["dev"] }, // no prod tag
    ]);
    const got = await take(sub, 2);
    assert.deepEqual(got.map((e) => e.type), ["site.created", "site.deleted"]);
    assert.ok(ascending(seqs(got)));
    assert.equal(sub.lastSeq, got[1].seq);
  });

  test(`${transport}: resumes after the connection is cut, nothing lost or doubled`, async (t) => {
    const hub = await startHub();
    t.after(() => hub.stop());
    const p = await proxy(hub.port);
    t.after(() => p.close());
    const statuses = [];
    const sub = connect({ url: p.url, transport, backoff: { initial: 100, max: 400 } });
    sub.on("status", (s) => statuses.push(s.state));
    t.after(() => sub.close());
    await waitFor(sub, "open");
    const c = createClient({ url: hub.url });
    for (let i = 0; i < 10; i++) await c.publish({ type: "tick", data: { i } });
    const first = await take(sub, 10);
    for (let round = 0; round < 3; round++) {
      await p.cut();
      await waitFor(sub, "reconnecting");
      // Published while the client is disconnected.
      for (let i = 0; i < 15; i++) await c.publish({ type: "tick", data: { round, i } });
      await p.restore();
      const again = await take(sub, 15);
      assert.deepEqual(again.map((e) => e.data), Array.from({ length: 15 }, (_, i) => ({ round, i })));
      assert.ok(again[0].seq > first.at(-1).seq && ascending(seqs(again)));
    }
    assert.ok(statuses.includes("reconnecting"));
    const all = await history({ url: hub.url }, { limit: 1000 });
    assert.equal(sub.lastSeq, all.events.at(-1).seq);
  });

  test(`${transport}: resumes across a hub restart (kill -9), nothing lost or doubled`, async (t) => {
    let hub = await startHub({}, {});
    const { dir, port } = hub;
    t.after(() => hub.stop());
    const sub = connect({ url: hub.url, transport, backoff: { initial: 300, max: 1000 } });
    t.after(() => sub.close());
    await waitFor(sub, "open");
    for (let i = 0; i < 5; i++) await publish({ url: hub.url }, { type: "before", data: { i } });
    const before = await take(sub, 5);
    await hub.kill();
    await waitFor(sub, "reconnecting");
    hub = await startHub({}, { dir, port });
    // Published right after the restart, before the client is back.
    for (let i = 0; i < 20; i++) await publish({ url: hub.url }, { type: "after", data: { i } });
    const after = await take(sub, 20);
    assert.deepEqual(after.map((e) => e.data.i), Array.from({ length: 20 }, (_, i) => i));
    assert.ok(after.every((e) => e.type === "after"));
    assert.ok(after[0].seq > before.at(-1).seq && ascending(seqs(after)));
    // Nothing more arrives: no event twice.
    await publish({ url: hub.url }, { type: "marker" });
    const [m] = await take(sub, 1);
    assert.equal(m.type, "marker");
  });

  test(`${transport}: calls the token callback on every connect; refusals close with CrierError`, async (t) => {
    const hub = await startHub({ CRIER_AUTH_JWT_SECRET: SECRET });
    t.after(() => hub.stop());
    const p = await proxy(hub.port);
    t.after(() => p.close());
    let calls = 0;
    const sub = connect({
      url: p.url,
      transport,
      backoff: { initial: 100 },
      token: async () => {
        calls++;
        return token(SECRET, { sub: `reader-${calls}`, tenant: "acme", role: "subscriber" });
      },
    });
    t.after(() => sub.close());
    await waitFor(sub, "open");
    assert.equal(calls, 1);
    await p.cut();
    await waitFor(sub, "reconnecting");
    await p.restore();
    await waitFor(sub, "open");
    assert.ok(calls >= 2, "a fresh token for the new connection");
    const writer = token(SECRET, { sub: "w", tenant: "acme", role: "publisher" });
    await publish({ url: hub.url, token: writer }, { type: "after.refresh" });
    const [e] = await take(sub, 1);
    assert.equal(e.type, "after.refresh");

    // A bad token: the iterator throws a CrierError with the hub's status and code.
    const bad = connect({ url: hub.url, transport, token: "not-a-token", backoff: { initial: 50 } });
    await assert.rejects(bad[Symbol.asyncIterator]().next(), (err) => {
      assert.ok(err instanceof CrierError);
      assert.equal(err.status, 401);
      assert.equal(err.code, "unauthorized");
      return true;
    });
    assert.equal(bad.status, "closed");
    // A bad filter is a 400, not a retry loop.
    const badFilter = connect({ url: hub.url, transport, token: writer, filter: { severity: "loud" } });
    await assert.rejects(badFilter[Symbol.asyncIterator]().next(), (err) => err.status === 400);
  });
}

test("publish and history answer the hub's shapes; errors are CrierErrors", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const c = createClient({ url: hub.url + "/" });
  const r = await c.publish([{ type: "a.b", id: "x1" }, { type: "a.c" }]);
  assert.equal(r.events.length, 2);
  assert.equal(r.events[0].id, "x1");
  const dup = await c.publish({ type: "a.b", id: "x1" });
  assert.deepEqual(dup.events[0], { id: "x1", seq: r.events[0].seq, duplicate: true });
  const page = await c.history({ filter: { type: "a.*" }, limit: 1 });
  assert.equal(page.events.length, 1);
  assert.equal(page.next_after, r.events[0].seq);
  const desc = await c.history({ order: "desc", limit: 10 });
  assert.deepEqual(seqs(desc.events), [r.events[1].seq, r.events[0].seq]);
  await assert.rejects(c.publish({ type: "bad type!" }), (e) => {
    assert.ok(e instanceof CrierError);
    assert.equal(e.status, 400);
    assert.equal(e.code, "invalid_event");
    assert.match(e.message, /type/);
    return true;
  });
  await assert.rejects(c.history({ filter: { nope: ["x"] } }), (e) => e.code === "invalid_filter");
  const stats = await c.request("GET", "/v1/stats");
  assert.equal(stats.events.total, 2);
});

test("backoff grows from the initial delay to the cap, with bounded jitter", async (t) => {
  // Nothing listens on this port: every attempt fails at once.
  const port = await freePort();
  const delays = [];
  const sub = connect({
    url: `http://127.0.0.1:${port}`,
    backoff: { initial: 20, max: 160, factor: 2, jitter: 0 },
  });
  t.after(() => sub.close());
  await new Promise((resolve) => {
    sub.on("status", (s) => {
      if (s.state === "reconnecting") delays.push(s.retryInMs);
      if (delays.length === 6) resolve();
    });
  });
  sub.close();
  assert.deepEqual(delays, [20, 40, 80, 160, 160, 160]);
  for (let attempt = 1; attempt < 12; attempt++) {
    for (const r of [0, 0.5, 0.999]) {
      const d = backoffDelay(attempt, { initial: 1000, max: 30000, factor: 2, jitter: 0.2 }, () => r);
      const base = Math.min(30000, 1000 * 2 ** (attempt - 1));
      assert.ok(d >= base * 0.8 - 1 && d <= Math.min(30000, base * 1.2) + 1, `attempt ${attempt}: ${d}`);
    }
  }
  // Defaults: 1 s to 30 s, never above the cap even with jitter.
  assert.ok(backoffDelay(1) >= 800 && backoffDelay(1) <= 1200);
  assert.ok(backoffDelay(40) >= 24000 && backoffDelay(40) <= 30000);
});

test("maxRetries gives up with a CrierError", async () => {
  const port = await freePort();
  const sub = connect({ url: `http://127.0.0.1:${port}`, maxRetries: 2, backoff: { initial: 10, jitter: 0 } });
  await assert.rejects(sub[Symbol.asyncIterator]().next(), (e) => e.code === "retries_exhausted");
});

test("the SSE parser handles CRLF, multi-line data, comments and resets", async () => {
  const chunks = [
    "retry: 1000\r\n: crier head=3\r\n\r\n",
    "id: 1\r\nevent: a\r\ndata: {\"seq\":1,\"type\":\"a\"}\r\n\r",
    "\nevent: crier.reset\ndata: {\"reason\":\"retention\",\n",
    'data: "oldest":5}\n\n: ping\n\n',
    'id: 5\ndata: {"seq":5,\ndata: "type":"b"}\n\n',
    'data: {"seq":4,"type":"old"}\n\n', // never delivered twice or backwards
  ];
  let served = false;
  const fakeFetch = async () => {
    if (served) return new Response("", { status: 503 });
    served = true;
    const body = new ReadableStream({
      start(c) {
        for (const ch of chunks) c.enqueue(new TextEncoder().encode(ch));
        c.close();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  const resets = [];
  const sub = connect({ url: "http://hub.invalid", fetch: fakeFetch, backoff: { initial: 5000 } });
  sub.on("reset", (r) => resets.push(r));
  const got = await take(sub, 2);
  sub.close();
  assert.deepEqual(got, [
    { seq: 1, type: "a" },
    { seq: 5, type: "b" },
  ]);
  assert.deepEqual(resets, [{ reason: "retention", oldest: 5 }]);
});
