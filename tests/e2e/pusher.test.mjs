// Pusher Channels compatibility driven by the real libraries: pusher-js as the subscriber and
// the `pusher` server SDK as the publisher, against this build's crier (or, with
// PUSHER_TARGET=sockudo and SOCKUDO_BIN, against Sockudo, to keep crier true to the protocol).
//
// Needs the crier binary in CRIER_BIN (the Rust test harness sets it).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { APP, TARGET, connected, pusherClient, serverSdk, startTarget, subscribed, until } from "./pusher-target.mjs";

if (typeof WebSocket === "undefined") {
  throw new Error("run with a Node that has WebSocket (node >= 22, or --experimental-websocket)");
}

let target;
let server;
const clients = [];

before(async () => {
  target = await startTarget();
  server = sdk(APP.secret);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await target?.stop();
});

function sdk(secret) {
  return serverSdk(target.port, { secret });
}

/** A connected pusher-js client whose authorizer signs with `secret` and `presence`. */
async function client({ secret = APP.secret, presence } = {}) {
  const signer = sdk(secret);
  const c = pusherClient(APP.key, target.port, (socketId, channelName) => {
    const member = channelName.startsWith("presence-") ? presence : undefined;
    return signer.authorizeChannel(socketId, channelName, member);
  });
  clients.push(c);
  await connected(c);
  return c;
}

/** Subscribes and waits for pusher:subscription_succeeded; resolves with its data. */
async function subscribe(c, name) {
  const ch = c.subscribe(name);
  return { ch, data: await subscribed(ch) };
}

/** The next `event` on `ch`. */
function next(ch, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    const fn = (data, meta) => {
      clearTimeout(t);
      ch.unbind(event, fn);
      resolve({ data, meta });
    };
    ch.bind(event, fn);
  });
}

/** A raw WebSocket to the Pusher endpoint, recording every frame. */
async function raw(key = APP.key, protocol = 7) {
  const ws = new WebSocket(`ws://127.0.0.1:${target.port}/app/${key}?protocol=${protocol}&client=js&version=8.4.0`);
  const frames = [];
  const closed = new Promise((r) => ws.addEventListener("close", (e) => r(e.code)));
  ws.addEventListener("message", (m) => frames.push(JSON.parse(m.data)));
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve);
    ws.addEventListener("error", reject);
  });
  const wait = (pred, what) => until(() => frames.find(pred), what);
  return { ws, frames, closed, wait };
}

test("public channel: an SDK trigger reaches pusher-js", async () => {
  const c = await client();
  const { ch } = await subscribe(c, "orders-public");
  const got = next(ch, "order-shipped");
  await server.trigger("orders-public", "order-shipped", { id: 7, items: ["a", "b"] });
  assert.deepEqual((await got).data, { id: 7, items: ["a", "b"] });
});

test("data strings arrive byte for byte", async () => {
  const r = await raw();
  const hello = await r.wait((f) => f.event === "pusher:connection_established", "established");
  const info = JSON.parse(hello.data);
  assert.match(info.socket_id, /^\d+\.\d+$/);
  assert.equal(typeof info.activity_timeout, "number");
  r.ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: "bytes" } }));
  await r.wait((f) => f.event === "pusher_internal:subscription_succeeded", "subscribed");
  const odd = ' {"b": 1, "a": [1.50, "x"]} ';
  await server.trigger("bytes", "raw-event", odd);
  await server.trigger("bytes", "raw-event", "plain text");
  const evs = await until(() => {
    const e = r.frames.filter((f) => f.event === "raw-event");
    return e.length === 2 && e;
  }, "two events");
  assert.equal(evs[0].data, odd);
  assert.equal(evs[0].channel, "bytes");
  assert.equal(evs[1].data, "plain text");
  r.ws.close();
});

test("private channel: a good signature subscribes, a bad one is refused and the connection stays usable", async () => {
  const good = await client();
  await subscribe(good, "private-ledger");
  const bad = await client({ secret: "not-the-secret-at-all" });
  const ch = bad.subscribe("private-ledger");
  const err = await next(ch, "pusher:subscription_error");
  assert.ok(err.data, "the error names the failure");
  // The same connection still subscribes to a public channel and receives on it.
  const { ch: pub } = await subscribe(bad, "after-refusal");
  const got = next(pub, "still-here");
  await server.trigger("after-refusal", "still-here", "yes");
  assert.equal((await got).data, "yes");
  assert.equal(bad.connection.state, "connected");
});

