// The dashboard's other pages in headless Chromium against the real binary: webhook
// subscriptions, sign-in, the stats page with its chart and notifications, the connections
// page with a pusher-js presence member. Screenshots as in browser.test.mjs.
//
// Needs the crier binary in CRIER_BIN and Chromium at /usr/bin/chromium (or CRIER_CHROMIUM).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { hubFor, token } from "./hub.mjs";
import { useBrowser, PHONE, openPage, pageFor, post, count, conn, shot, variants } from "./dashboard.mjs";
import { pusherClient, serverSdk, subscribed } from "./pusher-target.mjs";

useBrowser();

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
