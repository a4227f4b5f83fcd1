// crier JavaScript client, WebSocket transport: one connection of a subscription (welcome,
// subscribe, keep-alive pings, credential refresh, refusals read back over HTTP).
// Split out of crier.js, whose Subscription hands it the state it needs through `link`.

import { CrierError, MAX_TIMER, errorOf, networkError, resolveToken } from "./http.js";

const WS_SUB = "s";

/** A WebSocket `error` op as a CrierError with the HTTP status it stands for. */
function wsError(m) {
  const code = m.code ?? "error";
  const status =
    code === "unauthorized" ? 401
    : code === "forbidden" ? 403
    : code === "unknown_filter" ? 404
    : code === "store_unavailable" || code === "unavailable" ? 503
    : code.startsWith("too_many") || code === "rate_limited" ? 429
    : 400;
  return new CrierError(m.message ?? `the hub refused the subscription (${code})`, { status, code });
}

/** The `exp` claim (unix seconds) of a JWT, read without verifying it; undefined otherwise. */
function jwtExp(token) {
  try {
    const part = String(token).split(".")[1];
    if (!part) return undefined;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One WebSocket connection of a subscription, to its end: `{opened, error?}` (opened:
 * subscribed). `link` is the subscription's side: `url`, `WebSocket`, `fetch`, `tokenSource`
 * (the `token` option), `signal` (aborts when it closes), `idleTimeout`, `filter` (JSON form),
 * `tenant`, and the callbacks `position()`, `opened(head)`, `open()`, `deliver(event)` and
 * `reset(info)`.
 */
export function runWs(link, token) {
  return new Promise((resolve) => {
    const url = new URL(link.url.replace(/^http/i, "ws") + "/v1/ws");
    if (token) url.searchParams.set("token", token);
    let ws;
    try {
      ws = new link.WebSocket(url.href);
    } catch (e) {
      return resolve({ opened: false, error: networkError(e, "cannot open a WebSocket") });
    }
    let socketOpen = false;
    let subscribed = false;
    let settled = false;
    let failing = false;
    let welcomeHead;
    let lastSeen = Date.now();
    let ticker;
    let refresher;
    const send = (m) => {
      try {
        ws.send(JSON.stringify(m));
      } catch {
        // closing; onclose follows
      }
    };
    const finish = (result) => {
      if (settled) return;
      settled = true;
      clearInterval(ticker);
      clearTimeout(refresher);
      link.signal.removeEventListener("abort", onAbort);
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        if (ws.readyState === 0 || ws.readyState === 1) ws.close(1000);
      } catch {
        // already closing
      }
      resolve({ opened: subscribed, ...result });
    };
    const onAbort = () => finish({});
    link.signal.addEventListener("abort", onAbort);
    // Nothing heard for idleTimeout (no welcome, no pong): the connection is dead.
    const watch = (every) => {
      clearInterval(ticker);
      ticker = setInterval(() => {
        if (Date.now() - lastSeen > link.idleTimeout) {
          return finish({ error: new CrierError(`nothing received for ${link.idleTimeout} ms`, { code: "timeout" }) });
        }
        if (welcomeHead !== undefined) send({ op: "ping", ref: "ping" });
      }, every);
    };
    const idleOk = link.idleTimeout > 0 && link.idleTimeout <= MAX_TIMER;
    if (idleOk) watch(Math.max(100, Math.floor(link.idleTimeout / 3)));
    // Refresh the credential on the open connection (`auth` op) before it expires.
    const scheduleRefresh = (exp) => {
      clearTimeout(refresher);
      if (typeof link.tokenSource !== "function" || typeof exp !== "number") return;
      const left = exp * 1000 - Date.now();
      const at = Math.max(0, left - Math.min(30000, left / 4));
      if (at > MAX_TIMER) return;
      refresher = setTimeout(async () => {
        let fresh;
        try {
          fresh = await resolveToken(link.tokenSource);
        } catch {
          return; // at expiry the hub closes (4001) and the reconnect asks again
        }
        if (!settled && fresh) send({ op: "auth", ref: "auth", token: fresh });
      }, at);
    };
    const refused = async () => {
      // The upgrade failed before opening; a browser cannot see why, so ask over HTTP.
      if (failing || settled) return;
      failing = true;
      const why = await probe(link, token);
      finish({ error: why ?? new CrierError("cannot open a WebSocket to the hub", { code: "network_error" }) });
    };
    ws.onopen = () => {
      socketOpen = true;
      lastSeen = Date.now();
    };
    ws.onerror = () => {
      // Browsers follow with onclose; Node 20's implementation does not when the handshake
      // itself failed, so that case is handled here.
      if (!socketOpen) refused();
    };
    ws.onclose = (ev) => {
      if (!socketOpen) return refused();
      if (ev.code === 4001) {
        return finish({ error: new CrierError(ev.reason || "the credential expired", { status: 401, code: "credential_expired" }) });
      }
      finish({ error: new CrierError(`the connection closed (${ev.code}${ev.reason ? " " + ev.reason : ""})`, { code: "network_error" }) });
    };
    ws.onmessage = (msg) => {
      lastSeen = Date.now();
      if (typeof msg.data !== "string") return;
      let m;
      try {
        m = JSON.parse(msg.data);
      } catch {
        return;
      }
      switch (m?.op) {
        case "welcome": {
          welcomeHead = typeof m.head === "number" ? m.head : 0;
          const sub = { op: "subscribe", ref: "sub", id: WS_SUB };
          if (typeof link.filter === "string" || Object.keys(link.filter).length) sub.filter = link.filter;
          const pos = link.position();
          if (pos.after !== undefined) sub.after = pos.after;
          else if (pos.last !== undefined) sub.last = pos.last;
          if (link.tenant !== undefined) sub.tenant = String(link.tenant);
          send(sub);
          const beat = Number(m.heartbeat_ms) || 15000;
          if (idleOk) watch(Math.max(100, Math.min(beat, Math.floor(link.idleTimeout / 3))));
          scheduleRefresh(jwtExp(token));
          break;
        }
        case "subscribed":
          if (m.id !== WS_SUB || subscribed) break;
          subscribed = true;
          // welcome's head was read before the subscription's cursor opened: resuming after
          // it can only repeat nothing and lose nothing.
          link.opened(welcomeHead);
          link.open();
          break;
        case "event":
          if (m.sub === WS_SUB && !m.replay) link.deliver(m.event);
          break;
        case "reset":
          if (m.sub === WS_SUB) {
            const { op: _op, sub: _sub, ...info } = m;
            link.reset(info);
          }
          break;
        case "error":
          // The subscription was refused, or it ended on the hub (store_unavailable): either
          // final or a reason to reconnect. Other errors (a refused `auth` refresh) leave the
          // connection be; an expired credential closes it with 4001.
          if (m.ref === "sub" || m.sub === WS_SUB) finish({ error: wsError(m) });
          break;
        case "authed":
          scheduleRefresh(typeof m.exp === "number" ? m.exp : undefined);
          break;
        default:
          break;
      }
    };
  });
}

/** Why a WebSocket upgrade failed, if the hub refuses the same request over HTTP. */
async function probe(link, token) {
  const doFetch = link.fetch ?? globalThis.fetch;
  if (typeof doFetch !== "function") return undefined;
  try {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const res = await doFetch(`${link.url}/v1/ws`, { headers, cache: "no-store" });
    if ([401, 403, 404, 429, 503].includes(res.status)) return await errorOf(res);
    await res.body?.cancel();
  } catch {
    // unreachable: a network error, retried
  }
  return undefined;
}
