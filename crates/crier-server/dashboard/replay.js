// Replay: a time range (preset or custom) and a filter re-sent at 1–10x or as fast as
// possible, with a progress bar fed by the replay's status and its event stream.

import { readSse } from "/client/crier.js";
import { $, el, show, alertIn, shortTime, filterFrom } from "/ui/util.js";

const PRESETS = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3 };
const SHOWN = 500;

let ctx;
let listeners = [];
let running; // {id, abort, poll}

function on(node, type, fn) {
  node.addEventListener(type, fn);
  listeners.push(() => node.removeEventListener(type, fn));
}

function range() {
  const kind = $("#replay-form").range.value;
  if (kind !== "custom") {
    const until = new Date();
    return { since: new Date(until.getTime() - PRESETS[kind]).toISOString(), until: until.toISOString() };
  }
  const since = $("#r-since").value;
  const until = $("#r-until").value;
  if (!since || !until) throw new Error("give both ends of the custom range");
  const s = new Date(since);
  const u = new Date(until);
  if (!(s < u)) throw new Error("the range must start before it ends");
  return { since: s.toISOString(), until: u.toISOString() };
}

function setProgress(sent, total, state) {
  const bar = $("#replay-progress");
  bar.max = Math.max(1, total);
  bar.value = total === 0 && state === "done" ? 1 : sent;
  const pct = total ? Math.round((100 * sent) / total) : state === "done" ? 100 : 0;
  bar.setAttribute("aria-valuetext", `${pct}%`);
  $("#replay-status").textContent = `${state}: ${sent} of ${total} events (${pct}%)`;
}

function finish(state) {
  if (!running) return;
  clearInterval(running.poll);
  running.abort.abort();
  running = undefined;
  $("#replay-start").disabled = false;
  $("#replay-stop").disabled = true;
  if (state) $("#replay-status").dataset.state = state;
}

async function poll(id) {
  try {
    const s = await ctx.client.request("GET", `/v1/replays/${encodeURIComponent(id)}`);
    setProgress(s.sent, s.total, s.state);
    if (s.state !== "running") finish(s.state);
  } catch (err) {
    if (err.status === 401) ctx.onAuthError(err);
  }
}

async function start(e) {
  e.preventDefault();
  alertIn($("#replay-error"), null);
  let body;
  try {
    const speed = $("#r-speed").value;
    body = {
      ...range(),
      filter: filterFrom({ type: $("#r-type").value, severity: $("#r-severity").value }),
      speed: speed === "max" ? "max" : Number(speed),
    };
  } catch (err) {
    return alertIn($("#replay-error"), err);
  }
  let r;
  try {
    r = await ctx.client.request("POST", "/v1/replays", body);
  } catch (err) {
    if (err.status === 401) return ctx.onAuthError(err);
    return alertIn($("#replay-error"), err);
  }
  const out = $("#replay-events");
  out.replaceChildren();
  $("#replay-status").dataset.state = "running";
  setProgress(0, r.total, r.state);
  const abort = new AbortController();
  running = { id: r.id, abort, poll: setInterval(() => poll(r.id), 500) };
  $("#replay-start").disabled = true;
  $("#replay-stop").disabled = false;
  let received = 0;
  try {
    const token = await ctx.token();
    const res = await fetch(`${ctx.url}/v1/replays/${encodeURIComponent(r.id)}/stream`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: abort.signal,
    });
    if (!res.ok) throw new Error(`the replay stream answered ${res.status}`);
    await readSse(res, (m) => {
      if (m.event === "crier.replay_done") {
        const s = JSON.parse(m.data);
        setProgress(s.sent, s.total, s.state);
        finish(s.state);
        return;
      }
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      received++;
      if (running) setProgress(received, r.total, "running");
      out.prepend(el("li", { class: `sev-${ev.severity}` }, el("span", { class: "c-time" }, shortTime(ev.time)), " ", el("strong", {}, ev.type), " ", ev.subject ?? "", ` #${ev.seq}`));
      while (out.childElementCount > SHOWN) out.lastElementChild.remove();
    });
  } catch (err) {
    if (!abort.signal.aborted) alertIn($("#replay-error"), err);
  }
  if (running && running.id === r.id) await poll(r.id);
}

async function stop() {
  if (!running) return;
  const id = running.id;
  try {
    const s = await ctx.client.request("POST", `/v1/replays/${encodeURIComponent(id)}/stop`);
    setProgress(s.sent ?? 0, s.total ?? 0, s.state ?? "stopped");
  } catch (err) {
    alertIn($("#replay-error"), err);
  }
  finish("stopped");
}

export function mount(c) {
  ctx = c;
  listeners = [];
  c.setConnection({ state: "closed" });
  for (const radio of document.querySelectorAll('#replay-form input[name="range"]')) {
    on(radio, "change", () => show($("#replay-custom"), $("#replay-form").range.value === "custom"));
  }
  on($("#replay-form"), "submit", start);
  on($("#replay-stop"), "click", stop);
}

export function unmount() {
  for (const off of listeners) off();
  listeners = [];
  finish();
}
