// The dashboard shell: session (token in sessionStorage), the hub client, hash routing and
// the connection indicator. Each page is a module with `mount(ctx)` and `unmount()`.

import { createClient, CrierError } from "/client/crier.js";
import * as monitor from "/ui/monitor.js";
import * as replay from "/ui/replay.js";
import * as stats from "/ui/stats.js";
import * as subscriptions from "/ui/subscriptions.js";
import { $, show } from "/ui/util.js";

const PAGES = { monitor, replay, stats, subscriptions };
const TOKEN_KEY = "crier.token";
const url = location.origin;

const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || undefined,
  /** Whether the hub asks for a credential (learned from the first 401). */
  authRequired: false,
};

function client() {
  return createClient({ url, token: () => session.token });
}

/** Decodes a JWT's claims for display (no verification: the hub verifies). */
function claims(token) {
  try {
    const part = token.split(".")[1];
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return null;
  }
}

function showWho() {
  const c = session.token && claims(session.token);
  $("#who").textContent = session.token
    ? c
      ? `${c.sub ?? "?"} · ${c.tenant ?? "default"} · ${c.role ?? ""}`
      : "API key"
    : session.authRequired
      ? ""
      : "no auth (local hub)";
  show($("#sign-out"), Boolean(session.token));
}

/** Where the indicator reads; pages report their stream's status here. */
let countdown;
export function setConnection(s) {
  const box = $("#conn");
  const text = $("#conn-text");
  clearInterval(countdown);
  box.dataset.state = s.state;
  if (s.state === "open") text.textContent = "Connected";
  else if (s.state === "connecting") text.textContent = "Connecting…";
  else if (s.state === "reconnecting") {
    const until = Date.now() + (s.retryInMs ?? 0);
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      text.textContent = navigator.onLine === false ? "Offline" : `Reconnecting in ${left}s`;
    };
    tick();
    countdown = setInterval(tick, 250);
  } else if (s.state === "closed") {
    text.textContent = s.error ? `Offline: ${s.error.message}` : "Not connected";
    box.dataset.state = s.error ? "offline" : "idle";
  } else text.textContent = s.state;
}

let current = null;
let currentName = "";

async function route() {
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0] || "monitor").toLowerCase();
  const page = PAGES[name] ? name : "monitor";
  if (current) current.unmount();
  current = null;
  for (const sec of document.querySelectorAll(".page")) show(sec, false);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (session.authRequired && !session.token) return signIn();
  show($(`#page-${page}`), true);
  document.title = `crier · ${page[0].toUpperCase()}${page.slice(1)}`;
  if (currentName && currentName !== page) $("#main").focus({ preventScroll: true });
  currentName = page;
  current = PAGES[page];
  current.mount({ client: client(), url, token: () => session.token, onAuthError, setConnection });
}

/** Pages call this when the hub answers 401: the token is missing, expired or revoked. */
function onAuthError(err) {
  session.authRequired = true;
  if (session.token) {
    $("#signin-error").textContent = `The hub refused the token: ${err.message}`;
    show($("#signin-error"), true);
  }
  session.token = undefined;
  sessionStorage.removeItem(TOKEN_KEY);
  if (current) current.unmount();
  current = null;
  signIn();
}

function signIn() {
  for (const sec of document.querySelectorAll(".page")) show(sec, false);
  show($("#page-signin"), true);
  setConnection({ state: "closed" });
  showWho();
  $("#signin-token").focus();
}

$("#signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("#signin-token").value.trim();
  if (!token) return;
  try {
    await createClient({ url, token }).request("GET", "/v1/stats");
  } catch (err) {
    $("#signin-error").textContent =
      err instanceof CrierError && err.status === 401 ? `The hub refused this token: ${err.message}` : `Cannot check the token: ${err.message}`;
    show($("#signin-error"), true);
    return;
  }
  show($("#signin-error"), false);
  session.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#signin-token").value = "";
  showWho();
  route();
});

$("#sign-out").addEventListener("click", () => {
  session.token = undefined;
  sessionStorage.removeItem(TOKEN_KEY);
  session.authRequired = true;
  if (current) current.unmount();
  current = null;
  signIn();
});

window.addEventListener("hashchange", route);
window.addEventListener("offline", () => setConnection({ state: "reconnecting", retryInMs: 0 }));

// Does the hub want a credential? An anonymous stats read tells.
(async () => {
  try {
    await createClient({ url, token: () => session.token }).request("GET", "/v1/stats");
  } catch (err) {
    if (err instanceof CrierError && err.status === 401) {
      session.authRequired = true;
      if (session.token) {
        session.token = undefined;
        sessionStorage.removeItem(TOKEN_KEY);
      }
    }
  }
  showWho();
  route();
})();
