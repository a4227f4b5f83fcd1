// The dashboard in headless Chromium (Debian's, driven by playwright-core) against the real
// binary: live events, filters, pause/resume, a hub restart, replay, webhook subscriptions,
// sign-in, 10k events in a virtualised list, export, the connections page with a pusher-js
// presence member. A full-page screenshot of every page (light, dark and phone-sized) is kept
// under $SCREENSHOT_DIR.
//
// Needs the crier binary in CRIER_BIN and Chromium at /usr/bin/chromium (or CRIER_CHROMIUM).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { hubFor, startHub, token } from "./hub.mjs";
import { pusherClient, serverSdk, subscribed } from "./pusher-target.mjs";

const SHOTS = process.env.SCREENSHOT_DIR ?? fileURLToPath(new URL("../../target/screenshots", import.meta.url));
const CHROMIUM = process.env.CRIER_CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(SHOTS, { recursive: true });

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

const LAPTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

async function openPage(hub, path = "/", { viewport = LAPTOP, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    // A refused connection while the hub is down is logged by the browser itself.
    if (m.type() === "error" && !/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE/.test(m.text())) errors.push(m.text());
  });
  await page.goto(hub.url + path);
  return { page, context, errors };
}

/** {@link openPage} for test `t`, its browser context closed after the test. */
async function pageFor(t, ...args) {
  const opened = await openPage(...args);
  t.after(() => opened.context.close());
  return opened;
}

async function post(hub, events, tok) {
  const res = await fetch(`${hub.url}/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(tok ? { authorization: `Bearer ${tok}` } : {}) },
    body: JSON.stringify(events),
  });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return JSON.parse(text).events.map((e) => e.seq);
}

/** Waits until the monitor's counter reads exactly `text` ("5 events", "1 of 5 events"). */
async function count(page, text, timeout = 5000) {
  try {
    await page.waitForFunction((t) => document.querySelector("#count")?.textContent === t, text, { timeout });
  } catch {
    const now = await page.locator("#count").textContent();
    assert.fail(`the counter reads ${JSON.stringify(now)}, not ${JSON.stringify(text)}`);
  }
}

/** The id of the stream the monitor's rows belong to (bumped whenever it re-subscribes). */
async function streamId(page) {
  return Number(await page.locator("#list").getAttribute("data-stream"));
}

/**
 * Waits until the monitor shows a stream newer than `after`, over `transport`, whose rows have
 * exactly the types `types` and whose counter agrees. The rows, the counter and the stream id
 * are drawn in one frame, so a list still showing the stream before the action never passes.
 */
async function streamShows(page, { after, transport, types }, timeout = 10_000) {
  const want = { after, transport, types: [...types].sort(), text: `${types.length} events` };
  try {
    await page.waitForFunction(
      (w) => {
        const list = document.querySelector("#list");
        if (!(Number(list?.dataset.stream) > w.after) || list.dataset.transport !== w.transport) return false;
        if (document.querySelector("#count")?.textContent !== w.text) return false;
        const got = [...list.querySelectorAll(".row .c-type")].map((n) => n.textContent).sort();
        return JSON.stringify(got) === JSON.stringify(w.types);
      },
      want,
      { timeout },
    );
  } catch {
    const now = await page.evaluate(() => ({
      stream: document.querySelector("#list")?.dataset.stream,
      transport: document.querySelector("#list")?.dataset.transport,
      count: document.querySelector("#count")?.textContent,
      types: [...document.querySelectorAll("#list .row .c-type")].map((n) => n.textContent).sort(),
    }));
    assert.fail(`wanted a stream after #${after} over ${transport} showing ${JSON.stringify(want.types)}; the monitor shows ${JSON.stringify(now)}`);
  }
}

/** Waits until the hub counts exactly these open streams ({sse, ws}) in /v1/stats. */
async function hubStreams(hub, want, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    const res = await fetch(`${hub.url}/v1/stats`);
    last = (await res.json()).connections;
    if (last.sse === want.sse && last.ws === want.ws) return;
    if (Date.now() > deadline) assert.fail(`the hub counts ${JSON.stringify(last)} streams, not ${JSON.stringify(want)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the connection indicator reads `text` exactly (or matches a RegExp). */
async function conn(page, text, timeout = 10_000) {
  const want = text instanceof RegExp ? { source: text.source } : { exact: text };
  try {
    await page.waitForFunction(
      (w) => {
        const t = document.querySelector("#conn-text")?.textContent ?? "";
        return w.exact !== undefined ? t === w.exact : new RegExp(w.source).test(t);
      },
      want,
      { timeout },
    );
  } catch {
    assert.fail(`the connection indicator reads ${JSON.stringify(await page.locator("#conn-text").textContent())}, not ${text}`);
  }
}

/** The seqs of the rows in the DOM, top to bottom. */
function shownSeqs(page) {
  return page.$$eval("#list .row", (rows) =>
    rows
      .map((r) => ({ y: r.getBoundingClientRect().top, seq: Number(r.dataset.seq) }))
      .sort((a, b) => a.y - b.y)
      .map((r) => r.seq),
  );
}

/**
 * Waits until the replay status speaks of a replay other than `previous` (an id) and reads
 * `text` (a string or a RegExp); returns that replay's id.
 */
async function replayStatus(page, previous, text, timeout = 20_000) {
  const want = { previous: previous ?? null, ...(text instanceof RegExp ? { source: text.source } : { exact: text }) };
  try {
    const handle = await page.waitForFunction(
      (w) => {
        const s = document.querySelector("#replay-status");
        const id = s?.dataset.replay;
        if (!id || id === w.previous) return false;
        const t = s.textContent;
        return (w.exact !== undefined ? t === w.exact : new RegExp(w.source).test(t)) && id;
      },
      want,
      { timeout },
    );
    return await handle.jsonValue();
  } catch {
    const s = page.locator("#replay-status");
    assert.fail(`the replay status reads ${JSON.stringify(await s.textContent())} (replay ${await s.getAttribute("data-replay")}), not ${text} for a replay after ${previous}`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Screenshots of the current page at phone size and in the dark theme, from the same hub. */
async function variants(t, hub, path, name, ready) {
  for (const [suffix, opts] of [["phone", { viewport: PHONE }], ["dark", { colorScheme: "dark" }]]) {
    const v = await openPage(hub, path, opts);
    t.after(() => v.context.close());
    await ready(v.page);
    await shot(v.page, `${name}-${suffix}`);
    const overflow = await v.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${name}-${suffix}: no horizontal scrolling (${overflow}px too wide)`);
    assert.deepEqual(v.errors, [], `${name}-${suffix}: no page errors`);
  }
}

