// The dashboard shell: session (token in sessionStorage), the hub client, hash routing and
// the connection indicator. Each page is a module with `mount(ctx)` and `unmount()`; the
// live stream (monitor.js) keeps running while other pages are shown, so the indicator
// always tells the state of the live connection and no event is missed meanwhile.

import { createClient, CrierError } from "../client/crier.js";
import * as monitor from "./monitor.js";
import * as replay from "./replay.js";
import * as stats from "./stats.js";
import * as subscriptions from "./subscriptions.js";
import * as connections from "./connections.js";
import { $, show, errorText } from "./util.js";

const PAGES = { monitor, replay, stats, connections, subscriptions };
const TITLES = { monitor: "Monitor", replay: "Replay", stats: "Stats", connections: "Connections", subscriptions: "Subscriptions" };
const TOKEN_KEY = "crier.token";
// The hub's base URL, wherever it is mounted: this module is served at <base>/ui/app.js.
const url = new URL("..", import.meta.url).href.replace(/\/+$/, "");

const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || undefined,
  /** Whether the hub asks for a credential (an anonymous GET /v1/stats answered 401). */
  authRequired: false,
};

const ctx = {
  url,
  token: () => session.token,
  client: createClient({ url, token: () => session.token }),
  onAuthError,
  setConnection,
};

/** Decodes a JWT's claims for display (no verification: the hub verifies). */
function claims(token) {
  try {
    const part = token.split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    return JSON.parse(json);
  } catch {
    return null;
  }
}

function showWho() {
  const c = session.token && claims(session.token);
  const who = $("#who");
  who.textContent = session.token
    ? c
      ? `${c.sub ?? "?"} · ${c.tenant ?? "default"} · ${c.role ?? "subscriber"}`
      : "API key"
    : session.authRequired
      ? ""
      : "no auth (local hub)";
  who.title = c?.exp ? `Token expires ${new Date(c.exp * 1000).toLocaleString()}` : "";
  show($("#sign-out"), Boolean(session.token));
}

// The connection indicator. Pages' streams report their status here.
let countdown;
let lastStatus = { state: "closed" };
export function setConnection(s) {
  lastStatus = s;
  const box = $("#conn");
  const text = $("#conn-text");
  clearInterval(countdown);
  let state = s.state;
  if (s.state === "open") text.textContent = "Connected";
  else if (s.state === "connecting") {
    // After a drop the client says "connecting" for each new attempt.
    if (s.attempt > 0) state = "reconnecting";
    text.textContent = s.attempt > 0 ? "Reconnecting…" : "Connecting…";
  } else if (s.state === "reconnecting") {
    const until = Date.now() + (s.retryInMs ?? 0);
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      text.textContent =
        navigator.onLine === false ? "Offline: no network; retrying" : left > 0 ? `Reconnecting in ${left}s` : "Reconnecting…";
    };
    tick();
    countdown = setInterval(tick, 250);
  } else if (s.state === "closed") {
    state = s.error ? "offline" : "idle";
    text.textContent = s.error ? `Offline: ${errorText(s.error)}` : "Not connected";
  } else text.textContent = s.state;
  box.dataset.state = state;
  // Screen readers hear each change of state once, not every tick of the countdown.
  const said = { open: "Live stream connected", reconnecting: "Live stream disconnected; reconnecting", connecting: "Connecting to the live stream", offline: text.textContent, idle: "" }[state];
  const live = $("#conn-live");
  if (said !== undefined && live.textContent !== said) live.textContent = said;
}

let current = null;
let currentName = "";

function pageName() {
  const name = (location.hash.replace(/^#\/?/, "").split(/[?/]/)[0] || "monitor").toLowerCase();
  return PAGES[name] ? name : "monitor";
}

function route() {
  const page = pageName();
  if (current) current.unmount();
  current = null;
  for (const sec of document.querySelectorAll(".page")) show(sec, false);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (session.authRequired && !session.token) return signIn();
  monitor.start(ctx);
  show($(`#page-${page}`), true);
  document.title = `${TITLES[page]} · crier`;
  if (currentName && currentName !== page) $("#main").focus({ preventScroll: true });
  currentName = page;
  current = PAGES[page];
  current.mount(ctx);
}

function forget() {
  session.token = undefined;
  sessionStorage.removeItem(TOKEN_KEY);
  if (current) current.unmount();
  current = null;
  currentName = "";
  monitor.stop();
  stats.stop();
}

/** Pages call this when the hub answers 401: the token is missing, expired or revoked. */
function onAuthError(err) {
  const had = Boolean(session.token);
  session.authRequired = true;
  forget();
  if (had) {
    $("#signin-error").textContent = `The hub refused the token: ${errorText(err)}. Sign in again.`;
    show($("#signin-error"), true);
  }
  signIn();
}

function signIn() {
  for (const sec of document.querySelectorAll(".page")) show(sec, false);
  show($("#page-signin"), true);
  document.title = "Sign in · crier";
  setConnection({ state: "closed" });
  showWho();
  $("#signin-token").focus();
}

$("#signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("#signin-token").value.trim();
  if (!token) return;
  const button = $("#signin button[type=submit]");
  button.disabled = true;
  try {
    await createClient({ url, token }).request("GET", "/v1/stats");
  } catch (err) {
    $("#signin-error").textContent =
      err instanceof CrierError && err.status === 401
        ? `The hub refused this token: ${errorText(err)}`
        : `Cannot check the token: ${errorText(err)}`;
    show($("#signin-error"), true);
    $("#signin-token").focus();
    return;
  } finally {
    button.disabled = false;
  }
  show($("#signin-error"), false);
  session.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#signin-token").value = "";
  showWho();
  route();
});

// Enter signs in (a token is one line); Shift+Enter still adds a line.
$("#signin-token").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("#signin").requestSubmit();
  }
});

$("#sign-out").addEventListener("click", () => {
  session.authRequired = true;
  forget();
  show($("#signin-error"), false);
  signIn();
});

window.addEventListener("hashchange", route);
window.addEventListener("offline", () => setConnection(lastStatus));
window.addEventListener("online", () => setConnection(lastStatus));

// Does the hub want a credential? An anonymous stats read tells; a stored token is checked.
(async () => {
  for (;;) {
    try {
      await ctx.client.request("GET", "/v1/stats");
      break;
    } catch (err) {
      if (err instanceof CrierError && err.status === 401) {
        session.authRequired = true;
        if (!session.token) break;
        session.token = undefined; // the stored token no longer works: ask anonymously
        sessionStorage.removeItem(TOKEN_KEY);
        continue;
      }
      break; // unreachable or another error: the pages will say so
    }
  }
  showWho();
  route();
})();
