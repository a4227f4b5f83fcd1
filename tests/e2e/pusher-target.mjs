// Starts a Pusher-protocol server for the Pusher tests: this build's crier (CRIER_BIN), or
// Sockudo when PUSHER_TARGET=sockudo (its binary in SOCKUDO_BIN), with the same app.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import PusherClient from "pusher-js";
import PusherServer from "pusher";
import { freePort, startHub } from "./hub.mjs";

export const APP = { id: "4242", key: "e2e-key", secret: "e2e-secret-of-some-length" };

export const TARGET = process.env.PUSHER_TARGET === "sockudo" ? "sockudo" : "crier";

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function until(check, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The `pusher` server SDK of `app` (APP unless given) on `port`, signing with `secret`. */
export function serverSdk(port, { app = APP, secret = app.secret } = {}) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret,
    host: "127.0.0.1",
    port: String(port),
    useTLS: false,
  });
}

/**
 * A pusher-js client of app `key` on the server at `port`, over WebSocket only, that
 * authorizes each channel with `authorize(socketId, channelName)`.
 */
export function pusherClient(key, port, authorize) {
  return new PusherClient(key, {
    wsHost: "127.0.0.1",
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    cluster: "local",
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => callback(null, authorize(socketId, channelName)),
    },
  });
}

/** Resolves once pusher-js client `c` is connected; rejects if it fails to. */
export function connected(c) {
  return new Promise((resolve, reject) => {
    c.connection.bind("connected", resolve);
    c.connection.bind("failed", () => reject(new Error("pusher-js could not connect")));
  });
}

/** Resolves with pusher:subscription_succeeded's data on channel `ch`; rejects on an error. */
export function subscribed(ch) {
  return new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", resolve);
    ch.bind("pusher:subscription_error", (e) => reject(new Error(`subscription_error: ${JSON.stringify(e)}`)));
  });
}

async function startSockudo(opts) {
  const bin = process.env.SOCKUDO_BIN;
  if (!bin) throw new Error("PUSHER_TARGET=sockudo needs SOCKUDO_BIN");
  const dir = mkdtempSync(join(tmpdir(), "sockudo-e2e-"));
  const port = await freePort();
  const config = {
    debug: false,
    host: "127.0.0.1",
    port,
    mode: "production",
    adapter: { driver: "local" },
    app_manager: {
      driver: "memory",
      array: {
        apps: [
          {
            id: APP.id,
            key: APP.key,
            secret: APP.secret,
            enabled: true,
            max_connections: 0,
            enable_client_messages: true,
            max_client_events_per_second: 100,
            webhooks: (opts.webhooks ?? []).map((url) => ({
              url,
              event_types: ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"],
            })),
          },
        ],
      },
    },
    cache: { driver: "memory" },
    queue: { driver: "memory" },
    metrics: { enabled: false },
    rate_limiter: { enabled: false },
    opentelemetry: { enabled: false },
  };
  const file = join(dir, "config.json");
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(bin, ["--config", file], {
    env: { PATH: "/usr/bin:/bin", HOME: dir },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (child.exitCode !== null) throw new Error(`sockudo exited: ${stderr}`);
    try {
      await fetch(`${url}/up/${APP.id}`);
      return true;
    } catch {
      return false;
    }
  }, "sockudo to listen");
  const exited = new Promise((r) => child.once("exit", r));
  return {
    crier: false,
    url,
    port,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts the target with the test app (client events on); `opts.webhooks` lists hook URLs. */
export async function startTarget(opts = {}) {
  if (TARGET === "sockudo") return startSockudo(opts);
  const hooks = (opts.webhooks ?? []).map((u) => JSON.stringify(u)).join(",");
  const apps = `[{id="${APP.id}", key="${APP.key}", secret="${APP.secret}", tenant="default", client_events=true, webhooks=[${hooks}]}]`;
  const hub = await startHub({
    CRIER_PUSHER_APPS: apps,
    CRIER_WEBHOOKS_ALLOW_PRIVATE: "true",
    CRIER_WEBHOOKS_BACKOFF: "[\"100ms\", \"200ms\"]",
    ...(opts.env ?? {}),
  });
  return { crier: true, url: hub.url, port: hub.port, hub, stop: () => hub.stop() };
}
