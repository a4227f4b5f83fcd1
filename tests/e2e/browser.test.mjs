// The dashboard in headless Chromium (Debian's, driven by playwright-core) against the real
// binary: live events, filters, pause/resume, a hub restart, replay, webhook subscriptions,
// sign-in, 10k events in a virtualised list, export. A screenshot of every page is kept
// under $SCREENSHOT_DIR.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startHub, token } from "./hub.mjs";

const SHOTS = process.env.SCREENSHOT_DIR ?? new URL("../../target/screenshots", import.meta.url).pathname;
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

async function openPage(hub, path = "/", viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) errors.push(m.text());
  });
  await page.goto(hub.url + path);
  return { page, context, errors };
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

/** The seqs of the rows in the DOM, top to bottom. */
function shownSeqs(page) {
  return page.$$eval("#list .row", (rows) =>
    rows
      .map((r) => ({ y: r.getBoundingClientRect().top, seq: Number(r.dataset.seq) }))
      .sort((a, b) => a.y - b.y)
      .map((r) => r.seq),
  );
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

test("live monitor: events appear within a second, filters narrow, pause holds, detail and export", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const { page, context, errors } = await openPage(hub);
  t.after(() => context.close());
  await page.getByRole("status").getByText("Connected").waitFor();

  const started = Date.now();
  const [seq] = await post(hub, [{ type: "site.created", subject: "site/nyc", tags: ["prod"], data: { name: "NYC" } }]);
  await page.locator(`#ev-${seq}`).waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started < 1000, "the event appeared within 1 s");

  await post(hub, [
    { type: "monitor.failed", severity: "critical", subject: "monitor/9", source: "probe" },
    { type: "policy.toggled", severity: "warning", category: "config", tags: ["prod"] },
    { type: "site.deleted", severity: "info", subject: "site/sfo" },
    { type: "user.created", severity: "debug", tags: ["dev"] },
  ]);
  await page.getByText("5 events").waitFor();
  await shot(page, "monitor");

  // Filters narrow the list (server side): type and severity.
  await page.locator("#page-monitor").getByLabel("Type").fill("site.*");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.getByText("2 events").waitFor();
  const types = await page.$$eval("#list .row .c-type", (n) => n.map((x) => x.textContent));
  assert.deepEqual(types.sort(), ["site.created", "site.deleted"]);
  await page.locator("#page-monitor").getByLabel("Type").fill("");
  await page.locator("#page-monitor").getByLabel("Severity at least").selectOption("warning");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.getByText("2 events").waitFor();
  assert.deepEqual((await page.$$eval("#list .row .c-type", (n) => n.map((x) => x.textContent))).sort(), ["monitor.failed", "policy.toggled"]);
  await page.getByRole("button", { name: "Reset" }).click();
  await page.getByText("5 events").waitFor();

  // Free-text search narrows what is shown without touching the stream.
  await page.locator("#page-monitor").getByLabel("Search shown events").fill("monitor/9");
  await page.getByText("1 of 5 events").waitFor();
  await page.locator("#page-monitor").getByLabel("Search shown events").fill("");
  await page.getByText("5 events").waitFor();

  // Pause holds new events; resume releases them, in order.
  await page.getByRole("button", { name: "Pause" }).click();
  const heldSeqs = await post(hub, Array.from({ length: 6 }, (_, i) => ({ type: "held.event", data: { i } })));
  await page.getByRole("button", { name: "Resume (6 held)" }).waitFor();
  assert.equal(await page.locator("#list .row .c-type", { hasText: "held.event" }).count(), 0, "held events are not shown while paused");
  await page.getByRole("button", { name: "Resume (6 held)" }).click();
  await page.getByText("11 events").waitFor();
  const seqs = await shownSeqs(page);
  assert.deepEqual(seqs.slice(0, 6), [...heldSeqs].reverse(), `released in order, newest first: ${seqs}`);
  assert.ok(seqs.every((s, i) => i === 0 || s < seqs[i - 1]), "the list is in seq order");

  // Detail view by keyboard: focus the list, arrow to the first row, Enter, Escape.
  await page.locator("#list").focus();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  const json = JSON.parse(await page.locator("#detail-json").textContent());
  assert.equal(json.seq, heldSeqs.at(-1));
  await shot(page, "monitor-detail");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });

  // Export of the shown events as NDJSON and CSV.
  await page.locator("#page-monitor").getByLabel("Export format").selectOption("ndjson");
  const [nd] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export" }).click()]);
  const lines = readFileSync(await nd.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 11);
  assert.ok(lines.every((e, i) => i === 0 || e.seq > lines[i - 1].seq));
  await page.locator("#page-monitor").getByLabel("Export format").selectOption("csv");
  const [csv] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export" }).click()]);
  const rows = readFileSync(await csv.path(), "utf8").trim().split("\r\n");
  assert.equal(rows[0], "seq,id,time,tenant,type,source,category,severity,subject,actor,tags,data,metadata");
  assert.equal(rows.length, 12);
  assert.deepEqual(errors, []);
});

