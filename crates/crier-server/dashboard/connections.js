// Connections: GET /v1/connections every two seconds while the page is shown (admins only):
// every open SSE stream, WebSocket, GraphQL socket and Pusher connection with who opened it,
// from where, since when, what it reads and how far behind it is; and the presence channels
// with their members.

import { $, el, show, alertIn, describeFilter, listenerGroup } from "./util.js";

const EVERY_MS = 2000;
const LIMIT = 1000;
const LABELS = { sse: "SSE", ws: "WebSocket", graphql: "GraphQL", pusher: "Pusher" };

let ctx;
const ui = listenerGroup();
let timer;
let last; // the latest answer
let lastError = null;
let updatedAt;

/** "just now", "42 s", "3 min", "2 h 5 min", "4 d" since `iso`. */
export function since(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min ago`;
  return `${Math.floor(h / 24)} d ago`;
}

function query() {
  const q = new URLSearchParams({ limit: String(LIMIT) });
  const t = $("#c-transport").value;
  if (t) q.set("transport", t);
  if ($("#c-all").checked) q.set("tenant", "*");
  return `/v1/connections?${q}`;
}

/** What the connection reads: its filters (with subscription ids) or its channels. */
function reads(c) {
  if (c.transport === "pusher") {
    if (!c.channels?.length) return [el("span", { class: "muted" }, "no channel")];
    return c.channels.map((ch) =>
      el("span", { class: "chip" }, ch.name, ch.user_id != null ? el("span", { class: "muted" }, ` as ${ch.user_id}`) : null),
    );
  }
  if (!c.filters?.length) return [el("span", { class: "muted" }, "no subscription")];
  return c.filters.map((f) =>
    el("span", { class: "chip", title: JSON.stringify(f.filter) }, f.id != null ? el("strong", {}, `${f.id}: `) : null, describeFilter(f.filter)),
  );
}

function lagCell(c) {
  const n = Number(c.lag ?? 0);
  const unit = c.transport === "pusher" ? "frames queued for the socket" : "seqs between the last event sent and the head";
  const cls = n === 0 ? "lag" : n < 1000 ? "lag warn" : "lag bad";
  return el("td", { class: `num ${cls}`, title: `${n.toLocaleString()} ${unit}` }, n.toLocaleString());
}

function row(c, now, allTenants) {
  const actor = c.pusher ? el("span", { title: `app ${c.pusher.app}, socket ${c.pusher.socket_id}` }, c.actor) : c.actor;
  return el(
    "tr",
    { dataset: { id: String(c.id), transport: c.transport } },
    el("td", { class: "c-transport" }, el("span", { class: `tr-badge tr-${c.transport}` }, LABELS[c.transport] ?? c.transport)),
    el("td", { class: "c-actor" }, actor, allTenants ? el("div", { class: "muted small" }, c.tenant) : null),
    el("td", { class: "c-remote mono" }, c.remote ?? "—"),
    el("td", { class: "c-since", title: new Date(c.connected_since).toLocaleString() }, since(c.connected_since, now)),
    el("td", { class: "c-reads" }, el("div", { class: "chips" }, ...reads(c))),
    lagCell(c),
  );
}

function presenceCard(p, allTenants) {
  const members = p.members ?? [];
  return el(
    "section",
    { class: "presence", dataset: { channel: p.channel }, "aria-label": `Presence channel ${p.channel}` },
    el(
      "h3",
      {},
      p.channel,
      " ",
      el("span", { class: "muted small" }, `${members.length} ${members.length === 1 ? "member" : "members"}${allTenants ? ` · ${p.tenant}` : ""}`),
    ),
    members.length
      ? el(
          "ul",
          { class: "members" },
          members.map((m) =>
            el(
              "li",
              { dataset: { user: String(m.user_id) } },
              el("strong", {}, String(m.user_id)),
              m.user_info != null ? el("span", { class: "muted mono small" }, JSON.stringify(m.user_info)) : null,
            ),
          ),
        )
      : el("p", { class: "muted small" }, "no member"),
  );
}

function render() {
  alertIn($("#conns-error"), lastError);
  const v = last;
  if (!v) return;
  const now = Date.now();
  const all = $("#c-all").checked;
  const list = v.connections ?? [];
  const body = $("#conns-body");
  body.replaceChildren(...list.map((c) => row(c, now, all)));
  show($("#conns-empty"), list.length === 0);
  const more = v.total > list.length ? ` (the first ${list.length} shown)` : "";
  $("#conns-summary").textContent =
    `${v.total} open ${v.total === 1 ? "connection" : "connections"}${more} · head seq ${Number(v.head ?? 0).toLocaleString()} · updated ${updatedAt.toLocaleTimeString([], { hour12: false })}`;
  const presence = v.presence ?? [];
  $("#presence-list").replaceChildren(...presence.map((p) => presenceCard(p, all)));
  show($("#presence-empty"), presence.length === 0);
  show($("#presence-more"), Boolean(v.presence_truncated));
}

async function sample() {
  try {
    last = await ctx.client.request("GET", query());
    lastError = null;
    updatedAt = new Date();
  } catch (err) {
    if (err.status === 401) return ctx.onAuthError(err);
    lastError = err.status === 403 ? Object.assign(new Error(`Only admins see connections: ${err.message}`), { code: err.code }) : err;
    last = undefined;
    $("#conns-body").replaceChildren();
    $("#presence-list").replaceChildren();
  }
  render();
}

function restart() {
  clearInterval(timer);
  sample();
  timer = setInterval(sample, EVERY_MS);
}

export function mount(c) {
  ctx = c;
  ui.on($("#c-transport"), "change", restart);
  ui.on($("#c-all"), "change", restart);
  restart();
}

export function unmount() {
  ui.off();
  clearInterval(timer);
  timer = undefined;
}
