// The dashboard's monitor in headless Chromium against the real binary: live events, filters,
// pause/resume, detail and export, a hub restart, replay, 10k events in a virtualised list
// and saved filters. A full-page screenshot of every page (light, dark and phone-sized) is
// kept under $SCREENSHOT_DIR; the other pages are in browser-pages.test.mjs.
//
// Needs the crier binary in CRIER_BIN and Chromium at /usr/bin/chromium (or CRIER_CHROMIUM).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { hubFor, startHub } from "./hub.mjs";
import { useBrowser, PHONE, openPage, pageFor, post, count, streamId, streamShows, hubStreams, conn, shownSeqs, replayStatus, shot, variants } from "./dashboard.mjs";

useBrowser();

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
