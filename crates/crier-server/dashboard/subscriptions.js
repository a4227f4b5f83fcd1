// Webhook subscriptions: list, create (the secret is shown once), pause/resume, delete,
// deliveries with their status, redeliver.

import { $, el, show, alertIn, shortTime, filterFrom, describeFilter } from "/ui/util.js";

let ctx;
let listeners = [];
let selected; // subscription whose deliveries are shown
let refresh;

function on(node, type, fn) {
  node.addEventListener(type, fn);
  listeners.push(() => node.removeEventListener(type, fn));
}

async function call(method, path, body) {
  try {
    return await ctx.client.request(method, path, body);
  } catch (err) {
    if (err.status === 401) ctx.onAuthError(err);
    throw err;
  }
}

function confirmDelete(text) {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-text").textContent = text;
    d.returnValue = "";
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

async function load() {
  let subs;
  try {
    subs = (await call("GET", "/v1/subscriptions")).subscriptions;
  } catch (err) {
    return alertIn($("#sub-error"), err);
  }
  const body = $("#subs-body");
  // A refresh must not pull the keyboard focus out from under the user: it returns to the
  // same control of the same row.
  const focused = body.contains(document.activeElement) ? document.activeElement : null;
  const focusKey = focused && [focused.closest("tr")?.dataset.id, focused.dataset.action];
  body.replaceChildren(
    ...subs.map((s) =>
      el(
        "tr",
        { dataset: { id: s.id } },
        el("td", {}, el("strong", {}, s.name), el("div", { class: "muted small" }, s.id)),
        el("td", { class: "url" }, s.webhook?.url ?? ""),
        el("td", {}, describeFilter(s.filter)),
        el("td", {}, el("span", { class: `status st-${s.status}` }, s.status), s.note ? el("div", { class: "muted small" }, s.note) : null),
        el("td", { class: "num" }, String(s.cursor)),
        el(
          "td",
          { class: "row-actions" },
          el("button", { type: "button", dataset: { action: "pause" }, onclick: () => setPaused(s, s.status !== "paused"), "aria-label": `${s.status === "paused" ? "Resume" : "Pause"} ${s.name}` }, s.status === "paused" ? "Resume" : "Pause"),
          el("button", { type: "button", dataset: { action: "deliveries" }, onclick: () => showDeliveries(s), "aria-label": `Deliveries of ${s.name}` }, "Deliveries"),
          el("button", { type: "button", class: "danger", dataset: { action: "delete" }, onclick: () => remove(s), "aria-label": `Delete ${s.name}` }, "Delete"),
        ),
      ),
    ),
  );
  if (focusKey) {
    const tr = [...body.rows].find((r) => r.dataset.id === focusKey[0]);
    tr?.querySelector(`[data-action="${focusKey[1]}"]`)?.focus();
  }
  show($("#subs-empty"), subs.length === 0);
  if (selected) {
    const still = subs.find((s) => s.id === selected.id);
    if (still) {
      selected = still;
      loadDeliveries();
    } else {
      selected = undefined;
      show($("#deliveries"), false);
    }
  }
}

async function setPaused(s, paused) {
  try {
    await call("PATCH", `/v1/subscriptions/${encodeURIComponent(s.id)}`, { paused });
    await load();
  } catch (err) {
    alertIn($("#sub-error"), err);
  }
}

async function remove(s) {
  if (!(await confirmDelete(`Delete the subscription “${s.name}”? Its deliveries stop and its records go.`))) return;
  try {
    await call("DELETE", `/v1/subscriptions/${encodeURIComponent(s.id)}`);
    await load();
  } catch (err) {
    alertIn($("#sub-error"), err);
  }
}

function showDeliveries(s) {
  selected = s;
  $("#deliveries-h").textContent = `Deliveries of ${s.name}`;
  $("#d-after").value = "";
  show($("#deliveries"), true);
  loadDeliveries();
  $("#deliveries").scrollIntoView({ block: "nearest" });
}

async function loadDeliveries() {
  if (!selected) return;
  const status = $("#d-status").value;
  let list;
  try {
    const q = status ? `?status=${encodeURIComponent(status)}` : "";
    list = (await call("GET", `/v1/subscriptions/${encodeURIComponent(selected.id)}/deliveries${q}`)).deliveries;
  } catch (err) {
    $("#d-message").textContent = err.message;
    return;
  }
  $("#deliveries-body").replaceChildren(
    ...list.map((d) =>
      el(
        "tr",
        { class: `delivery d-${d.status}` },
        el("td", { class: "num" }, String(d.seq)),
        el("td", { class: "small" }, d.event_id),
        el("td", {}, el("span", { class: `status st-${d.status}` }, d.status)),
        el("td", { class: "num" }, String(d.attempts)),
        el("td", {}, d.last_status_code ? String(d.last_status_code) : "", d.last_error ? el("div", { class: "muted small" }, d.last_error) : null),
        el("td", {}, d.next_attempt_at ? shortTime(d.next_attempt_at) : ""),
      ),
    ),
  );
  $("#d-message").textContent = list.length ? `${list.length} deliveries` : "No deliveries yet.";
}

async function redeliver() {
  if (!selected) return;
  const after = Number($("#d-after").value || 0);
  try {
    await call("POST", `/v1/subscriptions/${encodeURIComponent(selected.id)}/redeliver`, { after });
    $("#d-message").textContent = `Redelivering events after seq ${after}.`;
    await load();
  } catch (err) {
    $("#d-message").textContent = err.message;
  }
}

async function create(e) {
  e.preventDefault();
  alertIn($("#sub-error"), null);
  const body = {
    name: $("#s-name").value.trim(),
    filter: filterFrom({ type: $("#s-type").value, severity: $("#s-severity").value }),
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
  $("#secret").showModal();
  $("#secret-value").select();
  await load();
}

export function mount(c) {
  ctx = c;
  listeners = [];
  c.setConnection({ state: "closed" });
  on($("#sub-form"), "submit", create);
  on($("#d-status"), "change", loadDeliveries);
  on($("#d-refresh"), "click", loadDeliveries);
  on($("#d-redeliver"), "click", redeliver);
  on($("#secret-copy"), "click", () => navigator.clipboard?.writeText($("#secret-value").value));
  load();
  refresh = setInterval(load, 3000);
}

export function unmount() {
  for (const off of listeners) off();
  listeners = [];
  clearInterval(refresh);
  selected = undefined;
}