test("a hub restart shows reconnecting, then every event once", async (t) => {
  let hub = await startHub();
  const { dir, port } = hub;
  t.after(() => hub.stop());
  const { page, context, errors } = await openPage(hub);
  t.after(() => context.close());
  await page.getByRole("status").getByText("Connected").waitFor();
  const before = await post(hub, Array.from({ length: 5 }, (_, i) => ({ type: "before.restart", data: { i } })));
  await page.getByText("5 events").waitFor();
  await hub.kill();
  await page.getByRole("status").getByText(/Reconnecting in \d+s/).waitFor({ timeout: 10_000 });
  await shot(page, "monitor-reconnecting");
  hub = await startHub({}, { dir, port });
  const afterSeqs = await post(hub, Array.from({ length: 7 }, (_, i) => ({ type: "after.restart", data: { i } })));
  await page.getByRole("status").getByText("Connected").waitFor({ timeout: 15_000 });
  await page.getByText("12 events").waitFor();
  const seqs = await shownSeqs(page);
  assert.deepEqual(seqs, [...before, ...afterSeqs].reverse(), "every event once, in order");
  assert.deepEqual(errors, []);
});

test("replay shows progress to 100%", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  await post(hub, Array.from({ length: 40 }, (_, i) => ({ type: i % 2 ? "order.created" : "order.paid", data: { i } })));
  const { page, context, errors } = await openPage(hub, "/#/replay");
  t.after(() => context.close());
  await page.locator("#page-replay").getByLabel("Type").fill("order.*");
  await page.locator("#page-replay").getByLabel("Speed").selectOption("max");
  await page.getByRole("button", { name: "Start replay" }).click();
  await page.getByText("done: 40 of 40 events (100%)").waitFor({ timeout: 10_000 });
  assert.equal(await page.locator("#replay-progress").evaluate((p) => p.value / p.max), 1);
  assert.equal(await page.locator("#replay-events li").count(), 40);
  await shot(page, "replay");
  // A paced replay can be stopped.
  await post(hub, [{ type: "late.one" }]);
  await page.locator("#page-replay").getByLabel("Type").fill("");
  await page.locator("#page-replay").getByLabel("Speed").selectOption("1");
  await page.getByRole("button", { name: "Start replay" }).click();
  await page.getByRole("button", { name: "Stop" }).click();
  await page.getByText(/^stopped: /).waitFor();
  assert.deepEqual(errors, []);
});

