// The live monitor: one subscription (SSE or WebSocket, from the crier client) with the §2
// filter, a virtualised list (only the rows in view are in the DOM), free-text search over
// what is shown, pause/resume with a held count, clear, export and a detail view.
//
// The subscription lives from sign-in to sign-out, not only while this page is shown: other
// pages keep the connection indicator truthful and nothing is missed while they are open.
//
// Saved filters (`/v1/filters`): the current filter can be saved under a name, a saved one
// applied (its fields fill the form and the stream opens with `filter=NAME`, resolved by
// the hub) or deleted. Changing the fields by hand leaves the saved filter.

import { connect } from "../client/crier.js";
import { $, el, show, alertIn, shortTime, filterFromInputs, describeFilter, download, listenerGroup, copy, badge, confirmAction, request } from "./util.js";
import { notify, mountToasts } from "./toasts.js";

const ROW_H = 34; // px; keep in step with --row-h in style.css
const OVERSCAN = 8;
const MAX_EVENTS = 50_000; // kept in memory; beyond this the oldest tenth is let go
const FIRST_LOAD = 100; // recent events shown on (re)subscribing

let ctx;
let sub; // the live Subscription
let events = []; // received and released, seq order
let held = []; // received while paused, seq order
let pending = []; // released, waiting for the next frame
let view = []; // the events that match the search, seq order
let paused = false;
let search = "";
let activeSeq = null; // the selected row, by seq
let frame = 0;
let mounted = false;
let trimmed = 0; // events let go because of MAX_EVENTS
let drop = null; // {seq, at} while reconnecting
let stream = 0; // bumped on every new subscription; shown as #list[data-stream] with its rows
let liveFrom = null; // the log's head when the subscription started: later events are notified
let saved = []; // the tenant's saved filters, by name
let savedName = null; // the saved filter the stream was opened with, if any
let running = null; // the filter the stream runs with, as canon() text
const ui = listenerGroup();
const pool = new Map(); // seq -> row element in the DOM
const texts = new WeakMap(); // event -> lower-case JSON, for search

const listBox = () => $("#list");

function textOf(e) {
  let t = texts.get(e);
  if (t === undefined) {
    t = JSON.stringify(e).toLowerCase();
    texts.set(e, t);
  }
  return t;
}

const matches = (e) => !search || textOf(e).includes(search);

/** Index in `view` of the event with `seq` (view is in seq order), or -1. */
function indexOfSeq(seq) {
  let lo = 0;
  let hi = view.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = view[mid].seq;
    if (s === seq) return mid;
    if (s < seq) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Displayed position (0 = newest, at the top) of the selected row, or -1. */
function activePos() {
  if (activeSeq === null) return -1;
  const i = indexOfSeq(activeSeq);
  return i < 0 ? -1 : view.length - 1 - i;
}

function rebuildView() {
  view = search ? events.filter(matches) : events.slice();
  if (activeSeq !== null && indexOfSeq(activeSeq) < 0) activeSeq = null;
}

function add(batch) {
  if (!batch.length) return;
  const box = mounted ? listBox() : null;
  const topBefore = box ? box.scrollTop : 0;
  let added = 0;
  for (const e of batch) {
    events.push(e);
    if (matches(e)) {
      view.push(e);
      added++;
    }
  }
  if (events.length > MAX_EVENTS) {
    const keep = Math.floor(MAX_EVENTS * 0.9);
    trimmed += events.length - keep;
    events = events.slice(events.length - keep);
    rebuildView();
  }
  // Newest first: keep what the reader is looking at still when rows arrive above it.
  if (box && topBefore > 0 && added) box.scrollTop = topBefore + added * ROW_H;
}

function onEvent(e) {
  // Only events committed after the subscription opened are news: not its first history.
  if (liveFrom !== null && e.seq > liveFrom) notify(e);
  if (paused) {
    held.push(e);
    if (held.length > MAX_EVENTS) {
      const keep = Math.floor(MAX_EVENTS * 0.9);
      trimmed += held.length - keep;
      held = held.slice(held.length - keep);
    }
  } else {
    pending.push(e);
    // Frames do not run in a background tab: keep what waits for one bounded too.
    if (pending.length >= 5000) add(pending.splice(0));
  }
  schedule();
}

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
  let shown = search ? `${view.length} of ${events.length} events` : `${events.length} events`;
  if (held.length) shown += ` · ${held.length} held`;
  if (trimmed) shown += ` · ${trimmed} oldest let go`;
  $("#count").textContent = shown;
  const btn = $("#pause");
  btn.textContent = paused ? `Resume (${held.length} held)` : "Pause";
  btn.setAttribute("aria-pressed", String(paused));
}

