// Replay: a time range (preset or custom) and a filter re-sent at 1–10x or as fast as
// possible (POST /v1/replays, then its SSE stream), with a progress bar fed by the stream
// and by the replay's status, and a stop button.

import { readSse } from "../client/crier.js";
import { $, el, show, alertIn, shortTime, filterFromInputs, listenerGroup, badge, errorText } from "./util.js";

const PRESETS = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3 };
const SHOWN = 500; // replayed events kept in the list (newest first)
const STATES = { running: "Running", done: "Done", stopped: "Stopped" };

let ctx;
const ui = listenerGroup();
let running; // {id, total, abort, poll}
let shown = []; // replayed events in the list, oldest first
let incoming = [];
let frame = 0;

function range() {
  const kind = $("#replay-form").range.value;
  if (kind !== "custom") {
    const until = new Date();
    return { since: new Date(until.getTime() - PRESETS[kind]).toISOString(), until: until.toISOString() };
  }
  const since = $("#r-since").value;
  const until = $("#r-until").value;
  if (!since || !until) throw new Error("Give both ends of the custom range.");
  const s = new Date(since);
  const u = new Date(until);
  if (Number.isNaN(s.getTime()) || Number.isNaN(u.getTime())) throw new Error("The custom range has an invalid date.");
  if (!(s < u)) throw new Error("The range must start before it ends.");
  return { since: s.toISOString(), until: u.toISOString() };
}

function setProgress(sent, total, state) {
  const bar = $("#replay-progress");
  const pct = total ? Math.min(100, Math.floor((100 * sent) / total)) : state === "done" ? 100 : 0;
  bar.max = 100;
  bar.value = pct;
  bar.setAttribute("aria-valuetext", `${pct}%`);
  $("#replay-pct").textContent = `${pct}%`;
  const label = STATES[state] ?? state;
  $("#replay-status").textContent =
    total === 0 && state !== "running" ? `${label}: no event in this range matches the filter.` : `${label}: ${sent} of ${total} events (${pct}%)`;
  if ($("#replay-status").dataset.state !== state) {
    // Announced once per state, not for every event.
    $("#replay-live").textContent = state === "running" ? `Replay running: ${total} events.` : $("#replay-status").textContent;
  }
  $("#replay-status").dataset.state = state;
  bar.closest(".card").classList.toggle("done", state === "done");
}

function finish() {
  if (!running) return;
  clearInterval(running.poll);
  running.abort.abort();
  running = undefined;
  $("#replay-start").disabled = false;
  $("#replay-stop").disabled = true;
}

async function poll(id) {
  try {
    const s = await ctx.client.request("GET", `/v1/replays/${encodeURIComponent(id)}`);
    if (!running || running.id !== id) return;
    setProgress(s.sent, s.total, s.state);
    if (s.state !== "running") finish();
  } catch (err) {
    if (err.status === 401) ctx.onAuthError(err);
  }
}

function flush() {
  frame = 0;
  if (!incoming.length) return;
  shown = shown.concat(incoming).slice(-SHOWN);
  incoming = [];
  const out = $("#replay-events");
  out.replaceChildren(
    ...shown
      .slice()
      .reverse()
      .map((ev) =>
        el(
          "li",
          { class: `sev-${ev.severity}` },
          el(
            "button",
            { type: "button", class: "mini-row", dataset: { seq: ev.seq }, "aria-label": `${ev.type}, ${ev.severity}, seq ${ev.seq}: open` },
            el("span", { class: "c-time" }, shortTime(ev.time)),
            badge(ev.severity),
            el("strong", { class: "c-type" }, ev.type),
            el("span", { class: "c-subject muted" }, ev.subject ?? ""),
            el("span", { class: "c-seq" }, `#${ev.seq}`),
          ),
        ),
      ),
  );
}

function openDetail(seq) {
  const e = shown.find((x) => x.seq === seq);
  if (!e) return;
  $("#detail-h").textContent = `${e.type} · #${e.seq} (replayed)`;
  $("#detail-json").textContent = JSON.stringify(e, null, 2);
  $("#detail-copied").textContent = "";
  $("#detail").showModal();
}