test("a webhook subscription is created (secret shown once) and its deliveries seen", async (t) => {
  const received = [];
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
  t.after(() => receiver.close());
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;
  const hub = await startHub({ CRIER_WEBHOOKS_ALLOW_PRIVATE: "true" });
  t.after(() => hub.stop());
  const { page, context, errors } = await openPage(hub, "/#/subscriptions");
  t.after(() => context.close());
  await page.locator("#page-subscriptions").getByLabel("Name").fill("orders");
  await page.locator("#page-subscriptions").getByLabel("Webhook URL").fill(hookUrl);
  await page.locator("#page-subscriptions").getByLabel("Type").fill("order.*");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("dialog", { name: "Subscription created" }).waitFor();
  const secret = await page.getByLabel("Secret").inputValue();
  assert.match(secret, /^whsec_/);
  await shot(page, "subscriptions-secret");
  await page.getByRole("button", { name: "I stored it" }).click();
  await page.getByRole("cell", { name: hookUrl }).waitFor();

  await post(hub, [{ type: "order.created", data: { n: 1 } }, { type: "user.created" }, { type: "order.paid", data: { n: 2 } }]);
  await page.getByRole("button", { name: "Deliveries of orders" }).click();
  for (let i = 0; i < 50 && (await page.locator("#deliveries-body tr.d-delivered").count()) < 2; i++) {
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.waitForTimeout(200);
  }
  assert.equal(await page.locator("#deliveries-body tr.d-delivered").count(), 2);
  assert.deepEqual(received.map((e) => e.type), ["order.created", "order.paid"]);
  await shot(page, "subscriptions");

  // Pause and delete (with confirmation).
  await page.getByRole("button", { name: "Pause orders" }).click();
  await page.getByRole("button", { name: "Resume orders" }).waitFor();
  await page.getByRole("button", { name: "Delete orders" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  await page.getByText("No subscriptions yet.").waitFor();
  assert.deepEqual(errors, []);
});

test("sign-in with a token when auth is on; stats page", async (t) => {
  const secret = "dashboard-secret-of-at-least-32-chars!";
  const hub = await startHub({ CRIER_AUTH_JWT_SECRET: secret });
  t.after(() => hub.stop());
  const { page, context, errors } = await openPage(hub);
  t.after(() => context.close());
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await shot(page, "signin");
  await page.locator("#page-signin").getByLabel("Token").fill("not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").getByText(/refused this token/).waitFor();
  const admin = token(secret, { sub: "ops@acme", tenant: "acme", role: "admin" });
  await page.locator("#page-signin").getByLabel("Token").fill(admin);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("status").getByText("Connected").waitFor();
  await page.getByText("ops@acme · acme · admin").waitFor();
  const [seq] = await post(hub, [{ type: "secure.event", severity: "error" }], admin);
  await page.locator(`#ev-${seq}`).waitFor({ timeout: 1000 });
  // Other tenants' events never show.
  await post(hub, [{ type: "other.tenant" }], token(secret, { sub: "x", tenant: "beta", role: "publisher" }));

  await page.getByRole("link", { name: "Stats" }).click();
  await page.locator("#t-total .tile-value").getByText("1", { exact: true }).waitFor();
  await post(hub, Array.from({ length: 200 }, () => ({ type: "load.tick", severity: "warning" })), admin);
  await page.getByText(/now [1-9][0-9.]*\/s/).waitFor({ timeout: 10_000 });
  await page.getByRole("region", { name: "By type" }).getByText("load.tick").waitFor();
  await shot(page, "stats");

  // The session survives a reload; sign-out forgets it.
  await page.reload();
  await page.getByText("ops@acme · acme · admin").waitFor();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("crier.token")), null);
  assert.deepEqual(errors, []);
});

test("10k events stay smooth: the list holds only the visible rows", async (t) => {
  const hub = await startHub();
  t.after(() => hub.stop());
  const { page, context, errors } = await openPage(hub);
  t.after(() => context.close());
  await page.getByRole("status").getByText("Connected").waitFor();
  for (let b = 0; b < 10; b++) {
    await post(hub, Array.from({ length: 1000 }, (_, i) => ({ type: `bulk.${i % 7}`, severity: ["debug", "info", "warning", "error", "critical"][i % 5], subject: `item/${b * 1000 + i}` })));
  }
  await page.getByText("10000 events").waitFor({ timeout: 20_000 });
  const rows = await page.locator("#list .row").count();
  assert.ok(rows > 5 && rows < 120, `${rows} rows in the DOM for 10000 events`);
  // Scrolling to the end shows the oldest event; frame times stay short while scrolling.
  const slowest = await page.evaluate(async () => {
    const list = document.getElementById("list");
    let worst = 0;
    let last = performance.now();
    for (let i = 0; i < 60; i++) {
      list.scrollTop = (list.scrollHeight * i) / 59;
      await new Promise((r) => requestAnimationFrame(r));
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }
    return worst;
  });
  await page.locator("#ev-1").waitFor();
  assert.ok(slowest < 250, `a scroll frame took ${slowest} ms`);
  await shot(page, "monitor-10k");

  // A phone-sized screen reads too.
  const phone = await openPage(hub, "/", { width: 390, height: 844 });
  t.after(() => phone.context.close());
  await phone.page.getByText("100 events").waitFor();
  await phone.page.screenshot({ path: join(SHOTS, "monitor-phone.png") });
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling on a phone (${overflow}px)`);
  assert.deepEqual(errors, []);
});