const pad2 = (n) => String(n).padStart(2, "0");

/** A row's time, short enough for its column: "12:03:04.567" today, "11-23 12:03:04" on
 * another day of this year, "2025-11-23 12:03" before it (the full time is the title). */
export function rowTime(iso, now = new Date()) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return iso ?? "";
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const hms = `${hm}:${pad2(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return `${hms}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  const md = `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  return d.getFullYear() === now.getFullYear() ? `${md} ${hms}` : `${d.getFullYear()}-${md} ${hm}`;
}

function makeRow(e) {
  const sev = e.severity ?? "info";
  return el(
    "div",
    { class: `row sev-${sev}`, role: "option", id: `ev-${e.seq}`, "aria-selected": "false", dataset: { seq: e.seq } },
    el("span", { class: "c-time", title: e.time }, rowTime(e.time)),
    badge(sev),
    el("span", { class: "c-type", title: e.type }, e.type),
    el("span", { class: "c-category", title: e.category ?? "" }, e.category ?? ""),
    el("span", { class: "c-subject", title: e.subject ?? "" }, e.subject ?? ""),
    el("span", { class: "c-source" }, e.source ?? ""),
    el("span", { class: "c-tags" }, (e.tags ?? []).join(" ")),
    el("span", { class: "c-seq" }, `#${e.seq}`),
  );
}

/** Draws the rows in (and a little around) the viewport; nothing else is in the DOM. */
function render() {
  if (!mounted) return;
  updateCounts();
  const box = listBox();
  // Which stream the rows and the counter belong to (set in the same frame as they are), so
  // that a reader can tell a re-opened stream's rows from the ones before.
  box.dataset.stream = String(stream);
  box.dataset.transport = sub?.transport ?? "";
  const n = view.length;
  $("#list-spacer").style.height = `${n * ROW_H}px`;
  const empty = $("#list-empty");
  show(empty, n === 0);
  if (n === 0) {
    empty.textContent = search && events.length ? "No shown event matches the search." : paused && held.length ? "Paused." : "Waiting for events…";
  }
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min(n - 1, Math.ceil((box.scrollTop + box.clientHeight) / ROW_H) + OVERSCAN);
  const wanted = new Set();
  for (let i = first; i <= last; i++) wanted.add(view[n - 1 - i].seq);
  for (const [seq, node] of pool) {
    if (!wanted.has(seq)) {
      node.remove();
      pool.delete(seq);
    }
  }
  const pos = activePos();
  for (let i = first; i <= last; i++) {
    const e = view[n - 1 - i];
    let node = pool.get(e.seq);
    if (!node) {
      node = makeRow(e);
      pool.set(e.seq, node);
      box.append(node);
    }
    if (node._y !== i) {
      node._y = i;
      node.style.transform = `translateY(${i * ROW_H}px)`;
      node.setAttribute("aria-posinset", String(i + 1));
    }
    node.setAttribute("aria-setsize", String(n));
    const sel = i === pos ? "true" : "false";
    if (node.getAttribute("aria-selected") !== sel) node.setAttribute("aria-selected", sel);
  }
  box.setAttribute("aria-activedescendant", pos >= first && pos <= last ? `ev-${activeSeq}` : "");
}

function clearRows() {
  for (const node of pool.values()) node.remove();
  pool.clear();
}

function openDetail(seq) {
  const i = indexOfSeq(seq);
  if (i < 0) return;
  const e = view[i];
  $("#detail-h").textContent = `${e.type} · #${e.seq}`;
  $("#detail-json").textContent = JSON.stringify(e, null, 2);
  $("#detail-copied").textContent = "";
  $("#detail").showModal();
}

