// The JavaScript client against real hubs (the `crier` binary named by CRIER_BIN), no mocks
// except for the SSE parser's byte-level cases: live delivery with filters over SSE and
// WebSocket, resume after a cut connection and across hub restarts with nothing lost or
// doubled, token refresh, refusals, resets, backoff, backpressure, publish and history.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createClient, publish, history, backoffDelay, readSse, CrierError } from "../crier.js";
import { freePort } from "../../../tests/e2e/hub.mjs";

const BIN = process.env.CRIER_BIN;
const SECRET = "js-client-test-secret-of-at-least-32-chars";
const TRANSPORTS = ["sse", "ws"];

// ---------------------------------------------------------------------------------------
// Helpers: a hub, tokens, a TCP proxy that can be cut, and ways to wait on a subscription.

/** Starts a hub on 127.0.0.1 (a free port and a fresh data dir unless given); waits for /healthz. */
async function startHub(env = {}, { dir, port } = {}) {
  if (!BIN) throw new Error("set CRIER_BIN to the crier binary");
  const ownDir = !dir;
  dir ??= mkdtempSync(join(tmpdir(), "crier-js-"));
  port ??= await freePort();
  const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dir], {
    env: { ...process.env, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((r) => child.once("exit", r));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`crier exited (${child.exitCode}): ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`crier did not start: ${stderr}`);
    }
    await delay(20);
  }
  return {
    url,
    port,
    dir,
    /** Ends the process with `signal` and waits; the data directory stays. */
    async kill(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
    /** Stops the process and removes the data directory it created. */
    async stop() {
      await this.kill("SIGTERM");
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An HS256 JWT for `claims`, valid for `ttl` seconds. */
function jwt(claims, ttl = 600, secret = SECRET) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ exp: Math.floor(Date.now() / 1000) + ttl, ...claims });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP proxy to `port` that can be cut (connections dropped, new ones refused) and restored. */
async function proxy(target) {
  const port = await freePort();
  const sockets = new Set();
  let server;
  const listen = () =>
    new Promise((resolve, reject) => {
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
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
  await listen();
  const cut = async () => {
    const closed = new Promise((r) => server.close(() => r()));
    for (const s of sockets) s.destroy();
    sockets.clear();
    await closed;
  };
  return { url: `http://127.0.0.1:${port}`, cut, restore: listen, close: cut };
}

/** Takes `n` events from the subscription's iterator, failing after `ms`. */
async function take(sub, n, ms = 10_000) {
  const out = [];
  const it = sub[Symbol.asyncIterator]();
  const timer = setTimeout(() => sub.close(), ms);
  try {
    while (out.length < n) {
      const { value, done } = await it.next();
      if (done) break;
      out.push(value);
    }
  } finally {
    clearTimeout(timer);
  }
  assert.equal(out.length, n, `expected ${n} events within ${ms} ms, got ${out.length}`);
  return out;
}

/** Resolves with the status payload once the subscription reaches `state`. */
function waitFor(sub, state, ms = 10_000) {
  return new Promise((resolve, reject) => {
    if (sub.status === state) return resolve({ state });
    const timer = setTimeout(() => {
      sub.off("status", on);
      reject(new Error(`never "${state}" (now "${sub.status}")`));
    }, ms);
    const on = (s) => {
      if (s.state !== state) return;
      clearTimeout(timer);
      sub.off("status", on);
      resolve(s);
    };
    sub.on("status", on);
  });
}

/** Records every status and event the subscription emits. */
function record(sub) {
  const log = { statuses: [], events: [], resets: [], errors: [] };
  sub.on("status", (s) => log.statuses.push(s));
  sub.on("event", (e) => log.events.push(e));
  sub.on("reset", (r) => log.resets.push(r));
  sub.on("error", (e) => log.errors.push(e));
  return log;
}

/** Asserts that `promise` rejects, within `ms`, with a CrierError of that status and code. */
async function rejectsWith(promise, { status, code }, ms = 10_000) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no rejection within ${ms} ms`)), ms);
  });
  await assert.rejects(Promise.race([promise, late]).finally(() => clearTimeout(timer)), (err) => {
    assert.ok(err instanceof CrierError, `a CrierError, not ${err}`);
    if (status !== undefined) assert.equal(err.status, status, err.message);
    if (code !== undefined) assert.equal(err.code, code, err.message);
    assert.ok(err.message.length > 0);
    return true;
  });
}

const seqs = (events) => events.map((e) => e.seq);
const ascending = (xs) => xs.every((x, i) => i === 0 || x > xs[i - 1]);

// ---------------------------------------------------------------------------------------
// Live delivery, start positions, filters.

for (const transport of TRANSPORTS) {
  test(`${transport}: live events arrive in order, filtered by every key; after and last`, async (t) => {
    const hub = await startHub();
    t.after(() => hub.stop());
    const c = createClient({ url: hub.url });
    const filter = {
      type: ["site.*", "*.deleted"],
      severity: "warning",
      tags: ["prod"],
      category: "config",
      source: "dash*",
      subject: ["site/*"],
    };
    const sub = connect({ url: hub.url, transport, filter });
    t.after(() => sub.close());
    await waitFor(sub, "open");
    const base = { category: "config", source: "dashboard", subject: "site/1", tags: ["prod"] };
    await c.publish([
      { ...base, type: "site.created", severity: "error", data: { n: 1 } },
      { ...base, type: "site.created", severity: "info" }, // below warning
      { ...base, type: "user.created", severity: "error" }, // type
      { ...base, type: "user.deleted", severity: "critical", tags: ["dev", "prod"], data: { n: 2 } },
      { ...base, type: "site.updated", severity: "error", tags: ["dev"] }, // tag
      { ...base, type: "site.updated", severity: "error", category: "billing" }, // category
      { ...base, type: "site.updated", severity: "error", source: "api" }, // source
      { ...base, type: "site.updated", severity: "error", subject: "user/1" }, // subject
      { ...base, type: "site.updated", severity: "warning", data: { n: 3 } },
    ]);
    const got = await take(sub, 3);
    assert.deepEqual(got.map((e) => e.data.n), [1, 2, 3]);
    assert.ok(ascending(seqs(got)));
    assert.equal(sub.lastSeq, got[2].seq);
    for (const k of ["id", "time", "tenant", "type", "source", "severity", "actor", "tags"]) assert.ok(k in got[0], k);

    // `after`: history after that seq, then live, with no gap.
    const resumed = connect({ url: hub.url, transport, filter, after: got[0].seq });
    t.after(() => resumed.close());
    const first = await take(resumed, 2);
    assert.deepEqual(seqs(first), seqs(got.slice(1)));
    await c.publish({ ...base, type: "site.deleted", severity: "error", data: { n: 4 } });
    const [live] = await take(resumed, 1);
    assert.equal(live.data.n, 4);

    // `last`: the last n matching events, then live.
    const tail = connect({ url: hub.url, transport, filter, last: 2 });
    t.after(() => tail.close());
    const lastTwo = await take(tail, 2);
    assert.deepEqual(lastTwo.map((e) => e.data.n), [3, 4]);
    assert.equal((await take(sub, 1))[0].data.n, 4);
  });
}

// A saved filter (`/v1/filters`) by name, over both transports and in history.
for (const transport of TRANSPORTS) {
  test(`${transport}: a saved filter's name works where a filter does; an unknown one is a 404`, async (t) => {
    const hub = await startHub();
    t.after(() => hub.stop());
    const c = createClient({ url: hub.url });
    const saved = await c.request("POST", "/v1/filters", { name: "prod-errors", filter: { severity: "error", tags: ["prod"] } });
    assert.equal(saved.name, "prod-errors");
    const sub = connect({ url: hub.url, transport, filter: "prod-errors" });
    t.after(() => sub.close());
    await waitFor(sub, "open");
    await c.publish([
      { type: "a", severity: "error", tags: ["dev"] },
      { type: "b", severity: "info", tags: ["prod"] },
      { type: "c", severity: "critical", tags: ["prod"] },
    ]);
    const [got] = await take(sub, 1);
    assert.equal(got.type, "c");
    const page = await c.history({ filter: "prod-errors" });
    assert.deepEqual(page.events.map((e) => e.type), ["c"]);

    const unknown = connect({ url: hub.url, transport, filter: "nope" });
    t.after(() => unknown.close());
    await rejectsWith(unknown[Symbol.asyncIterator]().next(), { status: 404, code: "unknown_filter" });
    assert.throws(() => connect({ url: hub.url, transport, filter: "Not A Name" }), (e) => e instanceof CrierError && e.code === "invalid_filter_name");
  });
}