async function start(e) {
  e.preventDefault();
  if (running) return;
  alertIn($("#replay-error"), null);
  let body;
  try {
    const speed = $("#r-speed").value;
    body = { ...range(), filter: filterFromInputs("r-"), speed: speed === "max" ? "max" : Number(speed) };
  } catch (err) {
    return alertIn($("#replay-error"), err);
  }
  $("#replay-start").disabled = true;
  let r;
  try {
    r = await ctx.client.request("POST", "/v1/replays", body);
  } catch (err) {
    $("#replay-start").disabled = false;
    if (err.status === 401) return ctx.onAuthError(err);
    return alertIn($("#replay-error"), err);
  }
  shown = [];
  incoming = [];
  $("#replay-events").replaceChildren();
  // The replay the status line speaks of, so that one replay's "Done" is not read as the next's.
  $("#replay-status").dataset.replay = r.id;
  setProgress(0, r.total, r.state);
  const abort = new AbortController();
  running = { id: r.id, total: r.total, abort, poll: setInterval(() => poll(r.id), 1000) };
  $("#replay-stop").disabled = false;
  let received = 0;
  try {
    const token = await ctx.token();
    const res = await fetch(`${ctx.url}/v1/replays/${encodeURIComponent(r.id)}/stream`, {
      headers: { accept: "text/event-stream", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      signal: abort.signal,
      cache: "no-store",
    });
    if (!res.ok) {
      let msg = `the replay stream answered ${res.status}`;
      try {
        msg = (await res.json()).error?.message ?? msg;
      } catch {
        // not JSON
      }
      throw new Error(msg);
    }
    await readSse(res, (m) => {
      if (m.event === "crier.replay_done") {
        const s = JSON.parse(m.data);
        if (running?.id === r.id) {
          setProgress(s.sent, s.total, s.state);
          finish();
        }
        return;
      }
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      received++;
      if (running?.id === r.id) setProgress(received, r.total, "running");
      incoming.push(ev);
      if (!frame) frame = requestAnimationFrame(flush);
    });
  } catch (err) {
    if (!abort.signal.aborted) alertIn($("#replay-error"), { message: `The replay stream broke off: ${errorText(err)}` });
  }
  if (running?.id === r.id) await poll(r.id);
  if (running?.id === r.id) finish();
}

async function stop() {
  if (!running) return;
  const id = running.id;
  $("#replay-stop").disabled = true;
  try {
    const s = await ctx.client.request("POST", `/v1/replays/${encodeURIComponent(id)}/stop`);
    setProgress(s.sent ?? 0, s.total ?? running?.total ?? 0, s.state ?? "stopped");
  } catch (err) {
    alertIn($("#replay-error"), err);
  }
  finish();
}

export function mount(c) {
  ctx = c;
  const custom = () => {
    const on = $("#replay-form").range.value === "custom";
    show($("#replay-custom"), on);
    if (on && !$("#r-since").value) {
      // Prefill the last hour, in local time as datetime-local wants it.
      const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
      const now = new Date();
      $("#r-since").value = local(new Date(now.getTime() - 3600e3));
      $("#r-until").value = local(now);
    }
  };
  for (const radio of document.querySelectorAll('#replay-form input[name="range"]')) ui.on(radio, "change", custom);
  ui.on($("#replay-form"), "submit", start);
  ui.on($("#replay-stop"), "click", stop);
  ui.on($("#replay-events"), "click", (e) => {
    const b = e.target.closest("button[data-seq]");
    if (b) openDetail(Number(b.dataset.seq));
  });
}

export function unmount() {
  ui.off();
  // A replay is bound to this page: leaving it stops the replay.
  if (running) {
    const id = running.id;
    ctx.client.request("POST", `/v1/replays/${encodeURIComponent(id)}/stop`).catch(() => {});
    $("#replay-status").textContent = "Stopped: left the page.";
  }
  finish();
}
