// The one door to Bulwark: every page talks to the HTTP API through `call`, with the session cookie (sent by the
// browser) and the session's CSRF token in the X-CSRF-Token header on every change.

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || "unknown";
    this.value = error.value ?? null;
    this.hint = error.hint ?? null;
    const retry = headers && headers.get("Retry-After");
    this.retryAfter = retry ? Math.max(1, parseInt(retry, 10) || 1) : null;
  }

  // One line a person can act on: what failed, the value, and the fix.
  get text() {
    let line = this.message;
    if (this.value) line += `: '${this.value}'`;
    if (this.hint) line += ` (${this.hint})`;
    return line;
  }
}

const state = { csrf: "", onSignedOut: null };

export function setCsrf(token) {
  state.csrf = token || "";
}

// Called when the API says the session is gone (401 on a page that needs one).
export function onSignedOut(callback) {
  state.onSignedOut = callback;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export async function call(method, path, { json, params, raw = false, quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = state.csrf;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}${query(params)}`, init);
  } catch (exc) {
    throw new ApiError(0, { error: { message: "the gateway does not answer", hint: "check the connection and try again" } });
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch (exc) {
      body = null;
    }
    const error = new ApiError(response.status, body, response.headers);
    if (response.status === 401 && !quiet401 && state.onSignedOut) state.onSignedOut(error);
    throw error;
  }
  if (response.status === 204) return null;
  if (raw) return response;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, params, options) => call("GET", path, { ...options, params });
export const post = (path, json, options) => call("POST", path, { ...options, json });
export const patch = (path, json, options) => call("PATCH", path, { ...options, json });
export const del = (path, options) => call("DELETE", path, options);

// Peer names go into paths: encode them (the API refuses anything but its name characters anyway).
export const peerPath = (name, rest = "") => `/peers/${encodeURIComponent(name)}${rest}`;
