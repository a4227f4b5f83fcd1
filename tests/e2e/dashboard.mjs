// The dashboard's browser tests' helpers (browser*.test.mjs): headless Chromium (Debian's,
// driven by playwright-core), pages opened on a hub, waits on what the monitor shows, and
// screenshots under $SCREENSHOT_DIR. A module of their own so the test files share one copy.
//
// Needs Chromium at /usr/bin/chromium (or CRIER_CHROMIUM).

import { before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const SHOTS = process.env.SCREENSHOT_DIR ?? fileURLToPath(new URL("../../target/screenshots", import.meta.url));
const CHROMIUM = process.env.CRIER_CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(SHOTS, { recursive: true });

let browser;

/** Launches Chromium before the calling test file's tests and closes it after them. */
export function useBrowser() {
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
}

const LAPTOP = { width: 1280, height: 860 };
export const PHONE = { width: 390, height: 844 };

export async function openPage(hub, path = "/", { viewport = LAPTOP, colorScheme = "light" } = {}) {
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
export async function pageFor(t, ...args) {
  const opened = await openPage(...args);
  t.after(() => opened.context.close());
  return opened;
}

export async function post(hub, events, tok) {
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
export async function count(page, text, timeout = 5000) {
  try {
    await page.waitForFunction((t) => document.querySelector("#count")?.textContent === t, text, { timeout });
  } catch {
    const now = await page.locator("#count").textContent();
    assert.fail(`the counter reads ${JSON.stringify(now)}, not ${JSON.stringify(text)}`);
  }
}

/** The id of the stream the monitor's rows belong to (bumped whenever it re-subscribes). */
export async function streamId(page) {
  return Number(await page.locator("#list").getAttribute("data-stream"));
}

/**
 * Waits until the monitor shows a stream newer than `after`, over `transport`, whose rows have
 * exactly the types `types` and whose counter agrees. The rows, the counter and the stream id
 * are drawn in one frame, so a list still showing the stream before the action never passes.
 */
export async function streamShows(page, { after, transport, types }, timeout = 10_000) {
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
export async function hubStreams(hub, want, timeout = 10_000) {
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
export async function conn(page, text, timeout = 10_000) {
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
export function shownSeqs(page) {
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
export async function replayStatus(page, previous, text, timeout = 20_000) {
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

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Screenshots of the current page at phone size and in the dark theme, from the same hub. */
export async function variants(t, hub, path, name, ready) {
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