test("live monitor: events appear within a second, filters narrow, pause holds, detail and export", async (t) => {
  const hub = await hubFor(t);
  const { page, context, errors } = await pageFor(t, hub);
  await conn(page, "Connected");

  const started = Date.now();
  const [seq] = await post(hub, [{ type: "site.created", subject: "site/nyc", tags: ["prod"], data: { name: "NYC" } }]);
  await page.locator(`#ev-${seq}`).waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started < 1000, "the event appeared within 1 s");

  await post(hub, [
    { type: "monitor.failed", severity: "critical", subject: "monitor/9", source: "probe", category: "health" },
    { type: "policy.toggled", severity: "warning", category: "config", tags: ["prod"] },
    { type: "site.deleted", severity: "info", subject: "site/sfo", category: "config" },
    { type: "user.created", severity: "debug", tags: ["dev"], source: "signup" },
  ]);
  await count(page, "5 events");
  await shot(page, "monitor");

  // Every control of every page has a label (a <label>, aria-label or its own text).
  const unlabelled = await page.$$eval("input, select, textarea, button, [role=listbox]", (nodes) =>
    nodes
      .filter((n) => !(n.labels?.length || n.getAttribute("aria-label") || n.getAttribute("aria-labelledby") || n.textContent.trim()))
      .map((n) => n.outerHTML.slice(0, 80)),
  );
  assert.deepEqual(unlabelled, []);

  // Every filter key narrows the list on the hub's side: the stream is re-opened with the
  // filter (a new stream id, the hub counting one stream of that transport) and shows exactly
  // the matching events. Reset re-opens the unfiltered stream, over SSE again.
  const monitor = page.locator("#page-monitor");
  const everything = ["site.created", "monitor.failed", "policy.toggled", "site.deleted", "user.created"];
  const reopen = async (button, transport, types) => {
    const before = await streamId(page);
    await monitor.getByRole("button", { name: button }).click();
    await streamShows(page, { after: before, transport, types });
    await hubStreams(hub, { sse: transport === "sse" ? 1 : 0, ws: transport === "ws" ? 1 : 0 });
  };
  const apply = async (label, value, expected, transport = "sse") => {
    const field = monitor.getByLabel(label, { exact: true });
    if ((await field.evaluate((n) => n.tagName)) === "SELECT") await field.selectOption(value);
    else await field.fill(value);
    await reopen("Apply", transport, expected);
    await reopen("Reset", "sse", everything);
  };
  await hubStreams(hub, { sse: 1, ws: 0 });
  await apply("Type", "site.*", ["site.created", "site.deleted"]);
  await apply("Severity at least", "warning", ["monitor.failed", "policy.toggled"]);
  await apply("Category", "config", ["policy.toggled", "site.deleted"]);
  await apply("Source", "probe, signup", ["monitor.failed", "user.created"]);
  await apply("Subject", "site/*", ["site.created", "site.deleted"]);
  await apply("Tags (any of)", "prod", ["site.created", "policy.toggled"]);
  await apply("Transport", "ws", everything, "ws");
  // The WebSocket stream is live too, and a filter narrows it as well.
  await monitor.getByLabel("Transport", { exact: true }).selectOption("ws");
  await monitor.getByLabel("Type", { exact: true }).fill("*.created");
  await reopen("Apply", "ws", ["site.created", "user.created"]);
  // In seq order: once the later event shows, the earlier one would have shown before it.
  const [wsDeleted, wsCreated] = await post(hub, [{ type: "ws.deleted" }, { type: "ws.created" }]);
  await page.locator(`#ev-${wsCreated}`).waitFor();
  await count(page, "3 events");
  assert.equal(await page.locator(`#ev-${wsDeleted}`).count(), 0, "the filter holds on live events over WebSocket");
  await reopen("Reset", "sse", [...everything, "ws.created", "ws.deleted"]);

  // Free-text search narrows what is shown without touching the stream.
  const unfiltered = await streamId(page);
  await monitor.getByLabel("Search shown events").fill("monitor/9");
  await count(page, "1 of 7 events");
  assert.deepEqual(await shownSeqs(page), [2]);
  await monitor.getByLabel("Search shown events").fill("");
  await count(page, "7 events");
  assert.equal(await streamId(page), unfiltered, "searching keeps the stream");
  await hubStreams(hub, { sse: 1, ws: 0 });

  // Pause holds new events; resume releases them, in order.
  await monitor.getByRole("button", { name: "Pause" }).click();
  const heldSeqs = await post(hub, Array.from({ length: 6 }, (_, i) => ({ type: "held.event", data: { i } })));
  await monitor.getByRole("button", { name: "Resume (6 held)" }).waitFor();
  await count(page, "7 events · 6 held");
  assert.equal(await page.locator("#list .row .c-type", { hasText: "held.event" }).count(), 0, "held events are not shown while paused");
  await shot(page, "monitor-paused");
  await monitor.getByRole("button", { name: "Resume (6 held)" }).click();
  await count(page, "13 events");
  const seqs = await shownSeqs(page);
  assert.deepEqual(seqs.slice(0, 6), [...heldSeqs].reverse(), `released in order, newest first: ${seqs}`);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), "the list is in seq order");
  assert.equal(new Set(seqs).size, seqs.length, "no event twice");

  // Detail view by keyboard: focus the list, arrow to the first row, Enter, Escape.
  await page.locator("#list").focus();
  await page.keyboard.press("ArrowDown");
  assert.equal(await page.locator("#list").getAttribute("aria-activedescendant"), `ev-${heldSeqs.at(-1)}`);
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowUp");
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  const json = JSON.parse(await page.locator("#detail-json").textContent());
  assert.equal(json.seq, heldSeqs.at(-1));
  assert.deepEqual(json.data, { i: 5 });
  await shot(page, "monitor-detail");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await page.evaluate(() => document.activeElement?.id), "list", "focus returns to the list");

  // Export of the shown events as JSON, NDJSON and CSV (a search narrows what is exported).
  const exported = async (format) => {
    await monitor.getByLabel("Export format").selectOption(format);
    const [d] = await Promise.all([page.waitForEvent("download"), monitor.getByRole("button", { name: "Export" }).click()]);
    assert.ok(d.suggestedFilename().endsWith(`.${format}`), d.suggestedFilename());
    return readFileSync(await d.path(), "utf8");
  };
  const all = JSON.parse(await exported("json"));
  assert.deepEqual(all.map((e) => e.seq), [...seqs].reverse(), "JSON: every shown event, in seq order");
  const lines = (await exported("ndjson")).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines, all, "NDJSON holds the same events");
  const rows = (await exported("csv")).trim().split("\r\n");
  assert.equal(rows[0], "seq,id,time,tenant,type,source,category,severity,subject,actor,tags,data,metadata");
  assert.equal(rows.length, 14);
  assert.match(rows.find((r) => r.startsWith("1,")), /,site\.created,api,,info,site\/nyc,anonymous,prod,"\{""name"":""NYC""\}",\{\}$/);
  await monitor.getByLabel("Search shown events").fill("held.event");
  await count(page, "6 of 13 events");
  assert.deepEqual(JSON.parse(await exported("json")).map((e) => e.seq), heldSeqs);

  // Clear empties the list; new events show again.
  await monitor.getByRole("button", { name: "Clear" }).click();
  await monitor.getByLabel("Search shown events").fill("");
  await count(page, "0 events");
  const [next] = await post(hub, [{ type: "after.clear" }]);
  await page.locator(`#ev-${next}`).waitFor({ timeout: 1000 });
  await count(page, "1 events");
  assert.deepEqual(errors, []);
});

