// Notifications for error and critical events: small toasts in a corner, off by default and
// chosen in the monitor's toolbar (kept in this browser's local storage). They live in a
// polite live region and never take the focus, so typing in a filter or reading a detail is
// never interrupted; each goes away after a while or with its close button, and at most a
// few are shown at once (the rest are counted).

import { $, el, SEVERITIES, shortTime } from "./util.js";

const KEY = "crier.notify"; // "off", "error" (error and critical) or "critical"
const SHOWN = 4;
const LIFE_MS = 8000;

let hidden = 0; // notifications not shown because SHOWN were on screen

/** The chosen level: "off", "error" or "critical". */
export function level() {
  try {
    const v = localStorage.getItem(KEY);
    return v === "error" || v === "critical" ? v : "off";
  } catch {
    return "off";
  }
}

function setLevel(v) {
  try {
    localStorage.setItem(KEY, v);
  } catch {
    // Storage may be refused (private windows); the choice then lasts for this page only.
  }
}

function box() {
  let b = $("#toasts");
  if (!b) {
    b = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite", "aria-label": "Notifications" });
    document.body.append(b);
  }
  return b;
}

function updateMore(b) {
  let more = b.querySelector(".toast-more");
  if (!hidden) return more?.remove();
  if (!more) {
    more = el("div", { class: "toast toast-more muted small" });
    b.append(more);
  }
  more.textContent = `and ${hidden} more`;
}

/** Shows a toast for `e` if notifications are on and its severity reaches the chosen level. */
export function notify(e) {
  const lv = level();
  if (lv === "off") return;
  const sev = SEVERITIES.includes(e.severity) ? e.severity : "info";
  if (SEVERITIES.indexOf(sev) < SEVERITIES.indexOf(lv)) return;
  const b = box();
  const shown = b.querySelectorAll(".toast:not(.toast-more)");
  if (shown.length >= SHOWN) {
    hidden++;
    return updateMore(b);
  }
  const close = el("button", { type: "button", class: "toast-close", "aria-label": `Dismiss ${e.type}` }, "×");
  const t = el(
    "div",
    { class: `toast sev-${sev}`, dataset: { seq: e.seq } },
    el("div", { class: "toast-head" }, el("strong", {}, `${sev}: ${e.type}`), close),
    el("div", { class: "toast-body small" }, [e.subject, e.source, shortTime(e.time), `#${e.seq}`].filter(Boolean).join(" · ")),
  );
  const remove = () => {
    t.remove();
    if (hidden) {
      hidden = 0;
      updateMore(b);
    }
  };
  close.addEventListener("click", remove);
  b.prepend(t);
  setTimeout(remove, LIFE_MS);
}

/** Wires the level select (`#notify-level`) of the monitor. */
export function mountToasts(group) {
  const sel = $("#notify-level");
  if (!sel) return;
  sel.value = level();
  group.on(sel, "change", () => setLevel(sel.value));
}
