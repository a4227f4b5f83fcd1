// The dashboard of a hub embedded in an application (crates/crier/examples/embedded.rs) and
// nested at /events, in headless Chromium: it loads under the prefix with no page errors,
// connects, and shows an event the application publishes in-process when a site is created.
//
// Needs the running example's base URL in EMBEDDED_URL and Chromium at /usr/bin/chromium (or
// CRIER_CHROMIUM).

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.EMBEDDED_URL;
const CHROMIUM = process.env.CRIER_CHROMIUM ?? "/usr/bin/chromium";

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
});

for (const path of ["/events"]) {
  test(`the dashboard at ${path} shows a live event of the application`, async (t) => {
    assert.ok(BASE, "EMBEDDED_URL names the running example");
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const errors = [];
    const outside = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.origin === new URL(BASE).origin && !u.pathname.startsWith("/events")) outside.push(u.pathname);
    });
    await page.goto(BASE + path);
    await page.waitForFunction(() => document.querySelector("#conn-text")?.textContent === "Connected", null, { timeout: 10_000 });

    const res = await fetch(`${BASE}/sites`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: `from the browser test ${path}` }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { seq } = await res.json();
    const row = page.locator(`#ev-${seq}`);
    await row.waitFor({ timeout: 5000 });
    assert.match(await row.textContent(), /site\.created/);
    assert.deepEqual(errors, [], "no page errors");
    assert.deepEqual(outside, [], "every request stays under the prefix");
  });
}