test("a hub restart shows reconnecting, then every event once", async (t) => {
  let hub = await startHub();
  const { dir, port } = hub;
  t.after(() => hub.stop());
  const { page, context, errors } = await pageFor(t, hub);
  await conn(page, "Connected");
  const before = await post(hub, Array.from({ length: 5 }, (_, i) => ({ type: "before.restart", data: { i } })));
  await count(page, "5 events");
  await hub.kill();
  await conn(page, /^Reconnecting in \d+s$/);
  await shot(page, "monitor-reconnecting");
  // Stay down long enough for the countdown to be seen ticking.
  const first = await page.locator("#conn-text").textContent();
  await page.waitForFunction((f) => document.querySelector("#conn-text").textContent !== f, first, { timeout: 5000 });
  hub = await startHub({}, { dir, port });
  // Published before the dashboard is back: it must catch up on them.
  const afterSeqs = await post(hub, Array.from({ length: 7 }, (_, i) => ({ type: "after.restart", data: { i } })));
  await conn(page, "Connected", 20_000);
  await count(page, "12 events");
  await page.locator("#stream-note").getByText(`resumed after #${before.at(-1)}`).waitFor();
  const more = await post(hub, [{ type: "after.reconnect" }]);
  await count(page, "13 events");
  const seqs = await shownSeqs(page);
  assert.deepEqual(seqs, [...before, ...afterSeqs, ...more].reverse(), "every event once, in order");
  await shot(page, "monitor-resumed");
  assert.deepEqual(errors, []);
});

