// Stats: GET /v1/stats every two seconds; events per second over the last fifteen minutes
// drawn on a canvas from the answer's `series` (the hub counts events per 10 s as it commits
// them, so the chart has its history as soon as the page opens), and the counts as tiles
// and tables.

import { $, el, alertIn, SEVERITIES } from "./util.js";

const EVERY_MS = 2000;
const WINDOW_MS = 15 * 60 * 1000;

let ctx;
let timer;
let mounted = false;
let rates = []; // {t, rate}: the end of each 10 s interval (now, for the current one)
let last; // the latest /v1/stats answer
let lastError = null;
let onResize;

/** The next round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten) at or above v. */
function niceCeil(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function formatRate(v) {
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return v.toFixed(2).replace(/0$/, "").replace(/\.0$/, "");
}

function draw() {
  const canvas = $("#rate-chart");
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--muted").trim() || "#888";
  const grid = css.getPropertyValue("--line").trim() || "#ddd";
  const accent = css.getPropertyValue("--accent").trim() || "#3b82f6";
  const now = Date.now();
  const peak = Math.max(0, ...rates.map((r) => r.rate));
  const max = niceCeil(peak * 1.1);
  const pad = { l: 48, r: 12, t: 10, b: 24 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const x = (t) => pad.l + w * (1 - (now - t) / WINDOW_MS);
  const y = (v) => pad.t + h * (1 - v / max);
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    g.strokeStyle = grid;
    g.beginPath();
    g.moveTo(pad.l, yy);
    g.lineTo(pad.l + w, yy);
    g.stroke();
    g.fillStyle = fg;
    g.textAlign = "right";
    g.fillText(formatRate(v), pad.l - 8, yy);
  }
  g.textBaseline = "alphabetic";
  const span = WINDOW_MS / 60e3;
  const step = w < 420 ? (w < 260 ? 15 : 5) : 2.5; // minutes between labels
  for (let m = span; m >= 0; m -= step) {
    const xx = x(now - m * 60e3);
    g.textAlign = m === span ? "left" : m === 0 ? "right" : "center";
    g.fillText(m === 0 ? "now" : `−${m} min`, xx, height - 6);
  }
  const pts = rates.filter((r) => now - r.t <= WINDOW_MS);
  // What the chart shows, for tests and scripts: points drawn and events they count.
  canvas.dataset.points = String(pts.length);
  canvas.dataset.events = String((last?.series?.points ?? []).reduce((n, p) => n + Number(p.events ?? 0), 0));
  if (!pts.length) {
    g.textAlign = "center";
    g.fillText("waiting for the hub…", pad.l + w / 2, pad.t + h / 2);
    return;
  }
  g.strokeStyle = accent;
  g.fillStyle = accent;
  g.lineWidth = 2;
  g.lineJoin = "round";
  g.beginPath();
  pts.forEach((r, i) => (i ? g.lineTo(x(r.t), y(r.rate)) : g.moveTo(x(r.t), y(r.rate))));
  g.stroke();
  if (pts.length > 1) {
    g.globalAlpha = 0.15;
    g.lineTo(x(pts.at(-1).t), pad.t + h);
    g.lineTo(x(pts[0].t), pad.t + h);
    g.closePath();
    g.fill();
    g.globalAlpha = 1;
  }
  const end = pts.at(-1);
  g.beginPath();
  g.arc(x(end.t), y(end.rate), 3.5, 0, 2 * Math.PI);
  g.fill();
}

/** Events per second from the hub's series: each interval's count over its length, drawn at
 * its end; the current interval counts over the part of it that has passed (at least 2 s). */
function seriesRates(series, now) {
  const step = Number(series?.interval_s ?? 10) * 1000;
  const out = [];
  for (const p of series?.points ?? []) {
    const start = Date.parse(p.t);
    if (Number.isNaN(start)) continue;
    const end = Math.min(start + step, now);
    const secs = Math.max(2000, end - start) / 1000;
    out.push({ t: end, rate: Number(p.events ?? 0) / secs });
  }
  return out;
}

function tile(label, value, id, cls = "") {
  return el("div", { class: `tile ${cls}`, id }, el("div", { class: "tile-value" }, String(value)), el("div", { class: "tile-label" }, label));
}

function table(title, counts, { order, cls } = {}) {
  let entries = Object.entries(counts ?? {});
  if (order) entries = order.map((k) => [k, counts?.[k] ?? 0]);
  else entries.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const total = entries.reduce((s, [, n]) => s + n, 0);
  const body = entries.slice(0, 15).map(([k, n]) => {
    const bar = el("span", { class: n ? "bar" : "bar zero" });
    bar.style.width = `${Math.round((100 * n) / max)}%`;
    const pct = total ? Math.round((100 * n) / total) : 0;
    return el(
      "tr",
      { class: cls ? `${cls}-${k}` : "" },
      el("th", { scope: "row" }, k),
      el("td", { class: "num" }, n.toLocaleString()),
      el("td", { class: "barcell", "aria-label": `${pct}%` }, bar),
    );
  });
  return el(
    "section",
    { class: "card", "aria-label": title },
    el("h2", {}, title),
    total || order
      ? el("table", {}, el("thead", { class: "visually-hidden" }, el("tr", {}, el("th", { scope: "col" }, "Value"), el("th", { scope: "col" }, "Events"), el("th", { scope: "col" }, "Share"))), el("tbody", {}, body))
      : el("p", { class: "muted" }, "none yet"),
    entries.length > 15 ? el("p", { class: "muted small" }, `and ${entries.length - 15} more`) : null,
  );
}

const fmt = (n) => Number(n ?? 0).toLocaleString();

function renderAll() {
  if (!mounted) return;
  alertIn($("#stats-error"), lastError);
  draw();
  const s = last;
  if (!s) return;
  const cur = s.publish_rate_per_s === undefined ? undefined : Number(s.publish_rate_per_s);
  const peak = Math.max(0, ...rates.map((r) => r.rate));
  $("#rate-now").textContent = cur === undefined ? "" : `now ${formatRate(cur)}/s · peak ${formatRate(peak)}/s`;
  $("#rate-summary").textContent = cur === undefined ? "" : `Now ${formatRate(cur)} events per second over the last minute; peak ${formatRate(peak)} in the last fifteen minutes.`;
  const d = s.deliveries ?? {};
  const subs = s.subscriptions ?? {};
  const c = s.connections ?? {};
  $("#stats-tiles").replaceChildren(
    tile("events stored", fmt(s.events?.total), "t-total"),
    tile("in the last hour", fmt(s.events?.last_hour), "t-hour"),
    tile("per second, last minute", formatRate(Number(s.publish_rate_per_s ?? 0)), "t-rate"),
    tile("head seq (whole log)", fmt(s.head), "t-head"),
    tile("SSE connections", fmt(c.sse), "t-sse"),
    tile("WebSocket connections", fmt(c.ws), "t-ws"),
    tile("subscriptions active", fmt(subs.active), "t-subs-active"),
    tile("subscriptions paused", fmt(subs.paused), "t-subs-paused", subs.paused ? "warn" : ""),
    tile("deliveries delivered", fmt(d.delivered), "t-delivered", d.delivered ? "ok" : ""),
    tile("deliveries pending", fmt(d.pending), "t-pending"),
    tile("deliveries failed", fmt(d.failed), "t-failed", d.failed ? "warn" : ""),
    tile("deliveries dead", fmt(d.dead), "t-dead", d.dead ? "bad" : ""),
  );
  $("#stats-tables").replaceChildren(
    table("By type", s.events?.by_type),
    table("By severity", s.events?.by_severity, { order: SEVERITIES, cls: "sev" }),
    table("By category", s.events?.by_category),
    table("By source", s.events?.by_source),
  );
}

async function sample() {
  let s;
  try {
    s = await ctx.client.request("GET", "/v1/stats");
    lastError = null;
  } catch (err) {
    if (err.status === 401) return ctx.onAuthError(err);
    lastError = err;
    return renderAll();
  }
  rates = seriesRates(s.series, Date.now());
  last = s;
  renderAll();
}

export function mount(c) {
  ctx = c;
  mounted = true;
  if (!timer) {
    sample();
    timer = setInterval(sample, EVERY_MS);
  }
  renderAll();
  onResize = () => draw();
  window.addEventListener("resize", onResize);
}

export function unmount() {
  mounted = false;
  window.removeEventListener("resize", onResize);
}

/** Stops sampling and forgets the history (sign-out). */
export function stop() {
  clearInterval(timer);
  timer = undefined;
  rates = [];
  last = undefined;
  lastError = null;
}
