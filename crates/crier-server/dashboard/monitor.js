// The live monitor: one subscription (SSE or WebSocket) with the §2 filters, a virtualised
// list (only the visible rows are in the DOM), free-text search over what is shown,
// pause/resume with a held count, clear, export and a detail view.

import { connect } from "/client/crier.js";
import { $, el, show, alertIn, shortTime, filterFrom, download } from "/ui/util.js";

const ROW_H = 34; // px; keep in step with .row in style.css
const OVERSCAN = 6;
const MAX_EVENTS = 50_000; // beyond this the oldest tenth is let go
const FIRST_LOAD = 100; // recent events shown on (re)subscribing

let ctx;
let sub;
let events = []; // arrival (= seq) order
let held = [];
let view = []; // the events that match the search, seq order
let paused = false;
let search = "";
let active = -1; // index into the displayed order (0 = newest)
let frame = 0;
let listeners = [];
const pool = new Map(); // displayed index -> row element

const list = () => $("#list");

function on(node, type, fn) {
  node.addEventListener(type, fn);
  listeners.push(() => node.removeEventListener(type, fn));
}

function text(e) {
  if (e._text === undefined) {
    Object.defineProperty(e, "_text", { value: JSON.stringify(e).toLowerCase(), enumerable: false });
  }
  return e._text;
}

const matches = (e) => !search || text(e).includes(search);

function rebuildView() {
  view = search ? events.filter(matches) : events.slice();
  if (active >= view.length) active = view.length - 1;
  schedule();
}

function add(batch) {
  if (!batch.length) return;
  const topBefore = list().scrollTop;
  let added = 0;
  for (const e of batch) {
    events.push(e);
    if (matches(e)) {
      view.push(e);
      added++;
    }
  }
  if (events.length > MAX_EVENTS) {
    events = events.slice(events.length - Math.floor(MAX_EVENTS * 0.9));
    rebuildView();
  }
  // Newest first: keep what the reader is looking at still when rows arrive above it.
  if (topBefore > 0 && added) {
    list().scrollTop = topBefore + added * ROW_H;
    if (active >= 0) active += added;
  }
  schedule();
}

function onEvent(e) {
  if (paused) {
    held.push(e);
    updateCounts();
    return;
  }
  pending.push(e);
  schedule();
}
let pending = [];

function schedule() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    if (pending.length) {
      const batch = pending;
      pending = [];
      add(batch);
    }
    render();
  });
}

function updateCounts() {
  const shown = search ? `${view.length} of ${events.length} events` : `${events.length} events`;
  $("#count").textContent = held.length ? `${shown} · ${held.length} held` : shown;
  const btn = $("#pause");
  btn.textContent = paused ? `Resume (${held.length} held)` : "Pause";
  btn.setAttribute("aria-pressed", String(paused));
}

function row(e, i) {
  const sev = e.severity ?? "info";
  const r = el(
    "div",
    {
      class: `row sev-${sev}`,
      role: "option",
      id: `ev-${e.seq}`,
      "aria-selected": i === active ? "true" : "false",
      dataset: { index: i, seq: e.seq },
    },
    el("span", { class: "c-time", title: e.time }, shortTime(e.time)),
    el("span", { class: `badge sev-${sev}` }, sev),
    el("span", { class: "c-type" }, e.type),
    el("span", { class: "c-subject" }, e.subject ?? ""),
    el("span", { class: "c-source" }, e.source),
    el("span", { class: "c-tags" }, (e.tags ?? []).join(" ")),
    el("span", { class: "c-seq" }, `#${e.seq}`),
  );
  r.style.transform = `translateY(${i * ROW_H}px)`;
  return r;
}

/** Draws the rows in (and a little around) the viewport; nothing else is in the DOM. */
function render() {
  const box = list();
  if (!box) return;
  const n = view.length;
  $("#list-spacer").style.height = `${n * ROW_H}px`;
  show($("#list-empty"), n === 0);
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min(n - 1, Math.ceil((box.scrollTop + box.clientHeight) / ROW_H) + OVERSCAN);
  for (const [i, node] of pool) {
    const e = view[n - 1 - i];
    if (i < first || i > last || !e || node.dataset.seq !== String(e.seq)) {
      node.remove();
      pool.delete(i);
    }
  }
  for (let i = first; i <= last; i++) {
    const e = view[n - 1 - i];
    const existing = pool.get(i);
    if (existing) {
      existing.setAttribute("aria-selected", i === active ? "true" : "false");
      continue;
    }
    const node = row(e, i);
    pool.set(i, node);
    box.append(node);
  }
  box.setAttribute("aria-activedescendant", active >= 0 && view[n - 1 - active] ? `ev-${view[n - 1 - active].seq}` : "");
  updateCounts();
}

function clearRows() {
  for (const node of pool.values()) node.remove();
  pool.clear();
}