test("replay shows progress to 100% and can be stopped", async (t) => {
  const hub = await hubFor(t);
  await post(hub, Array.from({ length: 40 }, (_, i) => ({ type: i % 2 ? "order.created" : "order.paid", severity: i % 10 ? "info" : "warning", data: { i } })));
  await post(hub, [{ type: "user.created" }]);
  const { page, context, errors } = await pageFor(t, hub, "/#/replay");
  const replay = page.locator("#page-replay");
  await replay.getByLabel("Type").fill("order.*");
  await replay.getByLabel("Speed").selectOption("max");
  await replay.getByRole("button", { name: "Start replay" }).click();
  const first = await replayStatus(page, undefined, "Done: 40 of 40 events (100%)");
  assert.equal(await page.locator("#replay-progress").evaluate((p) => p.value / p.max), 1);
  await page.waitForFunction(() => document.querySelectorAll("#replay-events li").length === 40);
  const replayed = await page.$$eval("#replay-events li button", (b) => b.map((x) => Number(x.dataset.seq)));
  assert.deepEqual(replayed, Array.from({ length: 40 }, (_, i) => 40 - i), "each replayed event once, newest first");
  await shot(page, "replay");

  // A filter by severity and a custom range.
  await replay.getByLabel("Severity at least").selectOption("warning");
  await replay.getByLabel("Custom").check();
  // A range around the events (the prefilled one ends at the current second, which may be
  // the second the events were published in).
  const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
  await replay.getByLabel("From (local time)").fill(local(Date.now() - 3600e3));
  await replay.getByLabel("Until (local time)").fill(local(Date.now() + 3600e3));
  await replay.getByRole("button", { name: "Start replay" }).click();
  const second = await replayStatus(page, first, "Done: 4 of 4 events (100%)");
  // The list is drawn in the next frame: wait for its rows, not for the status.
  await page.waitForFunction(() => [...document.querySelectorAll("#replay-events li button")].map((x) => x.dataset.seq).join() === "31,21,11,1");

  // An impossible custom range is refused with a clear message.
  await replay.getByLabel("From (local time)").fill("2030-01-02T00:00:00");
  await replay.getByLabel("Until (local time)").fill("2030-01-01T00:00:00");
  await replay.getByRole("button", { name: "Start replay" }).click();
  await replay.getByRole("alert").getByText("The range must start before it ends.").waitFor();

  // A paced replay (events spread over time) can be stopped.
  await replay.getByLabel("Last hour").check();
  await replay.getByLabel("Type").fill("");
  await replay.getByLabel("Severity at least").selectOption("");
  await post(hub, [{ type: "late.one" }]);
  await new Promise((r) => setTimeout(r, 1500));
  await post(hub, [{ type: "late.two" }]);
  await replay.getByLabel("Speed").selectOption("1");
  await replay.getByRole("button", { name: "Start replay" }).click();
  const paced = await replayStatus(page, second, /^Running: /);
  await replay.getByRole("button", { name: "Stop" }).click();
  await replayStatus(page, second, /^Stopped: \d+ of 43 events/);
  assert.equal(await page.locator("#replay-status").getAttribute("data-replay"), paced);
  assert.equal(await replay.getByRole("button", { name: "Start replay" }).isEnabled(), true);
  assert.deepEqual(errors, []);
  await variants(t, hub, "/#/replay", "replay", (p) => p.getByRole("heading", { name: "Replay" }).waitFor());
});

test("a webhook subscription is created (secret shown once) and its deliveries seen", async (t) => {
  const received = [];
  let answer = 204;
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ event: JSON.parse(body), signature: req.headers["webhook-signature"] });
      res.writeHead(answer).end();
    });
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
  t.after(() => receiver.close());
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;
  const hub = await hubFor(t, { CRIER_WEBHOOKS_ALLOW_PRIVATE: "true" });
  const { page, context, errors } = await pageFor(t, hub, "/#/subscriptions");
  const subs = page.locator("#page-subscriptions");
  await subs.getByText("No subscriptions yet.").waitFor();
  await subs.getByLabel("Name").fill("orders");
  await subs.getByLabel("Webhook URL").fill(hookUrl);
  await subs.getByLabel("Type").fill("order.*");
  await subs.getByRole("button", { name: "Create" }).click();
  const secretDialog = page.getByRole("dialog", { name: "Subscription created" });
  await secretDialog.waitFor();
  await secretDialog.getByText("only this once").waitFor();
  const secret = await page.getByLabel("Secret").inputValue();
  assert.match(secret, /^whsec_/);
  await shot(page, "subscriptions-secret");
  await page.keyboard.press("Enter"); // "I stored it"
  await secretDialog.waitFor({ state: "hidden" });
  await subs.getByRole("cell", { name: hookUrl }).waitFor();
  assert.equal(await page.getByText(secret).count(), 0, "the secret is not shown again");

  await post(hub, [{ type: "order.created", data: { n: 1 } }, { type: "user.created" }, { type: "order.paid", data: { n: 2 } }]);
  await subs.getByRole("button", { name: "Deliveries of orders" }).click();
  // The list refreshes by itself.
  await page.waitForFunction(() => document.querySelectorAll("#deliveries-body tr.d-delivered").length === 2, null, { timeout: 15_000 });
  assert.deepEqual(received.map((r) => r.event.type), ["order.created", "order.paid"]);
  assert.ok(received.every((r) => /^v1,/.test(r.signature)));
  assert.deepEqual(await page.$$eval("#deliveries-body tr td:first-child", (c) => c.map((x) => Number(x.textContent))), [3, 1], "newest first");
  await subs.getByText("2 deliveries (2 delivered)").waitFor();
  await shot(page, "subscriptions");

  // Redeliver from the start: the receiver gets both again.
  await subs.getByLabel("Redeliver events after seq").fill("0");
  await subs.getByRole("button", { name: "Redeliver" }).click();
  await subs.getByText("Redelivering events after #0.").waitFor();
  for (let i = 0; i < 100 && received.length < 4; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(received.map((r) => r.event.type), ["order.created", "order.paid", "order.created", "order.paid"]);

  // A failing receiver shows as failed with its answer.
  answer = 500;
  await post(hub, [{ type: "order.refunded" }]);
  await page.waitForFunction(() => [...document.querySelectorAll("#deliveries-body tr")].some((r) => r.classList.contains("d-failed") && r.textContent.includes("HTTP 500")), null, { timeout: 15_000 });
  await shot(page, "subscriptions-failed");

  // Pause and delete (with confirmation; Cancel keeps it).
  await subs.getByRole("button", { name: "Pause orders" }).click();
  await subs.getByRole("button", { name: "Resume orders" }).waitFor();
  await subs.getByText("paused", { exact: true }).waitFor();
  await subs.getByRole("button", { name: "Delete orders" }).click();
  await page.getByRole("dialog", { name: "Delete subscription?" }).waitFor();
  await page.keyboard.press("Escape");
  await page.getByRole("dialog", { name: "Delete subscription?" }).waitFor({ state: "hidden" });
  assert.equal(await subs.getByRole("cell", { name: hookUrl }).count(), 1, "Escape cancels the delete");
  await subs.getByRole("button", { name: "Delete orders" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  await subs.getByText("No subscriptions yet.").waitFor();
  assert.deepEqual(errors, []);
  await post(hub, [{ type: "something.else" }]);
  await variants(t, hub, "/#/subscriptions", "subscriptions", (p) => p.getByText("No subscriptions yet.").waitFor());
});

test("sign-in with a token when auth is on; hub errors are shown; stats page", async (t) => {
  const secret = "dashboard-secret-of-at-least-32-chars!";
  const hub = await hubFor(t, { CRIER_AUTH_JWT_SECRET: secret });
  const { page, context, errors } = await pageFor(t, hub, "/#/stats");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.locator("#page-stats").isVisible(), false, "nothing is shown before signing in");
  await shot(page, "signin");
  await page.locator("#page-signin").getByLabel("Token").fill("not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").getByText(/refused this token: .*\(unauthorized\)/).waitFor();
  const expired = token(secret, { sub: "ops@acme", tenant: "acme", role: "admin", exp: Math.floor(Date.now() / 1000) - 60 });
  await page.locator("#page-signin").getByLabel("Token").fill(expired);
  await page.locator("#page-signin").getByLabel("Token").press("Enter");
  await page.getByRole("alert").getByText(/the token has expired/).waitFor();
  await shot(page, "signin-error");
  const admin = token(secret, { sub: "ops@acme", tenant: "acme", role: "admin" });
  await page.locator("#page-signin").getByLabel("Token").fill(admin);
  await page.locator("#page-signin").getByLabel("Token").press("Enter");
  await page.getByRole("heading", { name: "Stats" }).waitFor();
  await page.getByText("ops@acme · acme · admin").waitFor();
  await conn(page, "Connected");

  const [seq] = await post(hub, [{ type: "secure.event", severity: "error" }], admin);
  // Other tenants' events never show or count.
  await post(hub, [{ type: "other.tenant" }], token(secret, { sub: "x", tenant: "beta", role: "publisher" }));
  await page.locator("#t-total .tile-value").getByText("1", { exact: true }).waitFor();
  await page.locator("#t-sse .tile-value").getByText("1", { exact: true }).waitFor(); // the monitor's stream
  await post(hub, Array.from({ length: 200 }, (_, i) => ({ type: "load.tick", severity: "warning", source: i % 2 ? "probe" : "api" })), admin);
  await page.getByText(/now [1-9][0-9.]*\/s/).waitFor({ timeout: 10_000 });
  await page.getByRole("region", { name: "By type" }).getByText("load.tick").waitFor();
  await page.getByRole("region", { name: "By source" }).getByText("probe").waitFor();
  await page.waitForTimeout(4500); // a few more samples for the chart
  await shot(page, "stats");

  // The monitor kept its stream while the stats page was shown.
  await page.getByRole("link", { name: "Monitor" }).click();
  await count(page, "201 events", 1000);
  await page.locator("#page-monitor").getByLabel("Search shown events").fill("secure");
  await count(page, "1 of 201 events");
  await page.locator(`#ev-${seq}`).waitFor();
  await page.locator("#page-monitor").getByLabel("Search shown events").fill("other.tenant");
  await count(page, "0 of 201 events");

  // The hub's JSON errors reach the user: a private webhook URL is refused.
  await page.getByRole("link", { name: "Subscriptions" }).click();
  const subs = page.locator("#page-subscriptions");
  await subs.getByLabel("Name").fill("local");
  await subs.getByLabel("Webhook URL").fill("http://127.0.0.1:9/hook");
  await subs.getByRole("button", { name: "Create" }).click();
  await subs.getByRole("alert").getByText(/points at a loopback address.*\(url_not_allowed\)/).waitFor();
  await shot(page, "subscriptions-error");

  // The session survives a reload; sign-out forgets it and closes the stream.
  await page.reload();
  await page.getByText("ops@acme · acme · admin").waitFor();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("crier.token")), null);
  await conn(page, "Not connected");
  assert.deepEqual(errors, []);
  await variants(t, hub, "/", "signin", (p) => p.getByRole("heading", { name: "Sign in" }).waitFor());
});

