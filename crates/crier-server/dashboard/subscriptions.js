// Webhook subscriptions: list, create (the secret is shown once), pause/resume, delete,
// deliveries with their status, redeliver. The list refreshes every few seconds.

import { $, el, show, alertIn, shortTime, filterFromInputs, describeFilter, listenerGroup, copy, errorText, confirmAction, request } from "./util.js";

const REFRESH_MS = 3000;

let ctx;
const ui = listenerGroup();
let selected; // the subscription whose deliveries are shown
let refresh;

/** A request to the hub as this view makes it: see {@link request}. */
const call = (method, path, body) => request(ctx, method, path, body);

function confirmDelete(text) {
  return confirmAction({ title: "Delete subscription?", text, ok: "Delete" });
}

function subRow(s) {
  const paused = s.status === "paused";
  return el(
    "tr",
    { dataset: { id: s.id }, class: selected?.id === s.id ? "selected" : "" },
    el("td", {}, el("strong", {}, s.name), el("div", { class: "muted small mono" }, s.id)),
    el("td", { class: "url" }, s.webhook?.url ?? ""),
    el("td", {}, describeFilter(s.filter)),
    el(
      "td",
      {},
      el("span", { class: `status st-${s.status}` }, s.status),
      s.note ? el("div", { class: "muted small" }, s.note) : null,
      s.expires_at ? el("div", { class: "muted small" }, `expires ${shortTime(s.expires_at)}`) : null,
    ),
    el("td", { class: "num" }, String(s.cursor)),
    el(
      "td",
      {},
      el(
        "div",
        { class: "row-actions" },
        el("button", { type: "button", dataset: { action: "pause" }, onclick: () => setPaused(s, !paused), "aria-label": `${paused ? "Resume" : "Pause"} ${s.name}` }, paused ? "Resume" : "Pause"),
        el("button", { type: "button", dataset: { action: "deliveries" }, onclick: () => showDeliveries(s), "aria-label": `Deliveries of ${s.name}` }, "Deliveries"),
        el("button", { type: "button", class: "danger", dataset: { action: "delete" }, onclick: () => remove(s), "aria-label": `Delete ${s.name}` }, "Delete"),
      ),
    ),
  );
}

async function load() {
  let subs;
  try {
    subs = (await call("GET", "/v1/subscriptions")).subscriptions;
    alertIn($("#subs-error"), null);
  } catch (err) {
    return alertIn($("#subs-error"), err);
  }
  const body = $("#subs-body");
  // A refresh must not pull the keyboard focus out from under the user: it returns to the
  // same control of the same row.
  const focused = body.contains(document.activeElement) ? document.activeElement : null;
  const focusKey = focused && [focused.closest("tr")?.dataset.id, focused.dataset.action];
  if (selected) selected = subs.find((s) => s.id === selected.id);
  body.replaceChildren(...subs.map(subRow));
  if (focusKey) {
    const tr = [...body.rows].find((r) => r.dataset.id === focusKey[0]);
    tr?.querySelector(`[data-action="${focusKey[1]}"]`)?.focus();
  }
  show($("#subs-empty"), subs.length === 0);
  if (selected) loadDeliveries();
  else show($("#deliveries"), false);
}

async function setPaused(s, paused) {
  alertIn($("#subs-error"), null);
  try {
    await call("PATCH", `/v1/subscriptions/${encodeURIComponent(s.id)}`, { paused });
    await load();
  } catch (err) {
    alertIn($("#subs-error"), err);
  }
}

async function remove(s) {
  if (!(await confirmDelete(`Delete the subscription “${s.name}”? Its webhook gets no more events and its delivery records are removed.`))) return;
  try {
    await call("DELETE", `/v1/subscriptions/${encodeURIComponent(s.id)}`);
    if (selected?.id === s.id) selected = undefined;
    await load();
  } catch (err) {
    alertIn($("#subs-error"), err);
  }
}

