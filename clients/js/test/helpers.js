// Helpers of the JavaScript client's tests (test/*.test.js): a hub, tokens, a TCP proxy that
// can be cut, and ways to wait on a subscription. A module of their own so the test files
// share one copy; its name keeps it out of the `*.test.js` glob.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CrierError } from "../crier.js";
import { freePort } from "../../../tests/e2e/hub.mjs";

const BIN = process.env.CRIER_BIN;
export const SECRET = "js-client-test-secret-of-at-least-32-chars";
export const TRANSPORTS = ["sse", "ws"];

/** Starts a hub on 127.0.0.1 (a free port and a fresh data dir unless given); waits for /healthz. */
export async function startHub(env = {}, { dir, port } = {}) {
  if (!BIN) throw new Error("set CRIER_BIN to the crier binary");
  const ownDir = !dir;
  dir ??= mkdtempSync(join(tmpdir(), "crier-js-"));
  port ??= await freePort();
  const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dir], {
    env: { ...process.env, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((r) => child.once("exit", r));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`crier exited (${child.exitCode}): ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`crier did not start: ${stderr}`);
    }
    await delay(20);
  }
  return {
    url,
    port,
    dir,
    /** Ends the process with `signal` and waits; the data directory stays. */
    async kill(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
    /** Stops the process and removes the data directory it created. */
    async stop() {
      await this.kill("SIGTERM");
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An HS256 JWT for `claims`, valid for `ttl` seconds. */
export function jwt(claims, ttl = 600, secret = SECRET) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ exp: Math.floor(Date.now() / 1000) + ttl, ...claims });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP proxy to `port` that can be cut (connections dropped, new ones refused) and restored. */
export async function proxy(target) {
  const port = await freePort();
  const sockets = new Set();
  let server;
  const listen = () =>
    new Promise((resolve, reject) => {
      server = createServer((c) => {
        const up = tcpConnect(target, "127.0.0.1");
        sockets.add(c);
        sockets.add(up);
        c.pipe(up).pipe(c);
        const drop = () => {
          c.destroy();
          up.destroy();
          sockets.delete(c);
          sockets.delete(up);
        };
        c.on("error", drop).on("close", drop);
        up.on("error", drop).on("close", drop);
      });
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
  await listen();
  const cut = async () => {
    const closed = new Promise((r) => server.close(() => r()));
    for (const s of sockets) s.destroy();
    sockets.clear();
    await closed;
  };
  return { url: `http://127.0.0.1:${port}`, cut, restore: listen, close: cut };
}

/** Takes `n` events from the subscription's iterator, failing after `ms`. */
export async function take(sub, n, ms = 10_000) {
  const out = [];
  const it = sub[Symbol.asyncIterator]();
  const timer = setTimeout(() => sub.close(), ms);
  try {
    while (out.length < n) {
      const { value, done } = await it.next();
      if (done) break;
      out.push(value);
    }
  } finally {
    clearTimeout(timer);
  }
  assert.equal(out.length, n, `expected ${n} events within ${ms} ms, got ${out.length}`);
  return out;
}

/** Resolves with the status payload once the subscription reaches `state`. */
export function waitFor(sub, state, ms = 10_000) {
  return new Promise((resolve, reject) => {
    if (sub.status === state) return resolve({ state });
    const timer = setTimeout(() => {
      sub.off("status", on);
      reject(new Error(`never "${state}" (now "${sub.status}")`));
    }, ms);
    const on = (s) => {
      if (s.state !== state) return;
      clearTimeout(timer);
      sub.off("status", on);
      resolve(s);
    };
    sub.on("status", on);
  });
}

/** Records every status and event the subscription emits. */
export function record(sub) {
  const log = { statuses: [], events: [], resets: [], errors: [] };
  sub.on("status", (s) => log.statuses.push(s));
  sub.on("event", (e) => log.events.push(e));
  sub.on("reset", (r) => log.resets.push(r));
  sub.on("error", (e) => log.errors.push(e));
  return log;
}

/** Asserts that `promise` rejects, within `ms`, with a CrierError of that status and code. */
export async function rejectsWith(promise, { status, code }, ms = 10_000) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no rejection within ${ms} ms`)), ms);
  });
  await assert.rejects(Promise.race([promise, late]).finally(() => clearTimeout(timer)), (err) => {
    assert.ok(err instanceof CrierError, `a CrierError, not ${err}`);
    if (status !== undefined) assert.equal(err.status, status, err.message);
    if (code !== undefined) assert.equal(err.code, code, err.message);
    assert.ok(err.message.length > 0);
    return true;
  });
}

export const seqs = (events) => events.map((e) => e.seq);
export const ascending = (xs) => xs.every((x, i) => i === 0 || x > xs[i - 1]);