test("presence channel: members, member_added/removed, user count and users", async () => {
  const a = await client({ presence: { user_id: "alice", user_info: { name: "Alice" } } });
  const b = await client({ presence: { user_id: "bob", user_info: { name: "Bob" } } });
  const { ch: cha } = await subscribe(a, "presence-room");
  assert.equal(cha.members.count, 1);
  assert.equal(cha.members.me.id, "alice");
  const added = next(cha, "pusher:member_added");
  const { ch: chb } = await subscribe(b, "presence-room");
  assert.deepEqual((await added).data, { id: "bob", info: { name: "Bob" } });
  assert.equal(chb.members.count, 2);
  assert.deepEqual(chb.members.get("alice").info, { name: "Alice" });

  const info = await server.get({ path: "/channels/presence-room", params: { info: "user_count,subscription_count" } });
  assert.equal(info.status, 200);
  const body = await info.json();
  assert.equal(body.occupied, true);
  assert.equal(body.user_count, 2);
  const users = await (await server.get({ path: "/channels/presence-room/users" })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ["alice", "bob"]);
  const list = await (await server.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })).json();
  assert.equal(list.channels["presence-room"].user_count, 2);

  const removed = next(cha, "pusher:member_removed");
  b.unsubscribe("presence-room");
  assert.equal((await removed).data.id, "bob");
  const left = await until(async () => {
    const u = await (await server.get({ path: "/channels/presence-room/users" })).json();
    return u.users.length === 1 && u;
  }, "bob to leave");
  assert.equal(left.users[0].id, "alice");
});

test("client events reach the others, never the sender; presence ones carry user_id", async () => {
  const a = await client({ presence: { user_id: "u-a" } });
  const b = await client({ presence: { user_id: "u-b" } });
  const { ch: pa } = await subscribe(a, "private-chat");
  const { ch: pb } = await subscribe(b, "private-chat");
  let echoed = 0;
  pa.bind("client-typing", () => echoed++);
  const got = next(pb, "client-typing");
  pa.trigger("client-typing", { who: "a" });
  assert.deepEqual((await got).data, { who: "a" });

  const { ch: qa } = await subscribe(a, "presence-chat");
  const { ch: qb } = await subscribe(b, "presence-chat");
  const got2 = next(qb, "client-wave");
  qa.bind("client-wave", () => echoed++);
  qa.trigger("client-wave", { hi: 1 });
  const w = await got2;
  assert.deepEqual(w.data, { hi: 1 });
  assert.equal(w.meta?.user_id, "u-a");
  // A later server event on the same channels arrives after anything echoed would have.
  const sync = next(pa, "sync");
  await server.trigger("private-chat", "sync", "1");
  await sync;
  assert.equal(echoed, 0, "the sender never gets its own client event");
});

test("socket_id exclusion", async () => {
  const a = await client();
  const b = await client();
  const { ch: ca } = await subscribe(a, "excluding");
  const { ch: cb } = await subscribe(b, "excluding");
  let aGot = 0;
  ca.bind("only-b", () => aGot++);
  const got = next(cb, "only-b");
  await server.trigger("excluding", "only-b", "x", { socket_id: a.connection.socket_id });
  await got;
  const sync = next(ca, "sync");
  await server.trigger("excluding", "sync", "1");
  await sync;
  assert.equal(aGot, 0);
});

test("batch trigger and channel counts", async () => {
  const c = await client();
  const { ch } = await subscribe(c, "batch-a");
  const seen = [];
  ch.bind("b1", (d) => seen.push(d));
  ch.bind("b2", (d) => seen.push(d));
  const res = await server.triggerBatch([
    { channel: "batch-a", name: "b1", data: "1" },
    { channel: "batch-a", name: "b2", data: "2" },
  ]);
  assert.equal(res.status, 200);
  await until(() => seen.length === 2, "both batch events");
  assert.deepEqual(seen, [1, 2]);
  const info = await (await server.get({ path: "/channels/batch-a", params: { info: "subscription_count" } })).json();
  assert.equal(info.occupied, true);
  assert.equal(info.subscription_count, 1);
  const none = await (await server.get({ path: "/channels/nobody-here" })).json();
  assert.equal(none.occupied, false);
});

