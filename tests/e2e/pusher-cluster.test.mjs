// Pusher presence across the nodes of a cluster, driven by the real pusher-js and the `pusher`
// server SDK: two crier processes share one PostgreSQL log and fan out through NATS or Redis
// (each broker in PRESENCE_BROKERS, space-separated). A member joining on one node is seen on
// the other (member_added, the users API, user_count), a user connected to both nodes counts
// once, leaving is seen, and after kill -9 of a node its members leave on the other within 30 s,
// reported once to the app's webhooks.
//
// Needs CRIER_BIN, CRIER_TEST_POSTGRES, PRESENCE_BROKERS and PRESENCE_SCHEMA (a prefix of the
// PostgreSQL schemas used, which the Rust harness drops afterwards).

import { rmSync } from "node:fs";
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startHub } from "./hub.mjs";
import { APP, connected, pusherClient, serverSdk, subscribed, until } from "./pusher-target.mjs";

if (typeof WebSocket === "undefined") {
  throw new Error("run with a Node that has WebSocket (node >= 22, or --experimental-websocket)");
}

const PG = process.env.CRIER_TEST_POSTGRES;
const BROKERS = (process.env.PRESENCE_BROKERS ?? "").split(/\s+/).filter(Boolean);
const SCHEMA = process.env.PRESENCE_SCHEMA;
if (!PG || !SCHEMA || BROKERS.length === 0) {
  throw new Error("CRIER_TEST_POSTGRES, PRESENCE_SCHEMA and PRESENCE_BROKERS must be set");
}

const clients = [];
const hubs = [];

after(async () => {
  for (const c of clients) c.disconnect();
  for (const h of hubs) {
    await h.kill();
    rmSync(h.dir, { recursive: true, force: true });
  }
});

/** A hub node of the cluster over `schema` and `broker`, ready with its broker up. */
async function node(id, schema, broker, hook) {
  const apps = `[{id="${APP.id}", key="${APP.key}", secret="${APP.secret}", tenant="default", webhooks=["${hook}"]}]`;
  const hub = await startHub({
    CRIER_STORE: PG,
    CRIER_STORE_SCHEMA: schema,
    CRIER_BROKER: broker,
    CRIER_NODE_ID: id,
    CRIER_PUSHER_APPS: apps,
    CRIER_WEBHOOKS_ALLOW_PRIVATE: "true",
    CRIER_WEBHOOKS_BACKOFF: '["100ms", "200ms"]',
  });
  hubs.push(hub);
  await until(async () => {
    try {
      const r = await (await fetch(`${hub.url}/readyz`)).json();
      return r.broker === "ok";
    } catch {
      return false;
    }
  }, `node ${id} to be ready with its broker`, 20_000);
  hub.sdk = serverSdk(hub.port);
  return hub;
}

/** A pusher-js client of `hub`, present as `user_id`. */
async function client(hub, user_id) {
  const c = pusherClient(APP.key, hub.port, (socketId, channelName) => {
    const member = { user_id, user_info: { name: user_id.toUpperCase() } };
    return hub.sdk.authorizeChannel(socketId, channelName, member);
  });
  clients.push(c);
  await connected(c);
  return c;
}

/** Subscribes to a presence channel, recording member events; resolves once subscribed. */
function join(c, name) {
  const ch = c.subscribe(name);
  const events = [];
  ch.bind("pusher:member_added", (m) => events.push({ added: m.id, info: m.info, at: Date.now() }));
  ch.bind("pusher:member_removed", (m) => events.push({ removed: m.id, at: Date.now() }));
  return subscribed(ch).then((members) => ({ ch, members, events }));
}

async function users(hub, channel) {
  const r = await hub.sdk.get({ path: `/channels/${channel}/users` });
  return (await r.json()).users.map((u) => u.id).sort();
}

async function userCount(hub, channel) {
  const r = await hub.sdk.get({ path: `/channels/${channel}`, params: { info: "user_count" } });
  return (await r.json()).user_count;
}

/** Waits until the users API of `hub` lists exactly `want`. */
async function usersAre(hub, channel, want, what, ms = 10_000) {
  await until(async () => JSON.stringify(await users(hub, channel)) === JSON.stringify(want), what, ms);
}

