// The GraphQL subscription driven by the real `graphql-ws` client library: entity changes
// made through GraphQL and REST arrive in seq order, and a new client resumes with `after`,
// receiving exactly what it missed.
//
// Needs the crier binary in CRIER_BIN (the Rust test harness sets it).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "graphql-ws";
import { hubFor, token } from "./hub.mjs";

if (typeof WebSocket === "undefined") {
  throw new Error("run with a Node that has WebSocket (node >= 22, or --experimental-websocket)");
}

const SECRET = "graphql-ws-secret-of-at-least-32-chars";

async function gql(hub, tok, query, variables = {}) {
  const res = await fetch(`${hub.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${tok}` },
    body: JSON.stringify({ query, variables }),
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

const SUBSCRIPTION = `subscription($after: Seq) {
  events(filter: { type: ["site.*", "link.*"] }, after: $after) { seq type subject actor data }
}`;

/** Waits until the hub's `crier_live_cursors` gauge (in /metrics) reads `n`. */
async function liveCursors(hub, admin, n, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let line;
  for (;;) {
    const res = await fetch(`${hub.url}/metrics`, { headers: { authorization: `Bearer ${admin}` } });
    assert.equal(res.status, 200);
    // `crier_live_cursors{node_id="..."} 1`
    line = (await res.text()).split("\n").find((l) => /^crier_live_cursors[{ ]/.test(l));
    if (line && Number(line.split(" ").at(-1)) === n) return;
    if (Date.now() > deadline) assert.fail(`the hub reports ${JSON.stringify(line)}, not ${n} live cursors`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Collects events from a graphql-ws subscription until `n` arrived. */
function collect(client, variables, n) {
  const events = [];
  let done;
  const finished = new Promise((resolve, reject) => {
    done = { resolve, reject };
  });
  const stop = client.subscribe(
    { query: SUBSCRIPTION, variables },
    {
      next: (msg) => {
        if (msg.errors) return done.reject(new Error(JSON.stringify(msg.errors)));
        events.push(msg.data.events);
        if (events.length === n) done.resolve(events);
      },
      error: (e) =>
        done.reject(
          e instanceof Error
            ? e
            : e && "code" in e
              ? new Error(`closed ${e.code}: ${e.reason}`)
              : new Error(JSON.stringify(e)),
        ),
      complete: () => {},
    },
  );
  const timer = setTimeout(() => done.reject(new Error(`only ${events.length} of ${n} events`)), 10_000);
  return finished.finally(() => {
    clearTimeout(timer);
    stop();
  });
}

test("graphql-ws receives mutations in order and resumes with after", async (t) => {
  const hub = await hubFor(t, { CRIER_AUTH_JWT_SECRET: SECRET });
  const writer = token(SECRET, { tenant: "acme", role: "publisher", sub: "writer@acme" });
  const reader = token(SECRET, { tenant: "acme", role: "subscriber", sub: "reader@acme" });
  let acks = 0;
  const client = createClient({
    url: `${hub.url.replace("http", "ws")}/graphql`,
    connectionParams: { token: reader },
    on: { connected: () => acks++ },
    retryAttempts: 0,
  });

  // Live: subscribe first, then change things through GraphQL and REST.
  const live = collect(client, {}, 6);
  // A live subscription starts at the head it opens at: publish only once the hub has it.
  await liveCursors(hub, token(SECRET, { tenant: "acme", role: "admin", sub: "ops@acme" }), 1);
  await gql(hub, writer, `mutation { putEntity(kind: "site", id: "nyc", value: {name: "NYC"}) { version } }`);
  await gql(hub, writer, `mutation($p: JSON!) { patchEntity(kind: "site", id: "nyc", patch: $p, ifMatch: 1) { version } }`, {
    p: { floors: 3 },
  });
  const rest = await fetch(`${hub.url}/v1/entities/site/sfo`, {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: `Bearer ${writer}` },
    body: JSON.stringify({ name: "SFO" }),
  });
  assert.equal(rest.status, 201);
  await gql(hub, writer, `mutation { link(type: "peer", source: "site/nyc", target: "site/sfo") { type } }`);
  await gql(hub, writer, `mutation { putEntity(kind: "user", id: "u1", value: {}) { version } }`); // filtered out
  await gql(hub, writer, `mutation { deleteEntity(kind: "site", id: "sfo") }`); // link.deleted + site.deleted
  const got = await live;
  assert.deepEqual(
    got.map((e) => e.type),
    ["site.created", "site.updated", "site.created", "link.created", "link.deleted", "site.deleted"],
  );
  for (let i = 1; i < got.length; i++) assert.ok(got[i].seq > got[i - 1].seq, "seq order");
  assert.equal(typeof got[0].seq, "number", "Seq is a JSON number");
  assert.deepEqual(got[1].data.changed, ["floors"]);
  assert.equal(got[1].data.previous_version, 1);
  assert.equal(got[0].actor, "writer@acme");
  await client.dispose();

  // While nobody listens, more changes; a new client resumes after the last seq it saw.
  const last = got.at(-1).seq;
  for (let i = 0; i < 5; i++) {
    await gql(hub, writer, `mutation($v: JSON!) { putEntity(kind: "site", id: "nyc", value: $v) { version } }`, {
      v: { name: "NYC", round: i },
    });
  }
  const again = createClient({
    url: `${hub.url.replace("http", "ws")}/graphql`,
    connectionParams: { token: reader },
    retryAttempts: 0,
  });
  t.after(() => again.dispose());
  const resumed = await collect(again, { after: last }, 5);
  assert.deepEqual(
    resumed.map((e) => e.data.version),
    [3, 4, 5, 6, 7],
  );
  assert.ok(resumed.every((e) => e.seq > last && e.type === "site.updated"));
  // The same from the history query: nothing doubled, nothing missing.
  const hist = await gql(hub, reader, `query($a: Seq) { events(filter: {type: ["site.*"]}, after: $a) { seq } }`, { a: last });
  assert.deepEqual(
    hist.events.map((e) => e.seq),
    resumed.map((e) => e.seq),
  );
  assert.equal(acks, 1);
});

test("graphql-ws without a valid token is refused", async (t) => {
  const hub = await hubFor(t, { CRIER_AUTH_JWT_SECRET: SECRET });
  const client = createClient({
    url: `${hub.url.replace("http", "ws")}/graphql`,
    connectionParams: { token: "not-a-token" },
    retryAttempts: 0,
  });
  t.after(() => client.dispose());
  await assert.rejects(collect(client, {}, 1), (e) => {
    assert.match(e.message, /^closed 1002: .*token/);
    return true;
  });
});
