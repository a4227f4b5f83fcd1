// The JavaScript client's live subscriptions against real hubs (the `crier` binary named by
// CRIER_BIN), over SSE and WebSocket: delivery with filters and start positions, resume after
// a cut connection and across hub restarts with nothing lost or doubled, token refresh,
// refusals and resets.

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, createClient, publish, history, CrierError } from "../crier.js";
import { SECRET, TRANSPORTS, startHub, jwt, delay, proxy, take, waitFor, record, rejectsWith, seqs, ascending } from "./helpers.js";

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