test("a bad HTTP signature is 401", async () => {
  const wrong = sdk("a-different-secret-entirely");
  await assert.rejects(
    () => wrong.trigger("any", "ev", "x"),
    (e) => e.status === 401,
  );
  const stale = await fetch(`${target.url}/apps/${APP.id}/channels?auth_key=${APP.key}&auth_timestamp=1&auth_version=1.0&auth_signature=00`);
  assert.equal(stale.status, 401);
});

test("too many channels, too big a batch and bad names are 400", async () => {
  // The SDK refuses these itself; its signed `post` sends them anyway.
  const channels = Array.from({ length: 101 }, (_, i) => `c${i}`);
  const refused = async (path, body) => {
    await assert.rejects(() => server.post({ path, body }), (e) => e.status === 400);
  };
  await refused("/events", { name: "ev", data: "x", channels });
  await refused("/events", { name: "ev", data: "x", channel: "bad channel!" });
  await refused("/events", { name: "", data: "x", channel: "ok" });
  const batch = Array.from({ length: 11 }, () => ({ name: "ev", data: "x", channel: "ok" }));
  await refused("/batch_events", { batch });
  const ok = await server.post({ path: "/events", body: { name: "ev", data: "x", channels: channels.slice(0, 100) } });
  assert.equal(ok.status, 200);
});

test("an unknown app key gets pusher:error 4001 and a 4001 close", { skip: TARGET === "sockudo" && "Sockudo drops an unknown key without pusher:error" }, async () => {
  const r = await raw("no-such-key");
  const e = await r.wait((f) => f.event === "pusher:error", "pusher:error");
  assert.equal(e.data.code, 4001);
  assert.equal(await r.closed, 4001);
});

test("an unsupported protocol gets 4007", async () => {
  const r = await raw(APP.key, 3);
  assert.equal(await r.closed, 4007);
});

test("an SDK trigger is a crier event in /v1/events", { skip: TARGET !== "crier" && "crier only" }, async () => {
  await server.trigger("ledger", "App\\Events\\OrderShipped", JSON.stringify({ order: 9 }));
  const found = await until(async () => {
    const r = await fetch(`${target.url}/v1/events?source=pusher&limit=1000`);
    const body = await r.json();
    return body.events.find((e) => e.subject === "ledger");
  }, "the event in history");
  assert.equal(found.source, "pusher");
  assert.equal(found.type, "pusher.event");
  assert.equal(found.metadata.pusher_event, "App\\Events\\OrderShipped");
  assert.deepEqual(found.data, { order: 9 });
  assert.equal(found.actor, `pusher:${APP.id}`);
});

