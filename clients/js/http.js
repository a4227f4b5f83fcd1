// crier JavaScript client, HTTP side: the CrierError every part throws, the checks of
// options, the §2 filter in its query and JSON forms, and the JSON request to the hub's API.
// Split out of crier.js (which re-exports CrierError) so the transports share one copy.

const FILTER_KEYS = ["type", "category", "source", "subject", "severity", "tags"];
/** The longest delay setTimeout takes (a longer one fires at once). */
export const MAX_TIMER = 2 ** 31 - 1;

/**
 * An error answered by the hub (`status`, `code` and `message` from its JSON error) or
 * raised by the client (`status` 0: `network_error`, `timeout`, `invalid_option`, ...).
 */
export class CrierError extends Error {
  constructor(message, { status = 0, code = "client_error", retryAfter, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "CrierError";
    this.status = status;
    this.code = code;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

export const optionError = (message) => new CrierError(message, { code: "invalid_option" });

export function networkError(e, what = "cannot reach the hub") {
  return new CrierError(`${what}: ${e?.message ?? e}`, { code: "network_error", cause: e });
}

export function baseUrl(url) {
  const u = url ?? globalThis.location?.origin;
  if (!u) throw optionError("`url` is required (e.g. http://127.0.0.1:7400)");
  return String(u).replace(/\/+$/, "");
}

export async function resolveToken(token) {
  const t = typeof token === "function" ? await token() : token;
  return t ? String(t) : undefined;
}

export function fetchOf(opts) {
  const f = opts?.fetch ?? globalThis.fetch;
  if (typeof f !== "function") throw optionError("no fetch implementation: pass `fetch`");
  return f;
}

export function nonNegativeInt(value, name) {
  if (value === undefined || value === null) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw optionError(`\`${name}\` must be a non-negative integer`);
  return n;
}

/** `Retry-After`: delta seconds or an HTTP date, as seconds from now. */
export function parseRetryAfter(value) {
  if (value === null || value === undefined || value === "") return undefined;
  const n = Number(value);
  if (Number.isFinite(n) && n >= 0) return n;
  const t = Date.parse(value);
  return Number.isFinite(t) ? Math.max(0, (t - Date.now()) / 1000) : undefined;
}

/** Refuses a saved filter's name that the hub could never know (names are short slugs). */
export function checkFilterName(name) {
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) {
    throw new CrierError(`\`filter\` ${JSON.stringify(name)} is not the name of a saved filter (lowercase letters, digits, ".", "_", "-")`, { code: "invalid_filter_name" });
  }
  return name;
}

/** The §2 filter as a list of [key, value] pairs: normalised, with unknown keys refused. */
export function filterEntries(filter) {
  if (filter === undefined || filter === null) return [];
  if (typeof filter === "string") return [["filter", checkFilterName(filter)]];
  if (typeof filter !== "object" || Array.isArray(filter)) throw new CrierError("`filter` must be an object, or the name of a saved filter", { code: "invalid_filter" });
  const out = [];
  for (const [k, v] of Object.entries(filter)) {
    if (v === undefined || v === null) continue;
    const key = k === "tag" ? "tags" : k;
    if (!FILTER_KEYS.includes(key)) {
      throw new CrierError(`unknown filter key \`${k}\` (one of ${FILTER_KEYS.join(", ")})`, { code: "invalid_filter" });
    }
    if (key === "severity") out.push([key, String(v)]);
    else {
      const list = (Array.isArray(v) ? v : [v]).map(String);
      if (list.length) out.push([key, list]);
    }
  }
  return out;
}

/** Appends a §2 filter to URL search params: comma-separated lists, `tag` for tags. */
export function addFilter(params, filter) {
  for (const [k, v] of filterEntries(filter)) {
    params.set(k === "tags" ? "tag" : k, Array.isArray(v) ? v.join(",") : v);
  }
}

/** The §2 filter in its JSON form (lists, `tags`), for WebSocket subscriptions; a saved
 * filter's name stays a string. */
export function jsonFilter(filter) {
  if (typeof filter === "string") return checkFilterName(filter);
  return Object.fromEntries(filterEntries(filter));
}

/** The CrierError of a non-2xx answer, from the hub's `{"error": {code, message}}`. */
export async function errorOf(res) {
  let code = `http_${res.status}`;
  let message = `the hub answered ${res.status}${res.statusText ? " " + res.statusText : ""}`;
  try {
    const body = JSON.parse(await res.text());
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // not JSON (a proxy's page, an empty body)
  }
  return new CrierError(message, { status: res.status, code, retryAfter: parseRetryAfter(res.headers.get("retry-after")) });
}

export async function request(opts, method, path, { body, signal } = {}) {
  const url = baseUrl(opts?.url) + path;
  const doFetch = fetchOf(opts);
  const token = await resolveToken(opts?.token);
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await doFetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e?.name === "AbortError") throw e;
    throw networkError(e);
  }
  if (!res.ok) throw await errorOf(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}