// ---------------------------------------------------------------------------------------
// Resume after a cut connection and across hub restarts.

for (const transport of TRANSPORTS) {
  test(`${transport}: resumes after the connection is cut, every event once and in order`, async (t) => {
    const hub = await startHub();
    t.after(() => hub.stop());
    const p = await proxy(hub.port);
    t.after(() => p.close());
    const c = createClient({ url: hub.url });
    const sub = connect({ url: p.url, transport, backoff: { initial: 50, max: 200 } });
    t.after(() => sub.close());
    const log = record(sub);
    await waitFor(sub, "open");

    // Cut before anything was delivered: the resume point is the head the hub announced.
    await p.cut();
    await waitFor(sub, "reconnecting");
    for (let i = 0; i < 5; i++) await c.publish({ type: "tick", data: { round: -1, i } });
    await p.restore();
    assert.deepEqual((await take(sub, 5)).map((e) => e.data.i), [0, 1, 2, 3, 4]);

    for (let round = 0; round < 3; round++) {
      await c.publish({ type: "tick", data: { round, i: "live" } });
      await take(sub, 1);
      await p.cut();
      await waitFor(sub, "reconnecting");
      for (let i = 0; i < 15; i++) await c.publish({ type: "tick", data: { round, i } });
      await p.restore();
      const again = await take(sub, 15);
      assert.deepEqual(again.map((e) => e.data), Array.from({ length: 15 }, (_, i) => ({ round, i })));
    }
    // Every stored event exactly once, in order, to the iterator and to the listeners alike.
    const all = await history({ url: hub.url }, { limit: 1000 });
    assert.equal(all.events.length, 5 + 3 * 16);
    assert.deepEqual(seqs(log.events), seqs(all.events));
    assert.equal(sub.lastSeq, all.events.at(-1).seq);
    assert.ok(log.statuses.filter((s) => s.state === "reconnecting").length >= 4);
  });

  for (const signal of ["SIGKILL", "SIGTERM"]) {
    test(`${transport}: resumes across a hub restart (${signal}), nothing lost or doubled`, async (t) => {
      let hub = await startHub();
      const { dir, port } = hub;
      t.after(() => hub.stop());
      // The proxy stays closed from the kill until the new hub has the events: the client
      // cannot be back before they are published.
      const p = await proxy(port);
      t.after(() => p.close());
      const sub = connect({ url: p.url, transport, backoff: { initial: 50, max: 200 } });
      t.after(() => sub.close());
      const log = record(sub);
      await waitFor(sub, "open");
      for (let i = 0; i < 5; i++) await publish({ url: hub.url }, { type: "before", data: { i } });
      const before = await take(sub, 5);
      await hub.kill(signal);
      await p.cut();
      await waitFor(sub, "reconnecting");
      hub = await startHub({}, { dir, port });
      for (let i = 0; i < 20; i++) await publish({ url: hub.url }, { type: "after", data: { i } });
      assert.notEqual(sub.status, "open", "the events were published while the client was away");
      await p.restore();
      const after = await take(sub, 20);
      assert.deepEqual(after.map((e) => e.data.i), Array.from({ length: 20 }, (_, i) => i));
      assert.ok(after.every((e) => e.type === "after"));
      assert.ok(after[0].seq > before.at(-1).seq && ascending(seqs(after)));
      await publish({ url: hub.url }, { type: "marker" });
      assert.equal((await take(sub, 1))[0].type, "marker");
      const all = await history({ url: hub.url }, { limit: 1000 });
      assert.deepEqual(seqs(log.events), seqs(all.events));
    });
  }
}