function openDetail(i) {
  const e = view[view.length - 1 - i];
  if (!e) return;
  $("#detail-h").textContent = `${e.type} · #${e.seq}`;
  $("#detail-json").textContent = JSON.stringify(e, null, 2);
  $("#detail").showModal();
}

function moveActive(to) {
  const n = view.length;
  if (!n) return;
  active = Math.max(0, Math.min(n - 1, to));
  const box = list();
  const top = active * ROW_H;
  if (top < box.scrollTop) box.scrollTop = top;
  else if (top + ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = top + ROW_H - box.clientHeight;
  render();
}

function readFilters() {
  const f = $("#filters");
  return {
    filter: filterFrom({
      type: f.type.value,
      category: f.category.value,
      source: f.source.value,
      subject: f.subject.value,
      severity: f.severity.value,
      tags: f.tags.value,
    }),
    transport: f.transport.value,
  };
}

function subscribe() {
  if (sub) sub.close();
  const { filter, transport } = readFilters();
  events = [];
  view = [];
  held = [];
  pending = [];
  active = -1;
  clearRows();
  list().scrollTop = 0;
  alertIn($("#filter-error"), null);
  const mine = connect({ url: ctx.url, token: ctx.token, filter, transport, last: FIRST_LOAD });
  sub = mine;
  // A replaced subscription may still be finishing a read: only the current one counts.
  mine.on("event", (e) => sub === mine && onEvent(e));
  mine.on("status", (s) => sub === mine && ctx.setConnection(s));
  mine.on("error", (err) => {
    if (sub !== mine) return;
    if (err.status === 401) ctx.onAuthError(err);
    else alertIn($("#filter-error"), err);
  });
  schedule();
}

const CSV_COLUMNS = ["seq", "id", "time", "tenant", "type", "source", "category", "severity", "subject", "actor", "tags", "data", "metadata"];

function csvCell(v) {
  const s = v === undefined || v === null ? "" : typeof v === "object" ? (Array.isArray(v) && v.every((x) => typeof x === "string") ? v.join(";") : JSON.stringify(v)) : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportShown() {
  const format = $("#export-format").value;
  const rows = view; // seq order
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  if (format === "json") download(`crier-events-${stamp}.json`, JSON.stringify(rows, null, 2), "application/json");
  else if (format === "ndjson") download(`crier-events-${stamp}.ndjson`, rows.map((e) => JSON.stringify(e)).join("\n") + "\n", "application/x-ndjson");
  else {
    const lines = [CSV_COLUMNS.join(",")].concat(rows.map((e) => CSV_COLUMNS.map((c) => csvCell(e[c])).join(",")));
    download(`crier-events-${stamp}.csv`, lines.join("\r\n") + "\r\n", "text/csv");
  }
}

export function mount(c) {
  ctx = c;
  listeners = [];
  const box = list();
  on(box, "scroll", schedule);
  on(window, "resize", schedule);
  on(box, "click", (e) => {
    const r = e.target.closest(".row");
    if (!r) return;
    active = Number(r.dataset.index);
    render();
    openDetail(active);
  });
  on(box, "keydown", (e) => {
    const page = Math.max(1, Math.floor(box.clientHeight / ROW_H) - 1);
    const keys = {
      ArrowDown: active + 1,
      ArrowUp: active - 1,
      PageDown: active + page,
      PageUp: active - page,
      Home: 0,
      End: view.length - 1,
    };
    if (e.key in keys) {
      e.preventDefault();
      moveActive(active < 0 ? 0 : keys[e.key]);
    } else if (e.key === "Enter" && active >= 0) {
      e.preventDefault();
      openDetail(active);
    }
  });
  on($("#filters"), "submit", (e) => {
    e.preventDefault();
    subscribe();
  });
  on($("#filters"), "reset", () => setTimeout(subscribe, 0));
  let debounce;
  on($("#search"), "input", (e) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      search = e.target.value.trim().toLowerCase();
      active = -1;
      clearRows();
      rebuildView();
    }, 120);
  });
  on($("#pause"), "click", () => {
    paused = !paused;
    if (!paused && held.length) {
      pending.push(...held);
      held = [];
    }
    updateCounts();
    schedule();
  });
  on($("#clear"), "click", () => {
    events = [];
    view = [];
    held = [];
    active = -1;
    clearRows();
    schedule();
  });
  on($("#export"), "click", exportShown);
  on($("#detail-copy"), "click", () => navigator.clipboard?.writeText($("#detail-json").textContent));
  subscribe();
}

export function unmount() {
  for (const off of listeners) off();
  listeners = [];
  if (sub) sub.close();
  sub = undefined;
  cancelAnimationFrame(frame);
  frame = 0;
  clearRows();
  ctx.setConnection({ state: "closed" });
}