function moveTo(pos) {
  const n = view.length;
  if (!n) return;
  pos = Math.max(0, Math.min(n - 1, pos));
  activeSeq = view[n - 1 - pos].seq;
  const box = listBox();
  const top = pos * ROW_H;
  if (top < box.scrollTop) box.scrollTop = top;
  else if (top + ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = top + ROW_H - box.clientHeight;
  render();
}

function note(text, kind = "ok") {
  const p = $("#stream-note");
  p.textContent = text ?? "";
  p.dataset.kind = kind;
  show(p, Boolean(text));
  fit();
}

/** Sizes the list to the rest of the window (at least 18rem). */
function fit() {
  if (!mounted) return;
  const box = listBox();
  const top = box.getBoundingClientRect().top + window.scrollY;
  const rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 15;
  box.style.height = `${Math.max(18 * rem, window.innerHeight - top - rem)}px`;
  schedule();
}

function readFilters() {
  return { filter: filterFromInputs("f-"), transport: $("#f-transport").value };
}

/** A filter as comparable text: keys in order, lists as given. */
const canon = (f) =>
  JSON.stringify(
    Object.keys(f ?? {})
      .sort()
      .map((k) => [k, f[k]]),
  );

const savedFilter = (name) => saved.find((f) => f.name === name);

/** A request to the hub as this view makes it: see {@link request}. */
const call = (method, path, body) => request(ctx, method, path, body);

function savedMessage(text) {
  $("#saved-status").textContent = text ?? "";
}

/** Shows the saved filters in the picker, keeping the applied one selected. */
function renderSaved() {
  const select = $("#saved-select");
  select.replaceChildren(
    el("option", { value: "" }, saved.length ? "none" : "none saved yet"),
    ...saved.map((f) => el("option", { value: f.name, title: f.description ?? describeFilter(f.filter) }, f.name)),
  );
  select.value = savedName && savedFilter(savedName) ? savedName : "";
  $("#saved-delete").disabled = !select.value;
  const f = savedFilter(select.value);
  const about = $("#saved-about");
  about.textContent = f ? `${describeFilter(f.filter)}${f.description ? ` — ${f.description}` : ""} · saved by ${f.created_by}` : "";
  show(about, Boolean(f));
  $("#saved").dataset.count = String(saved.length);
}

async function loadSaved() {
  try {
    saved = (await call("GET", "/v1/filters")).filters ?? [];
    alertIn($("#saved-error"), null);
  } catch (err) {
    alertIn($("#saved-error"), err);
  }
  if (mounted) renderSaved();
}

/** Fills the form with a saved filter and opens the stream with it, by name. */
function applySaved(name) {
  const f = savedFilter(name);
  if (!f) return;
  const join = (v) => (Array.isArray(v) ? v.join(", ") : (v ?? ""));
  for (const k of ["type", "category", "source", "subject", "tags"]) $(`#f-${k}`).value = join(f.filter[k]);
  $("#f-severity").value = f.filter.severity ?? "";
  savedName = name;
  savedMessage(null);
  subscribe();
}

async function saveCurrent() {
  const input = $("#save-name");
  const name = input.value.trim();
  alertIn($("#saved-error"), null);
  savedMessage(null);
  if (!name) {
    alertIn($("#saved-error"), new Error("Give the filter a name first."));
    input.focus();
    return;
  }
  const { filter } = readFilters();
  let replaced = false;
  try {
    try {
      await call("POST", "/v1/filters", { name, filter });
    } catch (err) {
      if (err.code !== "filter_exists") throw err;
      const ok = await confirmAction({
        title: "Replace saved filter?",
        text: `The tenant already has a saved filter “${name}” (${describeFilter(savedFilter(name)?.filter)}). Replace it with ${describeFilter(filter)}? Streams already open with it elsewhere keep the old definition until they reconnect.`,
        ok: "Replace",
      });
      if (!ok) return;
      await call("PUT", `/v1/filters/${encodeURIComponent(name)}`, { filter, description: savedFilter(name)?.description ?? null });
      replaced = true;
    }
  } catch (err) {
    alertIn($("#saved-error"), err);
    input.focus();
    return;
  }
  input.value = "";
  await loadSaved();
  savedName = name;
  if (canon(filter) === running) {
    // The stream already runs with this very filter: it is now the saved one.
    renderSaved();
    $("#filter-summary").textContent = `${name}: ${describeFilter(filter)}`;
  } else {
    // The form was changed without Apply: what was saved is what the stream shows now.
    subscribe();
  }
  savedMessage(replaced ? `Replaced “${name}”.` : `Saved as “${name}”.`);
}

async function deleteSaved() {
  const name = $("#saved-select").value;
  if (!name) return;
  const ok = await confirmAction({
    title: "Delete saved filter?",
    text: `Delete the saved filter “${name}” for everyone in this tenant? Streams already open with it keep running; new ones can no longer use it.`,
    ok: "Delete",
  });
  if (!ok) return;
  try {
    await call("DELETE", `/v1/filters/${encodeURIComponent(name)}`);
  } catch (err) {
    // Already gone is what was asked for.
    if (err.status !== 404) return alertIn($("#saved-error"), err);
  }
  if (savedName === name) savedName = null;
  await loadSaved();
  if (!savedName) $("#filter-summary").textContent = describeFilter(readFilters().filter);
  savedMessage(`Deleted “${name}”.`);
}

function subscribe() {
  if (sub) sub.close();
  const { filter, transport } = readFilters();
  // A saved filter stays applied only while the form still shows it.
  if (savedName && canon(savedFilter(savedName)?.filter) !== canon(filter)) savedName = null;
  if (mounted) renderSaved();
  stream++;
  events = [];
  view = [];
  held = [];
  pending = [];
  trimmed = 0;
  activeSeq = null;
  drop = null;
  clearRows();
  if (mounted) listBox().scrollTop = 0;
  alertIn($("#filter-error"), null);
  note(null);
  $("#filter-summary").textContent = savedName ? `${savedName}: ${describeFilter(filter)}` : describeFilter(filter);
  $("#list").dataset.filter = savedName ?? "";
  running = canon(filter);
  let mine;
  try {
    mine = connect({ url: ctx.url, token: ctx.token, filter: savedName ?? filter, transport, last: FIRST_LOAD });
  } catch (err) {
    sub = undefined;
    alertIn($("#filter-error"), err);
    return;
  }
  sub = mine;
  liveFrom = null;
  ctx.client
    .request("GET", "/v1/events?limit=1&order=desc")
    .then((r) => {
      if (sub === mine) liveFrom = Number(r?.head ?? 0);
    })
    .catch(() => {
      // Without the head nothing is notified; the stream itself reports its own errors.
    });
  // A replaced subscription may still be finishing a read: only the current one counts.
  mine.on("event", (e) => sub === mine && onEvent(e));
  mine.on("status", (s) => {
    if (sub !== mine) return;
    ctx.setConnection(s);
    if (s.state === "reconnecting" && !drop) {
      drop = { seq: mine.lastSeq, at: Date.now() };
      const from = drop.seq === undefined ? "" : ` after #${drop.seq}`;
      note(`Connection lost at ${shortTime(new Date().toISOString())}. Reconnecting; the stream will resume${from}, so nothing published meanwhile is missed.`, "warn");
    }
    if (s.state === "open" && drop) {
      const secs = Math.max(1, Math.round((Date.now() - drop.at) / 1000));
      const from = drop.seq === undefined ? "the start" : `#${drop.seq}`;
      note(`Reconnected at ${shortTime(new Date().toISOString())} after ${secs}s; resumed after ${from}: no event missed or repeated.`);
      drop = null;
    }
  });
  mine.on("reset", (r) => {
    if (sub !== mine) return;
    if (r?.reason === "retention") note(`Events before #${r.oldest} were deleted by retention while disconnected; continuing from #${r.oldest}.`);
    else if (r?.reason === "unknown_cursor") note(`The hub's log was replaced; continuing live from #${r.head}.`);
    else note("The hub moved the stream's position; continuing.");
  });
  mine.on("error", (err) => {
    if (sub !== mine) return;
    if (err.status === 401) ctx.onAuthError(err);
    else {
      alertIn($("#filter-error"), err);
      $("#filters-box").open = true;
    }
  });
  schedule();
}

const CSV_COLUMNS = ["seq", "id", "time", "tenant", "type", "source", "category", "severity", "subject", "actor", "tags", "data", "metadata"];

function csvCell(v) {
  const s =
    v === undefined || v === null
      ? ""
      : typeof v === "object"
        ? Array.isArray(v) && v.every((x) => typeof x === "string")
          ? v.join(";")
          : JSON.stringify(v)
        : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportShown() {
  const format = $("#export-format").value;
  const rows = view; // seq order
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  if (format === "json") download(`crier-events-${stamp}.json`, JSON.stringify(rows, null, 2) + "\n", "application/json");
  else if (format === "ndjson") download(`crier-events-${stamp}.ndjson`, rows.map((e) => JSON.stringify(e)).join("\n") + (rows.length ? "\n" : ""), "application/x-ndjson");
  else {
    const lines = [CSV_COLUMNS.join(",")].concat(rows.map((e) => CSV_COLUMNS.map((c) => csvCell(e[c])).join(",")));
    download(`crier-events-${stamp}.csv`, lines.join("\r\n") + "\r\n", "text/csv");
  }
}

function setPaused(p) {
  paused = p;
  if (!paused && held.length) {
    pending.push(...held); // in seq order, after whatever was already released
    held = [];
  }
  schedule();
}

/** Starts the live stream if it is not running (the shell calls this once signed in). */
export function start(c) {
  ctx = c;
  if (!sub) subscribe();
}

/** Stops the stream and forgets its events (sign-out). */
export function stop() {
  if (sub) sub.close();
  sub = undefined;
  stream++;
  events = [];
  view = [];
  held = [];
  pending = [];
  paused = false;
  activeSeq = null;
  saved = [];
  savedName = null;
  clearRows();
  ctx?.setConnection({ state: "closed" });
}

export function mount(c) {
  ctx = c;
  mounted = true;
  const box = listBox();
  const narrow = window.matchMedia("(max-width: 760px)").matches;
  if (narrow && !$("#filter-error").textContent) $("#filters-box").open = false;
  ui.on(box, "scroll", schedule, { passive: true });
  ui.on(window, "resize", fit);
  ui.on($("#filters-box"), "toggle", () => {
    fit();
    // Others of the tenant may have saved filters meanwhile.
    if ($("#filters-box").open) loadSaved();
  });
  ui.on(box, "click", (e) => {
    const r = e.target.closest(".row");
    if (!r) return;
    activeSeq = Number(r.dataset.seq);
    render();
    openDetail(activeSeq);
  });
  ui.on(box, "keydown", (e) => {
    const page = Math.max(1, Math.floor(box.clientHeight / ROW_H) - 1);
    const pos = activePos();
    const keys = { ArrowDown: pos + 1, ArrowUp: pos - 1, PageDown: pos + page, PageUp: pos - page, Home: 0, End: view.length - 1 };
    if (e.key in keys) {
      e.preventDefault();
      moveTo(pos < 0 && e.key !== "End" ? 0 : keys[e.key]);
    } else if ((e.key === "Enter" || e.key === " ") && activeSeq !== null) {
      e.preventDefault();
      openDetail(activeSeq);
    } else if (e.key === "Escape" && activeSeq !== null) {
      activeSeq = null;
      render();
    }
  });
  ui.on($("#filters"), "submit", (e) => {
    e.preventDefault();
    subscribe();
  });
  ui.on($("#filters"), "reset", () => setTimeout(subscribe, 0));
  ui.on($("#saved-select"), "change", (e) => {
    if (e.target.value) applySaved(e.target.value);
    else {
      savedName = null;
      renderSaved();
      subscribe();
    }
  });
  ui.on($("#save-form"), "submit", (e) => {
    e.preventDefault();
    saveCurrent();
  });
  ui.on($("#saved-delete"), "click", deleteSaved);
  let debounce;
  ui.on($("#search"), "input", (e) => {
    clearTimeout(debounce);
    const apply = () => {
      search = e.target.value.trim().toLowerCase();
      rebuildView();
      render();
    };
    // Small lists filter on every key; large ones wait for a pause in typing.
    if (events.length < 5000) apply();
    else debounce = setTimeout(apply, 150);
  });
  ui.on($("#pause"), "click", () => setPaused(!paused));
  ui.on($("#clear"), "click", () => {
    events = [];
    view = [];
    trimmed = 0;
    activeSeq = null;
    clearRows();
    schedule();
  });
  ui.on($("#export"), "click", exportShown);
  mountToasts(ui);
  ui.on($("#detail-copy"), "click", () => copy($("#detail-json").textContent, $("#detail-copied")));
  search = $("#search").value.trim().toLowerCase();
  rebuildView();
  clearRows();
  fit();
  render();
  renderSaved();
  loadSaved();
  if (!sub) subscribe();
}

export function unmount() {
  ui.off();
  mounted = false;
  clearRows();
}
