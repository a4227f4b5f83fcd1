// Starts and stops a real crier hub (the binary in CRIER_BIN) for the end-to-end tests.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BIN = process.env.CRIER_BIN;

/** A free 127.0.0.1 port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A hub (as {@link startHub} starts it, with `env`) for test `t`, stopped after it. */
export async function hubFor(t, env = {}) {
  const hub = await startHub(env);
  t.after(() => hub.stop());
  return hub;
}

/**
 * Starts a hub on a free port over a fresh data directory (or `opts.dir`, `opts.port`), with
 * extra environment `env`. Resolves once /healthz answers.
 */
export async function startHub(env = {}, opts = {}) {
  if (!BIN) throw new Error("CRIER_BIN must name the crier binary");
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "crier-e2e-"));
  const port = opts.port ?? (await freePort());
  const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dir], {
    env: { ...process.env, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`crier exited (${child.exitCode}): ${stderr}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`crier did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const exited = new Promise((r) => child.once("exit", r));
  return {
    url,
    port,
    dir,
    child,
    /** Kills the process with SIGKILL and waits for it; keeps the data directory. */
    async kill() {
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    },
    /** Stops the process and removes the data directory (unless it was given). */
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

function b64url(s) {
  return Buffer.from(s).toString("base64url");
}

/** An HS256 JWT for `claims` ({sub, tenant, role, ...}), valid for ten minutes. */
export function token(secret, claims) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 600, ...claims }));
  const sig = createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}