/** A webhook receiver collecting Pusher webhook events. */
async function receiver() {
  const got = [];
  const srv = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      try {
        got.push(...JSON.parse(body).events);
      } catch {
        // not a webhook body
      }
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  return { got, url: `http://127.0.0.1:${srv.address().port}/hook`, close: () => srv.close() };
}

for (const broker of BROKERS) {
  const scheme = broker.split(":")[0];
  test(`presence across two nodes over PostgreSQL + ${scheme}, and kill -9 of one`, async () => {
    const schema = `${SCHEMA}_${scheme}`;
    const hooks = await receiver();
    try {
      const a = await node(`pa-${scheme}`, schema, broker, hooks.url);
      const b = await node(`pb-${scheme}`, schema, broker, hooks.url);
      const room = "presence-room";

      // bob on B; A learns of him.
      const bob = await join(await client(b, "bob"), room);
      assert.deepEqual(Object.keys(bob.members.members), ["bob"]);
      await usersAre(a, room, ["bob"], "A to list bob, who is on B");
      assert.equal(await userCount(a, room), 1);

      // alice on A: her member list has bob; bob on B sees her join.
      const aliceClient = await client(a, "alice");
      const alice = await join(aliceClient, room);
      assert.deepEqual(Object.keys(alice.members.members).sort(), ["alice", "bob"]);
      assert.deepEqual(alice.members.get("bob"), { id: "bob", info: { name: "BOB" } });
      await until(() => bob.events.find((e) => e.added === "alice"), "member_added of alice on B");
      assert.deepEqual(bob.events.find((e) => e.added === "alice").info, { name: "ALICE" });
      await usersAre(b, room, ["alice", "bob"], "B to list alice and bob");
      assert.equal(await userCount(b, room), 2);
      const list = await (await b.sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })).json();
      assert.equal(list.channels[room].user_count, 2);

      // carol on both nodes counts once; leaving one node keeps her present.
      const carolA = await client(a, "carol");
      await join(carolA, room);
      await join(await client(b, "carol"), room);
      await usersAre(b, room, ["alice", "bob", "carol"], "B to list carol once");
      await usersAre(a, room, ["alice", "bob", "carol"], "A to list carol once");
      assert.equal(await userCount(b, room), 3);
      assert.equal(bob.events.filter((e) => e.added === "carol").length, 1, "one member_added for carol");
      carolA.unsubscribe(room);

      // alice leaves A: bob sees it. Signals from A arrive in order, so carol's leave on A
      // was seen by B before alice's.
      aliceClient.unsubscribe(room);
      await until(() => bob.events.find((e) => e.removed === "alice"), "member_removed of alice on B");
      assert.equal(bob.events.filter((e) => e.removed === "carol").length, 0, "carol is still on B");
      await usersAre(b, room, ["bob", "carol"], "B to list bob and carol");
      await until(
        () => hooks.got.find((e) => e.name === "member_removed" && e.user_id === "alice"),
        "the member_removed webhook of alice",
      );

      // dave on A, then A is killed: dave leaves on B within 30 s.
      const daveClient = await client(a, "dave");
      await join(daveClient, room);
      await until(() => bob.events.find((e) => e.added === "dave"), "member_added of dave on B");
      await usersAre(b, room, ["bob", "carol", "dave"], "B to list dave");
      const killed = Date.now();
      await a.kill();
      daveClient.disconnect();
      await until(() => bob.events.find((e) => e.removed === "dave"), "member_removed of dave on B after kill -9 of A", 35_000);
      const left = bob.events.find((e) => e.removed === "dave").at - killed;
      console.log(`over ${scheme}: the killed node's members left after ${left} ms`);
      assert.ok(left <= 30_000, `the killed node's members left after ${left} ms`);
      await usersAre(b, room, ["bob", "carol"], "B to list bob and carol after the kill");
      assert.equal(await userCount(b, room), 2);
      // The surviving node holds the lease and reports dave's departure to the app's webhook.
      await until(
        () => hooks.got.find((e) => e.name === "member_removed" && e.user_id === "dave"),
        "the member_removed webhook of dave",
        15_000,
      );
      assert.equal(hooks.got.filter((e) => e.name === "member_added" && e.user_id === "alice").length, 1);
      assert.equal(hooks.got.filter((e) => e.name === "member_removed" && e.user_id === "alice").length, 1);
      assert.equal(hooks.got.filter((e) => e.name === "member_removed" && e.user_id === "dave").length, 1);
    } finally {
      hooks.close();
    }
  });
}