test("stats page without auth, in every theme and size", async (t) => {
  const hub = await hubFor(t);
  await post(hub, Array.from({ length: 30 }, (_, i) => ({ type: `t.${i % 4}`, severity: ["info", "warning", "error"][i % 3], category: i % 2 ? "a" : "b" })));
  await variants(t, hub, "/#/stats", "stats", async (p) => {
    await p.locator("#t-total .tile-value").getByText("30", { exact: true }).waitFor();
    await p.getByText("no auth (local hub)").waitFor();
  });
});

test("10k events stay smooth: the list holds only the visible rows", async (t) => {
  const hub = await hubFor(t);
  const { page, context, errors } = await pageFor(t, hub);
  await conn(page, "Connected");
  const batches = [];
  for (let b = 0; b < 10; b++) {
    batches.push(
      post(hub, Array.from({ length: 1000 }, (_, i) => ({ type: `bulk.${i % 7}`, severity: ["debug", "info", "warning", "error", "critical"][i % 5], subject: `item/${b * 1000 + i}`, tags: ["bulk"] }))),
    );
  }
  await Promise.all(batches);
  await count(page, "10000 events", 20_000);
  const rows = await page.locator("#list .row").count();
  assert.ok(rows > 5 && rows < 80, `${rows} rows in the DOM for 10000 events`);
  assert.equal(await page.locator("#list").evaluate((l) => l.scrollHeight), 10000 * 34, "the list is as tall as 10000 rows");
  // Scrolling to the end shows the oldest event; frames stay short while scrolling (the
  // median, so that a busy test machine's hiccups do not count; the worst, loosely).
  const frames = await page.evaluate(async () => {
    const list = document.getElementById("list");
    const times = [];
    let last = performance.now();
    for (let i = 0; i < 60; i++) {
      list.scrollTop = (list.scrollHeight * i) / 59;
      await new Promise((r) => requestAnimationFrame(r));
      const now = performance.now();
      times.push(now - last);
      last = now;
    }
    return times.sort((a, b) => a - b);
  });
  await page.locator("#ev-1").waitFor();
  const median = frames[frames.length >> 1];
  assert.ok(median < 50, `the median scroll frame took ${median} ms`);
  assert.ok(frames.at(-1) < 1500, `a scroll frame took ${frames.at(-1)} ms`);
  assert.ok((await page.locator("#list .row").count()) < 80, "still only the visible rows after scrolling");
  // Searching 10k events.
  await page.locator("#page-monitor").getByLabel("Search shown events").fill("item/9999");
  await count(page, "1 of 10000 events");
  await page.locator("#page-monitor").getByLabel("Search shown events").fill("");
  await count(page, "10000 events");
  await page.locator("#list").evaluate((l) => (l.scrollTop = 0));
  await shot(page, "monitor-10k");
  assert.deepEqual(errors, []);

  // A phone-sized screen and the dark theme read too (the last 100 events are loaded).
  await variants(t, hub, "/", "monitor", (p) => count(p, "100 events"));
});