// ---------------------------------------------------------------------------------------
// Credentials: refresh on reconnect, on an open WebSocket, at an SSE stream's expiry; refusals.

for (const transport of TRANSPORTS) {
  test(`${transport}: the token callback runs on every (re)connect`, async (t) => {
    const hub = await startHub({ CRIER_AUTH_JWT_SECRET: SECRET });
    t.after(() => hub.stop());
    const p = await proxy(hub.port);
    t.after(() => p.close());
    const issued = [];
    const sub = connect({
      url: p.url,
      transport,
      backoff: { initial: 50 },
      token: async () => {
        await delay(5);
        issued.push(jwt({ sub: `reader-${issued.length}`, tenant: "acme" }));
        return issued.at(-1);
      },
    });
    t.after(() => sub.close());
    await waitFor(sub, "open");
    assert.equal(issued.length, 1);
    for (let i = 0; i < 2; i++) {
      await p.cut();
      await waitFor(sub, "reconnecting");
      await p.restore();
      await waitFor(sub, "open");
    }
    assert.equal(issued.length, 3, "one fresh token per connection");
    const writer = jwt({ sub: "w", tenant: "acme", role: "publisher" });
    await publish({ url: hub.url, token: writer }, { type: "after.refresh" });
    assert.equal((await take(sub, 1))[0].type, "after.refresh");
    // Another tenant's events never arrive.
    await publish({ url: hub.url, token: jwt({ sub: "w", tenant: "other", role: "publisher" }) }, { type: "other.tenant" });
    await publish({ url: hub.url, token: writer }, { type: "mine" });
    assert.equal((await take(sub, 1))[0].type, "mine");
  });

  test(`${transport}: refusals close with a CrierError: 401, 401 after a refresh, 403, 400`, async (t) => {
    const hub = await startHub({ CRIER_AUTH_JWT_SECRET: SECRET });
    t.after(() => hub.stop());
    const reader = jwt({ sub: "r", tenant: "acme" });

    // A bad static token: closed at once, no retry.
    const bad = connect({ url: hub.url, transport, token: "not-a-token", backoff: { initial: 20 } });
    t.after(() => bad.close());
    const badLog = record(bad);
    await rejectsWith(bad[Symbol.asyncIterator]().next(), { status: 401, code: "unauthorized" });
    assert.equal(bad.status, "closed");
    assert.ok(!badLog.statuses.some((s) => s.state === "reconnecting"));
    assert.equal(badLog.errors.length, 1);
    assert.equal(badLog.statuses.at(-1).error, badLog.errors[0]);

    // A callback that keeps giving expired tokens: asked twice, then closed.
    let calls = 0;
    const stale = connect({
      url: hub.url,
      transport,
      backoff: { initial: 20 },
      token: () => (calls++, jwt({ sub: "r", tenant: "acme" }, -60)),
    });
    t.after(() => stale.close());
    await rejectsWith(stale[Symbol.asyncIterator]().next(), { status: 401 });
    assert.equal(calls, 2);

    // Another tenant's events: 403.
    const other = connect({ url: hub.url, transport, token: reader, tenant: "other" });
    t.after(() => other.close());
    await rejectsWith(other[Symbol.asyncIterator]().next(), { status: 403, code: "forbidden" });

    // A bad filter value: 400, not a retry loop.
    const badFilter = connect({ url: hub.url, transport, token: reader, filter: { severity: "loud" } });
    t.after(() => badFilter.close());
    await rejectsWith(badFilter[Symbol.asyncIterator]().next(), { status: 400 });
    assert.ok(badFilter.error instanceof CrierError);
  });
}