test("a native publish reaches pusher-js", { skip: TARGET !== "crier" && "crier only" }, async () => {
  const c = await client();
  const { ch } = await subscribe(c, "native-orders");
  const got = next(ch, "order.paid");
  const r = await fetch(`${target.url}/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "order.paid", subject: "native-orders", data: { total: 12 } }),
  });
  assert.equal(r.status, 201);
  assert.deepEqual((await got).data, { total: 12 });
});

test("bad frames get pusher:error and the connection lives", async () => {
  const r = await raw();
  await r.wait((f) => f.event === "pusher:connection_established", "established");
  r.ws.send("not json");
  r.ws.send(JSON.stringify({ data: 1 }));
  r.ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: "bad name!" } }));
  r.ws.send(JSON.stringify({ event: "pusher:ping", data: {} }));
  await r.wait((f) => f.event === "pusher:pong", "pong");
  assert.ok(r.frames.some((f) => f.event === "pusher:error"));
  r.ws.close();
});

test("webhooks arrive signed: occupied, member added/removed, client event, vacated", async () => {
  const got = [];
  let bad = 0;
  let refusals = 0;
  const hookServer = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      // The first delivery fails: it must be retried, not lost.
      if (refusals++ === 0) return res.writeHead(503).end();
      const hook = server.webhook({ headers: req.headers, rawBody: body });
      if (hook.isValid()) got.push(...hook.getEvents());
      else bad++;
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => hookServer.listen(0, "127.0.0.1", r));
  const hookUrl = `http://127.0.0.1:${hookServer.address().port}/pusher`;
  const own = await startTarget({ webhooks: [hookUrl] });
  const saved = target;
  target = own;
  try {
    const a = await client({ presence: { user_id: "hook-a" } });
    const b = await client({ presence: { user_id: "hook-b" } });
    const { ch } = await subscribe(a, "presence-hooked");
    await subscribe(b, "presence-hooked");
    ch.trigger("client-hello", { x: 1 });
    await until(() => got.some((e) => e.name === "client_event"), "client_event webhook");
    a.disconnect();
    b.disconnect();
    await until(() => got.some((e) => e.name === "channel_vacated"), "channel_vacated webhook");
    const names = got.map((e) => e.name);
    assert.equal(names[0], "channel_occupied", "the refused first delivery was retried");
    assert.ok(names.includes("member_added"));
    assert.ok(names.includes("member_removed"));
    const ce = got.find((e) => e.name === "client_event");
    assert.equal(ce.channel, "presence-hooked");
    assert.equal(ce.event, "client-hello");
    assert.deepEqual(JSON.parse(ce.data), { x: 1 });
    assert.equal(ce.user_id, "hook-a");
    assert.equal(bad, 0, "every webhook is signed with the app secret");
    // A forged body fails the same check the receiver uses.
    const forged = server.webhook({
      headers: { "x-pusher-key": APP.key, "x-pusher-signature": "00" },
      rawBody: JSON.stringify({ time_ms: 1, events: [] }),
    });
    assert.equal(forged.isValid(), false);
  } finally {
    target = saved;
    await own.stop();
    hookServer.close();
  }
});

test("over max_connections_per_tenant a Pusher connection gets 4100; metrics carry transport=pusher", { skip: TARGET !== "crier" && "crier's own limit" }, async () => {
  const own = await startTarget({ env: { CRIER_LIMITS_MAX_CONNECTIONS_PER_TENANT: "2" } });
  const saved = target;
  target = own;
  try {
    const a = await raw();
    const b = await raw();
    await a.wait((f) => f.event === "pusher:connection_established", "first");
    await b.wait((f) => f.event === "pusher:connection_established", "second");
    const c = await raw();
    const e = await c.wait((f) => f.event === "pusher:error", "pusher:error");
    assert.equal(e.data.code, 4100);
    assert.equal(await c.closed, 4100);
    const metrics = await (await fetch(`${own.url}/metrics`)).text();
    const line = metrics.split("\n").find((l) => l.startsWith("crier_connections{") && l.includes('transport="pusher"'));
    assert.ok(line, "crier_connections has a pusher series");
    assert.equal(Number(line.trim().split(" ").pop()), 2);
    a.ws.close();
    b.ws.close();
  } finally {
    target = saved;
    await own.stop();
  }
});

test("the server pings after activity_timeout of silence", { skip: TARGET !== "crier" && "needs a short activity_timeout" }, async () => {
  const apps = `[{id="${APP.id}", key="${APP.key}", secret="${APP.secret}", tenant="default", activity_timeout=1}]`;
  const own = await startTarget({ env: { CRIER_PUSHER_APPS: apps } });
  const saved = target;
  target = own;
  try {
    const r = await raw();
    const hello = await r.wait((f) => f.event === "pusher:connection_established", "established");
    assert.equal(JSON.parse(hello.data).activity_timeout, 1);
    await r.wait((f) => f.event === "pusher:ping", "the server's ping");
    r.ws.send(JSON.stringify({ event: "pusher:pong", data: {} }));
    // Answered: the connection lives on and pings again after the next silence.
    await until(() => r.frames.filter((f) => f.event === "pusher:ping").length >= 2, "a second ping");
    assert.equal(r.ws.readyState, WebSocket.OPEN);
    r.ws.close();
  } finally {
    target = saved;
    await own.stop();
  }
});

test("client events past 10 per second get 4301; the connection lives", { skip: TARGET !== "crier" && "the Sockudo app here allows 100 per second" }, async () => {
  const r = await raw();
  const hello = await r.wait((f) => f.event === "pusher:connection_established", "established");
  const socketId = JSON.parse(hello.data).socket_id;
  const { auth } = server.authorizeChannel(socketId, "private-burst");
  r.ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: "private-burst", auth } }));
  await r.wait((f) => f.event === "pusher_internal:subscription_succeeded", "subscribed");
  for (let i = 0; i < 15; i++) {
    r.ws.send(JSON.stringify({ event: "client-burst", channel: "private-burst", data: { i } }));
  }
  const e = await r.wait((f) => f.event === "pusher:error" && f.data.code === 4301, "4301");
  assert.match(e.data.message, /rate limit/);
  r.ws.send(JSON.stringify({ event: "pusher:ping", data: {} }));
  await r.wait((f) => f.event === "pusher:pong", "pong after the refusal");
  r.ws.close();
});