function showDeliveries(s) {
  selected = s;
  for (const tr of $("#subs-body").rows) tr.classList.toggle("selected", tr.dataset.id === s.id);
  $("#deliveries-h").textContent = `Deliveries of ${s.name}`;
  $("#d-after").value = "";
  $("#d-action").textContent = "";
  $("#d-message").textContent = "Loading…";
  $("#deliveries-body").replaceChildren();
  show($("#deliveries"), true);
  loadDeliveries();
  $("#deliveries").scrollIntoView({ block: "nearest" });
  $("#deliveries-h").focus({ preventScroll: true });
}

async function loadDeliveries() {
  if (!selected) return;
  const id = selected.id;
  const status = $("#d-status").value;
  let list;
  try {
    const q = status ? `?status=${encodeURIComponent(status)}` : "";
    list = (await call("GET", `/v1/subscriptions/${encodeURIComponent(id)}/deliveries${q}`)).deliveries;
  } catch (err) {
    $("#d-message").textContent = errorText(err);
    return;
  }
  if (selected?.id !== id) return;
  $("#deliveries-body").replaceChildren(
    ...list.map((d) =>
      el(
        "tr",
        { class: `delivery d-${d.status}` },
        el("td", { class: "num" }, String(d.seq)),
        el("td", { class: "small mono" }, d.event_id),
        el("td", {}, el("span", { class: `status st-${d.status}` }, d.status)),
        el("td", { class: "num" }, String(d.attempts)),
        el("td", {}, d.last_status_code ? `HTTP ${d.last_status_code}` : "", d.last_error ? el("div", { class: "muted small" }, d.last_error) : null),
        el("td", {}, d.next_attempt_at ? shortTime(d.next_attempt_at) : ""),
      ),
    ),
  );
  const counts = {};
  for (const d of list) counts[d.status] = (counts[d.status] ?? 0) + 1;
  const summary = Object.entries(counts)
    .map(([k, n]) => `${n} ${k}`)
    .join(", ");
  $("#d-message").textContent = list.length
    ? `${list.length} deliveries (${summary}); cursor at #${selected.cursor}.`
    : status
      ? `No ${status} deliveries.`
      : "No deliveries yet: events matching the filter will show here.";
}

async function redeliver() {
  if (!selected) return;
  const raw = $("#d-after").value.trim();
  const after = Number(raw || 0);
  const said = $("#d-action");
  if (!Number.isInteger(after) || after < 0) {
    said.textContent = "Give a seq: a whole number, 0 for the oldest stored event.";
    return;
  }
  try {
    await call("POST", `/v1/subscriptions/${encodeURIComponent(selected.id)}/redeliver`, { after });
    said.textContent = `Redelivering events after #${after}.`;
    await load();
  } catch (err) {
    said.textContent = errorText(err);
  }
}

async function create(e) {
  e.preventDefault();
  alertIn($("#sub-error"), null);
  const body = {
    name: $("#s-name").value.trim(),
    filter: filterFromInputs("s-"),
    webhook: { url: $("#s-url").value.trim() },
  };
  if ($("#s-from").value === "0") body.after = 0;
  let s;
  try {
    s = await call("POST", "/v1/subscriptions", body);
  } catch (err) {
    return alertIn($("#sub-error"), err);
  }
  $("#sub-form").reset();
  $("#secret-value").value = s.webhook?.secret ?? "";
  $("#secret-copied").textContent = "";
  $("#secret").showModal();
  $("#secret-value").focus();
  $("#secret-value").select();
  await load();
}

export function mount(c) {
  ctx = c;
  ui.on($("#sub-form"), "submit", create);
  ui.on($("#d-status"), "change", loadDeliveries);
  ui.on($("#d-refresh"), "click", loadDeliveries);
  ui.on($("#d-redeliver"), "click", redeliver);
  ui.on($("#secret-copy"), "click", () => copy($("#secret-value").value, $("#secret-copied")));
  load();
  refresh = setInterval(load, REFRESH_MS);
}

export function unmount() {
  ui.off();
  clearInterval(refresh);
  selected = undefined;
  show($("#deliveries"), false);
}