test("ws: the credential is refreshed on the open connection before it expires", async (t) => {
  const hub = await startHub({ CRIER_AUTH_JWT_SECRET: SECRET });
  t.after(() => hub.stop());
  let calls = 0;
  let firstExpiry;
  const sub = connect({
    url: hub.url,
    transport: "ws",
    token: () => {
      calls++;
      const tok = jwt({ sub: "r", tenant: "acme" }, 2);
      firstExpiry ??= JSON.parse(Buffer.from(tok.split(".")[1], "base64url")).exp;
      return tok;
    },
  });
  t.after(() => sub.close());
  const log = record(sub);
  await waitFor(sub, "open");
  // The client refreshes, then the first token's expiry passes (by the clock, as the hub sees it).
  for (const deadline = Date.now() + 10_000; calls < 2; await delay(20)) {
    assert.ok(Date.now() < deadline, "the token was never refreshed");
  }
  while (Date.now() < firstExpiry * 1000 + 1200) await delay(firstExpiry * 1000 + 1200 - Date.now());
  const writer = jwt({ sub: "w", tenant: "acme", role: "publisher" });
  await publish({ url: hub.url, token: writer }, { type: "still.here" });
  assert.equal((await take(sub, 1))[0].type, "still.here");
  assert.ok(calls >= 2, `refreshed (${calls} tokens)`);
  assert.deepEqual(log.statuses.map((s) => s.state), ["connecting", "open"], "the same connection throughout");
});

