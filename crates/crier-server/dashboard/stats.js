// Stats: GET /v1/stats every two seconds; events per second over the last five minutes
// (from the change in the stored total) drawn on a canvas, and the counts as tables.

import { $, el, alertIn } from "/ui/util.js";

const EVERY_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;

let ctx;
let timer;
let samples = []; // {t, total}
let rates = []; // {t, rate}
let onResize;

function draw() {
  const canvas = $("#rate-chart");
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 180;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--muted").trim() || "#888";
  const accent = css.getPropertyValue("--accent").trim() || "#3b82f6";
  const now = Date.now();
  const max = Math.max(1, ...rates.map((r) => r.rate));
  const pad = { l: 44, r: 8, t: 8, b: 20 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const x = (t) => pad.l + w * (1 - (now - t) / WINDOW_MS);
  const y = (v) => pad.t + h * (1 - v / max);
  g.strokeStyle = fg;
  g.fillStyle = fg;
  g.globalAlpha = 0.35;
  g.lineWidth = 1;
  g.font = "11px system-ui, sans-serif";
  for (const frac of [0, 0.5, 1]) {
    const yy = pad.t + h * (1 - frac);
    g.beginPath();
    g.moveTo(pad.l, yy);
    g.lineTo(pad.l + w, yy);
    g.stroke();
  }
  g.globalAlpha = 1;
  for (const frac of [0, 0.5, 1]) g.fillText(formatRate(max * frac), 4, pad.t + h * (1 - frac) + 4);
  for (const [label, ago] of [["-5 min", WINDOW_MS], ["-2.5", WINDOW_MS / 2], ["now", 0]]) {
    g.fillText(label, Math.min(width - 28, Math.max(pad.l, x(now - ago) - 14)), height - 4);
  }
  if (rates.length < 2) return;
  g.strokeStyle = accent;
  g.lineWidth = 2;
  g.beginPath();
  rates.forEach((r, i) => (i ? g.lineTo(x(r.t), y(r.rate)) : g.moveTo(x(r.t), y(r.rate))));
  g.stroke();
  g.globalAlpha = 0.15;
  g.fillStyle = accent;
  g.lineTo(x(rates.at(-1).t), pad.t + h);
  g.lineTo(x(rates[0].t), pad.t + h);
  g.closePath();
  g.fill();
  g.globalAlpha = 1;
}

function formatRate(v) {
  return v >= 100 ? String(Math.round(v)) : v.toFixed(1);
}

function tile(label, value, id) {
  return el("div", { class: "tile", id }, el("div", { class: "tile-value" }, String(value)), el("div", { class: "tile-label" }, label));
}

function table(title, counts, cls = "") {
  const entries = Object.entries(counts ?? {}).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const body = entries.slice(0, 15).map(([k, n]) => {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${Math.round((100 * n) / max)}%`;
    return el("tr", { class: cls && `${cls}-${k}` }, el("th", { scope: "row" }, k), el("td", { class: "num" }, n.toLocaleString()), el("td", { class: "barcell" }, bar));
  });
  return el(
    "section",
    { class: "card", "aria-label": title },
    el("h2", {}, title),
    entries.length ? el("table", {}, el("tbody", {}, body)) : el("p", { class: "muted" }, "none yet"),
    entries.length > 15 ? el("p", { class: "muted" }, `and ${entries.length - 15} more`) : null,
  );
}

async function sample() {
  let s;
  try {
    s = await ctx.client.request("GET", "/v1/stats");
    alertIn($("#stats-error"), null);
  } catch (err) {
    if (err.status === 401) return ctx.onAuthError(err);
    return alertIn($("#stats-error"), err);
  }
  const t = Date.now();
  const prev = samples.at(-1);
  samples.push({ t, total: s.events.total });
  if (prev) {
    const rate = Math.max(0, (s.events.total - prev.total) / ((t - prev.t) / 1000));
    rates.push({ t, rate });
    $("#rate-now").textContent = `now ${formatRate(rate)}/s`;
  }
  samples = samples.filter((x) => t - x.t <= WINDOW_MS + EVERY_MS);
  rates = rates.filter((x) => t - x.t <= WINDOW_MS);
  const d = s.deliveries ?? {};
  const subs = s.subscriptions ?? {};
  $("#stats-tiles").replaceChildren(
    tile("events stored", s.events.total.toLocaleString(), "t-total"),
    tile("in the last hour", s.events.last_hour.toLocaleString(), "t-hour"),
    tile("published per second (last minute)", s.publish_rate_per_s, "t-rate"),
    tile("SSE connections", s.connections.sse, "t-sse"),
    tile("WebSocket connections", s.connections.ws, "t-ws"),
    tile("subscriptions active / paused", `${subs.active ?? 0} / ${subs.paused ?? 0}`, "t-subs"),
    tile("deliveries delivered", d.delivered ?? 0, "t-delivered"),
    tile("failed / pending / dead", `${d.failed ?? 0} / ${d.pending ?? 0} / ${d.dead ?? 0}`, "t-failed"),
  );
  $("#stats-tables").replaceChildren(
    table("By type", s.events.by_type),
    table("By severity", s.events.by_severity, "sev"),
    table("By category", s.events.by_category),
    table("By source", s.events.by_source),
  );
  draw();
}

export function mount(c) {
  ctx = c;
  c.setConnection({ state: "closed" });
  samples = [];
  rates = [];
  sample();
  timer = setInterval(sample, EVERY_MS);
  onResize = () => draw();
  window.addEventListener("resize", onResize);
}

export function unmount() {
  clearInterval(timer);
  window.removeEventListener("resize", onResize);
}
