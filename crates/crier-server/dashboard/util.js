// Small DOM helpers shared by the pages. Text is always set as text, never as HTML.

export const $ = (sel, root = document) => root.querySelector(sel);

export const SEVERITIES = ["debug", "info", "warning", "error", "critical"];

export function show(node, visible) {
  node.hidden = !visible;
}

/** Creates an element: el("td", {class: "x", title: "y"}, "text", childNode, ...). */
export function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "dataset") Object.assign(n.dataset, v);
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : String(c));
  }
  return n;
}

/** Listeners that are removed together when a page goes away. */
export function listenerGroup() {
  let offs = [];
  return {
    on(node, type, fn, opts) {
      node.addEventListener(type, fn, opts);
      offs.push(() => node.removeEventListener(type, fn, opts));
    },
    off() {
      for (const f of offs) f();
      offs = [];
    },
  };
}

/** The text of an error for people: the hub's message, then its code. */
export function errorText(err) {
  if (!err) return "";
  if (err.status === 0 && err.code === "network_error") return `Cannot reach the hub: ${err.message}`;
  if (err instanceof TypeError) return `Cannot reach the hub (${err.message})`;
  const msg = String(err.message ?? err);
  return err.code && err.code !== "client_error" ? `${msg} (${err.code})` : msg;
}

/**
 * `ctx.client.request(method, path, body)` of a view's context `ctx`; a refused credential
 * (401) is told to the app (`ctx.onAuthError`) before the error is thrown on.
 */
export async function request(ctx, method, path, body) {
  try {
    return await ctx.client.request(method, path, body);
  } catch (err) {
    if (err.status === 401) ctx.onAuthError(err);
    throw err;
  }
}

/** Shows an error message in an alert element (or hides it with `null`). */
export function alertIn(node, err) {
  if (!err) {
    show(node, false);
    node.textContent = "";
    return;
  }
  node.textContent = errorText(err);
  show(node, true);
}

/** "12:03:04.567" for today, else "2026-11-23 12:03:04". */
export function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const today = new Date().toDateString() === d.toDateString();
  const hms = d.toLocaleTimeString([], { hour12: false });
  return today ? `${hms}.${String(d.getMilliseconds()).padStart(3, "0")}` : `${d.toLocaleDateString()} ${hms}`;
}

/** Comma-separated text to a list (empty entries dropped). */
export function list(text) {
  return String(text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Saves `text` as a download named `name`. */
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A filter object from form inputs (lists as arrays, empty keys left out). */
export function filterFrom({ type, category, source, subject, severity, tags }) {
  const f = {};
  for (const [k, v] of Object.entries({ type, category, source, subject, tags })) {
    const l = list(v);
    if (l.length) f[k] = l;
  }
  if (severity) f.severity = severity;
  return f;
}

/** The filter given by the inputs whose ids are `prefix` + key (`f-type`, `r-type`, ...). */
export function filterFromInputs(prefix, root = document) {
  const v = (k) => root.querySelector(`#${prefix}${k}`)?.value ?? "";
  return filterFrom({
    type: v("type"),
    category: v("category"),
    source: v("source"),
    subject: v("subject"),
    severity: v("severity"),
    tags: v("tags"),
  });
}

/** A filter in words, its keys always in the same order (the hub's). */
export function describeFilter(f) {
  if (!f || !Object.keys(f).length) return "everything";
  const order = ["type", "category", "source", "subject", "severity", "tags"];
  const rank = (k) => (order.includes(k) ? order.indexOf(k) : order.length);
  return Object.entries(f)
    .sort(([a], [b]) => rank(a) - rank(b))
    .map(([k, v]) => (k === "severity" ? `severity ≥ ${v}` : `${k}: ${Array.isArray(v) ? v.join(", ") : v}`))
    .join("; ");
}

/** Copies `text` to the clipboard and says so in `statusNode`. */
export async function copy(text, statusNode) {
  try {
    await navigator.clipboard.writeText(text);
    if (statusNode) statusNode.textContent = "Copied.";
  } catch {
    if (statusNode) statusNode.textContent = "Copying is not allowed here; select the text and copy it.";
  }
  if (statusNode) setTimeout(() => (statusNode.textContent = ""), 4000);
}

/** Asks in the confirmation dialog; resolves true when the person chose `ok`. */
export function confirmAction({ title, text, ok }) {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-h").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = ok;
    d.returnValue = "";
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

/** A severity badge. */
export function badge(severity) {
  const sev = SEVERITIES.includes(severity) ? severity : "info";
  return el("span", { class: `badge sev-${sev}` }, sev);
}