test("sse: when the stream ends at the token's expiry it reconnects at once with a fresh one", async (t) => {
  const hub = await startHub({ CRIER_AUTH_JWT_SECRET: SECRET });
  t.after(() => hub.stop());
  let calls = 0;
  const sub = connect({
    url: hub.url,
    token: () => (calls++, jwt({ sub: "r", tenant: "acme" }, 2)),
    backoff: { initial: 5000 },
  });
  t.after(() => sub.close());
  const log = record(sub);
  await waitFor(sub, "open");
  const writer = jwt({ sub: "w", tenant: "acme", role: "publisher" });
  const published = [];
  for (let i = 0; i < 12; i++) {
    published.push((await publish({ url: hub.url, token: writer }, { type: "tick", data: { i } })).events[0].seq);
    await delay(250);
  }
  const got = await take(sub, 12);
  assert.deepEqual(seqs(got), published);
  const re = log.statuses.filter((s) => s.state === "reconnecting");
  assert.ok(re.length >= 1, "the stream ended at expiry");
  assert.ok(re.every((s) => s.retryInMs === 0), "and came back without the 5 s backoff");
  assert.ok(calls >= 2);
});

// ---------------------------------------------------------------------------------------
// Resets (§4) and control-message names.

for (const transport of TRANSPORTS) {
  test(`${transport}: crier.reset moves the cursor (unknown cursor, retention); clients cannot publish crier.reset`, async (t) => {
    const hub = await startHub({ CRIER_RETENTION_MAX_EVENTS: "5", CRIER_RETENTION_INTERVAL: "100ms" });
    t.after(() => hub.stop());
    const c = createClient({ url: hub.url });

    // A cursor above the head (the log was replaced): reset, then live from the head.
    const ahead = connect({ url: hub.url, transport, after: 1_000_000 });
    t.after(() => ahead.close());
    const aheadLog = record(ahead);
    await waitFor(ahead, "open");
    // The hub's own names are reserved (§12.11): a client cannot mimic a reset.
    await rejectsWith(c.publish({ type: "crier.reset", data: { reason: "retention", oldest: 999 } }), {
      status: 400,
      code: "reserved",
    });
    const r = await c.publish({ type: "after.reset", data: { reason: "retention", oldest: 999 } });
    const [e] = await take(ahead, 1);
    assert.equal(e.seq, r.events[0].seq);
    assert.equal(e.type, "after.reset", "the first live event after the reset");
    assert.equal(aheadLog.resets.length, 1);
    assert.equal(aheadLog.resets[0].reason, "unknown_cursor");
    assert.equal(typeof aheadLog.resets[0].head, "number");

    // Retention removed events after the cursor: reset, then from the oldest stored event.
    for (let i = 0; i < 15; i++) await c.publish({ type: "bulk", data: { i } });
    const deadline = Date.now() + 5000;
    let oldest;
    for (;;) {
      const page = await c.history({ limit: 100 });
      oldest = page.events[0].seq;
      if (page.events.length <= 5) break;
      assert.ok(Date.now() < deadline, "retention never pruned");
      await delay(50);
    }
    const old = connect({ url: hub.url, transport, after: 1 });
    t.after(() => old.close());
    const oldLog = record(old);
    const got = await take(old, 5);
    assert.equal(got[0].seq, oldest);
    assert.deepEqual(oldLog.resets, [{ reason: "retention", oldest }]);
    assert.equal(old.lastSeq, got.at(-1).seq);
  });
}

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