test("stats chart has the hub's history at once; category and dates; notifications; phone filters", async (t) => {
  const hub = await hubFor(t);
  // Published before any page is open: only the hub's own series can show it.
  const old = new Date(Date.now() - 3 * 86400e3).toISOString();
  const seqs = await post(hub, [
    ...Array.from({ length: 40 }, (_, i) => ({ type: `hist.${i % 3}`, category: i % 2 ? "billing" : "config", severity: "info" })),
    { type: "old.event", category: "audit", time: old },
  ]);
  const oldSeq = seqs.at(-1);

  const { page, context, errors } = await pageFor(t, hub, "/#/stats");
  // The first answer already carries 41 events over the last 15 minutes.
  await page.waitForFunction(() => document.querySelector("#rate-chart")?.dataset.events === "41", null, { timeout: 3000 });
  const points = Number(await page.locator("#rate-chart").getAttribute("data-points"));
  assert.ok(points >= 90, `15 minutes of 10 s points are drawn (${points})`);
  await page.getByText(/now [0-9.]+\/s · peak [1-9][0-9.]*\/s/).waitFor();
  await shot(page, "stats-series");

  // The monitor: a category column, and a date on a time that is not today's.
  await page.getByRole("link", { name: "Monitor" }).click();
  await count(page, "41 events");
  await page.locator("#page-monitor .list-head").getByText("Category").waitFor();
  const row = page.locator(`#ev-${oldSeq}`);
  assert.equal(await row.locator(".c-category").textContent(), "audit");
  const when = await row.locator(".c-time").textContent();
  assert.match(when, /^(\d{4}-)?\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?$/, `a date on an older time: ${when}`);
  assert.match(await page.locator(`#ev-${seqs.at(-2)} .c-time`).textContent(), /^\d{2}:\d{2}:\d{2}\.\d{3}$/, "today's times stay short");

  // Notifications are off by default: an error shows in the list, and no toast.
  const notify = page.locator("#page-monitor").getByLabel("Notify");
  assert.equal(await notify.inputValue(), "off");
  const [quiet] = await post(hub, [{ type: "disk.full", severity: "error", subject: "host/a" }]);
  await page.locator(`#ev-${quiet}`).waitFor();
  assert.equal(await page.locator("#toasts .toast").count(), 0, "no toast while notifications are off");

  // Turned on, an error or critical event raises a toast without taking the focus.
  await notify.selectOption("error");
  const search = page.locator("#page-monitor").getByLabel("Search shown events");
  await search.focus();
  const [loud] = await post(hub, [{ type: "db.down", severity: "critical", subject: "db/main", source: "probe" }]);
  const toast = page.locator(`#toasts .toast[data-seq="${loud}"]`);
  await toast.waitFor();
  assert.match(await toast.textContent(), /critical: db\.down.*db\/main/);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "search", "the focus stays where it was");
  // Below the level: listed, not notified.
  const [calm] = await post(hub, [{ type: "cpu.warm", severity: "warning" }]);
  await page.locator(`#ev-${calm}`).waitFor();
  assert.equal(await page.locator("#toasts .toast").count(), 1);
  await shot(page, "monitor-notification");
  await toast.getByRole("button", { name: "Dismiss db.down" }).click();
  await toast.waitFor({ state: "detached" });
  // The choice is kept by this browser.
  await page.reload();
  await count(page, "44 events");
  assert.equal(await page.locator("#page-monitor").getByLabel("Notify").inputValue(), "error");
  assert.deepEqual(errors, []);

  // On a phone the filters start folded, unfold on demand, and nothing is cut off.
  const phone = await openPage(hub, "/#/monitor", { viewport: PHONE });
  t.after(() => phone.context.close());
  const p = phone.page;
  await count(p, "44 events");
  const box = p.locator("#filters-box");
  assert.equal(await box.evaluate((d) => d.open), false, "folded on a phone");
  const folded = await box.boundingBox();
  assert.ok(folded.height < 80, `the folded filter is one line (${folded.height}px)`);
  await shot(p, "monitor-phone-folded");
  await p.locator("#filters-box > summary").click();
  const transport = p.locator("#page-monitor").getByLabel("Transport");
  await transport.waitFor();
  const sel = await transport.boundingBox();
  const card = await box.boundingBox();
  assert.ok(sel.x >= card.x && sel.x + sel.width <= card.x + card.width + 0.5, `the transport select fits its card: ${JSON.stringify({ sel, card })}`);
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling (${overflow}px)`);
  await shot(p, "monitor-phone-filters");
  await p.getByRole("link", { name: "Stats" }).click();
  await p.waitForFunction(() => document.querySelector("#rate-chart")?.dataset.events === "44", null, { timeout: 5000 });
  await shot(p, "stats-series-phone");
  assert.deepEqual(phone.errors, []);
});

test("saved filters: save the monitor's filter, list, apply by name, replace, delete; laptop and phone", async (t) => {
  const hub = await hubFor(t);
  await post(hub, [
    { type: "deploy.failed", severity: "error", tags: ["prod"], subject: "svc/api" },
    { type: "deploy.done", tags: ["prod"], subject: "svc/api" },
    { type: "test.failed", severity: "error", tags: ["dev"] },
    { type: "site.created", subject: "site/nyc" },
  ]);
  const everything = ["deploy.failed", "deploy.done", "test.failed", "site.created"];
  const { page, context, errors } = await pageFor(t, hub, "/", { viewport: { width: 1280, height: 800 } });
  await count(page, "4 events");
  const monitor = page.locator("#page-monitor");
  const field = (label) => monitor.getByLabel(label, { exact: true });
  const picker = field("Saved filter");
  const saveAs = field("Save the current filter as");
  const status = page.locator("#saved-status");
  const hubFilter = async (name) => {
    const res = await fetch(`${hub.url}/v1/filters/${name}`);
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  const options = () => picker.locator("option").allTextContents();
  assert.deepEqual(await options(), ["none saved yet"]);
  assert.equal(await monitor.getByRole("button", { name: "Delete", exact: true }).isDisabled(), true, "nothing to delete yet");

  // The monitor's current filter, saved under a name; a bad name is explained, not saved.
  await field("Severity at least").selectOption("error");
  await field("Tags (any of)").fill("prod");
  let before = await streamId(page);
  await monitor.getByRole("button", { name: "Apply" }).click();
  await streamShows(page, { after: before, transport: "sse", types: ["deploy.failed"] });
  await saveAs.fill("Prod Errors");
  await monitor.getByRole("button", { name: "Save", exact: true }).click();
  await page.locator("#saved-error").getByText(/lowercase letters.*invalid_filter_name/).waitFor();
  await shot(page, "filters-bad-name");
  assert.equal((await fetch(`${hub.url}/v1/filters`).then((r) => r.json())).filters.length, 0, "nothing was saved");
  await saveAs.fill("prod-errors");
  await monitor.getByRole("button", { name: "Save", exact: true }).click();
  await status.getByText("Saved as “prod-errors”.").waitFor();
  assert.equal(await page.locator("#saved-error").isHidden(), true, "the earlier error is gone");
  const saved = await hubFilter("prod-errors");
  assert.equal(saved.status, 200);
  assert.deepEqual(saved.body.filter, { severity: "error", tags: ["prod"] });
  assert.equal(saved.body.created_by, "anonymous");
  assert.equal(await picker.inputValue(), "prod-errors", "the saved filter is the one applied");
  assert.equal(await page.locator("#filter-summary").textContent(), "prod-errors: severity ≥ error; tags: prod");
  assert.equal(await saveAs.inputValue(), "", "the name field is emptied for the next one");

  // A second one, for all deploys.
  before = await streamId(page);
  await monitor.getByRole("button", { name: "Reset" }).click();
  await streamShows(page, { after: before, transport: "sse", types: everything });
  assert.equal(await picker.inputValue(), "", "changing the fields leaves the saved filter");
  await field("Type").fill("deploy.*");
  before = await streamId(page);
  await monitor.getByRole("button", { name: "Apply" }).click();
  await streamShows(page, { after: before, transport: "sse", types: ["deploy.failed", "deploy.done"] });
  await saveAs.fill("deploys");
  await monitor.getByRole("button", { name: "Save", exact: true }).click();
  await status.getByText("Saved as “deploys”.").waitFor();
  assert.deepEqual(await options(), ["none", "deploys", "prod-errors"], "listed by name");
  await shot(page, "filters-saved");

  // Applying one fills the form and opens the stream with filter=NAME, resolved by the hub.
  before = await streamId(page);
  await picker.selectOption("prod-errors");
  await streamShows(page, { after: before, transport: "sse", types: ["deploy.failed"] });
  assert.equal(await page.locator("#list").getAttribute("data-filter"), "prod-errors", "the stream was opened by name");
  assert.equal(await field("Severity at least").inputValue(), "error");
  assert.equal(await field("Tags (any of)").inputValue(), "prod");
  assert.equal(await field("Type").inputValue(), "");
  assert.match(await page.locator("#saved-about").textContent(), /^severity ≥ error; tags: prod · saved by anonymous$/);
  await hubStreams(hub, { sse: 1, ws: 0 });
  const [live, quiet] = await post(hub, [
    { type: "db.down", severity: "critical", tags: ["prod"] },
    { type: "db.slow", severity: "warning", tags: ["prod"] },
  ]);
  await page.locator(`#ev-${live}`).waitFor();
  await count(page, "2 events");
  assert.equal(await page.locator(`#ev-${quiet}`).count(), 0, "the saved filter holds on live events");
  await shot(page, "filters-applied");

  // Saving under a taken name asks before replacing it.
  await field("Severity at least").selectOption("critical");
  await saveAs.fill("prod-errors");
  await monitor.getByRole("button", { name: "Save", exact: true }).click();
  const confirm = page.locator("#confirm");
  await confirm.getByRole("heading", { name: "Replace saved filter?" }).waitFor();
  await shot(page, "filters-replace");
  before = await streamId(page);
  await confirm.getByRole("button", { name: "Replace" }).click();
  await status.getByText("Replaced “prod-errors”.").waitFor();
  // Saved from a changed form, it is applied at once: the stream shows what was saved.
  await streamShows(page, { after: before, transport: "sse", types: ["db.down"] });
  assert.equal(await page.locator("#filter-summary").textContent(), "prod-errors: severity ≥ critical; tags: prod");
  assert.deepEqual((await hubFilter("prod-errors")).body.filter, { severity: "critical", tags: ["prod"] });

  // Deleting asks too, and the picker forgets it.
  await picker.selectOption("deploys");
  await page.waitForFunction(() => document.querySelector("#list")?.dataset.filter === "deploys");
  await monitor.getByRole("button", { name: "Delete", exact: true }).click();
  await confirm.getByRole("heading", { name: "Delete saved filter?" }).waitFor();
  await confirm.getByRole("button", { name: "Delete" }).click();
  await status.getByText("Deleted “deploys”.").waitFor();
  assert.deepEqual(await options(), ["none", "prod-errors"]);
  assert.equal(await picker.inputValue(), "");
  assert.equal((await hubFilter("deploys")).status, 404);
  assert.deepEqual(errors, []);

  // On a phone: the saved filters fit the folded-out card, and applying one works the same.
  const phone = await openPage(hub, "/#/monitor", { viewport: PHONE });
  t.after(() => phone.context.close());
  const p = phone.page;
  await p.locator("#filters-box > summary").click();
  const phonePicker = p.locator("#page-monitor").getByLabel("Saved filter", { exact: true });
  await phonePicker.locator("option", { hasText: "prod-errors" }).waitFor({ state: "attached" });
  before = await streamId(p);
  await phonePicker.selectOption("prod-errors");
  await streamShows(p, { after: before, transport: "sse", types: ["db.down"] });
  const card = await p.locator("#filters-box").boundingBox();
  for (const id of ["#saved-select", "#saved-delete", "#save-name", "#save-button"]) {
    const b = await p.locator(id).boundingBox();
    assert.ok(b.x >= card.x && b.x + b.width <= card.x + card.width + 0.5, `${id} fits its card: ${JSON.stringify({ b, card })}`);
  }
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling (${overflow}px)`);
  await shot(p, "filters-phone");
  await p.locator("#page-monitor").getByLabel("Save the current filter as", { exact: true }).fill("UPPER");
  await p.locator("#page-monitor").getByRole("button", { name: "Save", exact: true }).click();
  await p.locator("#saved-error").getByText(/lowercase/).waitFor();
  await shot(p, "filters-phone-error");
  assert.deepEqual(phone.errors, []);
});

test("connections page: an SSE stream and a pusher-js presence member appear live, then leave", async (t) => {
  const app = { id: "5151", key: "dash-key", secret: "dash-secret-of-some-length" };
  const hub = await hubFor(t, {
    CRIER_PUSHER_APPS: `[{id="${app.id}", key="${app.key}", secret="${app.secret}", tenant="default"}]`,
  });

  // An SSE stream with a filter, held open by this process.
  const abort = new AbortController();
  const res = await fetch(`${hub.url}/v1/stream?type=probe.*&severity=warning`, { signal: abort.signal });
  assert.equal(res.status, 200);
  const body = res.body.getReader();
  body.read().catch(() => {});
  t.after(() => abort.abort());

  // A pusher-js client on a presence channel, authorized by the server SDK's signature.
  const signer = serverSdk(hub.port, { app });
  const member = { user_id: "ada-7", user_info: { name: "Ada Lovelace" } };
  const pusher = pusherClient(app.key, hub.port, (socketId, channelName) =>
    signer.authorizeChannel(socketId, channelName, member),
  );
  t.after(() => pusher.disconnect());
  await subscribed(pusher.subscribe("presence-lobby"));

  const { page, context, errors } = await pageFor(t, hub, "/#/connections", { viewport: { width: 1280, height: 800 } });
  await page.getByRole("heading", { name: "Connections" }).waitFor();
  const sseRow = page.locator("#conns-body tr[data-transport=sse]").filter({ hasText: "type: probe.*" });
  await sseRow.waitFor({ timeout: 10_000 });
  assert.match(await sseRow.textContent(), /severity ≥ warning/);
  assert.match(await sseRow.locator(".c-remote").textContent(), /^127\.0\.0\.1:\d+$/);
  assert.match(await sseRow.locator(".c-since").textContent(), /just now|s ago/);
  const pusherRow = page.locator("#conns-body tr[data-transport=pusher]");
  await pusherRow.waitFor();
  assert.equal((await pusherRow.locator(".c-actor").textContent()).trim(), "pusher:ada-7");
  assert.match(await pusherRow.locator(".c-reads").textContent(), /presence-lobby as ada-7/);
  const card = page.locator('#presence-list .presence[data-channel="presence-lobby"]');
  await card.locator('li[data-user="ada-7"]').getByText("Ada Lovelace").waitFor();
  // The dashboard's own live stream is listed too (once the next refresh sees it).
  await page.waitForFunction(() => document.querySelectorAll("#conns-body tr[data-transport=sse]").length >= 2, null, { timeout: 10_000 });
  await page.waitForFunction(() => /open connections/.test(document.querySelector("#conns-summary")?.textContent ?? ""));
  await shot(page, "connections-1280x800");

  const phone = await openPage(hub, "/#/connections", { viewport: { width: 390, height: 844 } });
  t.after(() => phone.context.close());
  await phone.page.locator('#presence-list li[data-user="ada-7"]').waitFor();
  await phone.page.locator("#conns-body tr[data-transport=pusher]").waitFor();
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling on a phone (${overflow}px too wide)`);
  await shot(phone.page, "connections-390x844");
  const dark = await openPage(hub, "/#/connections", { colorScheme: "dark" });
  t.after(() => dark.context.close());
  await dark.page.locator('#presence-list li[data-user="ada-7"]').waitFor();
  await shot(dark.page, "connections-dark");

  // Closing them takes them off the live page.
  abort.abort();
  pusher.disconnect();
  await sseRow.waitFor({ state: "detached", timeout: 10_000 });
  await pusherRow.waitFor({ state: "detached", timeout: 10_000 });
  await page.locator("#presence-empty").waitFor({ state: "visible", timeout: 10_000 });
  assert.deepEqual(errors, []);
  assert.deepEqual(phone.errors, []);
  assert.deepEqual(dark.errors, []);
});
