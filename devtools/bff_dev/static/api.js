// Same-origin API client for the BFF.
//
// Every request:
//   * goes to a same-origin path (absolute URLs are refused),
//   * carries `X-CSRF: 1` and `credentials: "same-origin"`,
//   * never follows redirects (`redirect: "error"`),
//   * turns every non-2xx answer into an ApiError with a stable `code`,
//     whether the body is a BFF problem+json document, an upstream Kryptos
//     error ({error, message} or {success: false, error, code}) or not JSON.
//
// The page never receives tokens: the BFF keeps them server-side, and this
// module never looks for any.

const MAX_TEXT = 500;

export class ApiError extends Error {
  constructor({ status = 0, code = "unknown_error", message = "", title = "", details = [], retryAfter = null, body = null } = {}) {
    super(message || title || code);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.title = title;
    this.details = details;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

let unauthenticatedHandler = null;
let connectRevokedHandler = null;

/** Register the function called when any request answers 401 not_authenticated / session_expired. */
export function onUnauthenticated(fn) {
  unauthenticatedHandler = fn;
}

/** Register the function called when a data call answers 401 connect_revoked (the Connect grant is gone). */
export function onConnectRevoked(fn) {
  connectRevokedHandler = fn;
}

export function isAbort(err) {
  return err != null && err.name === "AbortError";
}

function clip(value) {
  if (typeof value !== "string") return "";
  const s = value.trim();
  return s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}…` : s;
}

function parseRetryAfter(header) {
  if (!header) return null;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const when = Date.parse(trimmed);
  if (Number.isNaN(when)) return null;
  return Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

function normaliseDetails(details) {
  if (!Array.isArray(details)) return [];
  const out = [];
  for (const d of details.slice(0, 5)) {
    if (typeof d === "string") {
      out.push(clip(d));
    } else if (d && typeof d === "object") {
      const field = typeof d.field === "string" ? d.field : typeof d.path === "string" ? d.path : Array.isArray(d.loc) ? d.loc.join(".") : "";
      const msg = typeof d.message === "string" ? d.message : typeof d.msg === "string" ? d.msg : "";
      const text = [field, msg].filter(Boolean).join(": ");
      if (text) out.push(clip(text));
    }
  }
  return out;
}

function toApiError(res, body) {
  const obj = body && typeof body === "object" && !Array.isArray(body) ? body : {};
  let code = "";
  if (typeof obj.code === "string" && obj.code) code = obj.code;
  else if (typeof obj.error === "string" && obj.error) code = obj.error;
  else code = `http_${res.status}`;
  code = code.slice(0, 80);

  const message =
    clip(obj.detail) ||
    clip(obj.message) ||
    (typeof obj.code === "string" ? clip(obj.error) : "") ||
    clip(obj.title) ||
    clip(res.statusText) ||
    `HTTP ${res.status}`;

  return new ApiError({
    status: res.status,
    code,
    message,
    title: clip(obj.title),
    details: normaliseDetails(obj.details),
    retryAfter: parseRetryAfter(res.headers.get("Retry-After")),
    body: obj,
  });
}

async function readBody(res) {
  let text;
  try {
    text = await res.text();
  } catch (err) {
    if (isAbort(err)) throw err;
    return { parsed: null, isJson: false };
  }
  if (!text) return { parsed: null, isJson: false };
  try {
    return { parsed: JSON.parse(text), isJson: true };
  } catch {
    return { parsed: null, isJson: false };
  }
}

/** Resolve after `ms`, or reject with an AbortError as soon as `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(new DOMException("Aborted", "AbortError"));
      return;
    }
    const t = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(t);
          reject(new DOMException("Aborted", "AbortError"));
        },
        { once: true },
      );
    }
  });
}

/**
 * Perform a same-origin request and return the parsed JSON body (or null).
 * Throws ApiError on any failure, or an AbortError when `signal` aborts.
 * `notifyUnauthenticated: false` keeps a 401 from reaching the onUnauthenticated handler (for calls whose
 * 401 is an answer, not a lost session: /auth/session of a browser that only holds a Connect grant).
 */
export async function request(path, { method = "GET", json, signal, retryOnRefresh = true, notifyUnauthenticated = true } = {}) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//") || path.includes("\\")) {
    throw new ApiError({ code: "invalid_path", message: "Refusing to call a non same-origin URL." });
  }
  const headers = new Headers({
    "X-CSRF": "1",
    Accept: "application/json, application/problem+json",
  });
  let body;
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }

  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body,
      signal,
      credentials: "same-origin",
      redirect: "error",
      mode: "same-origin",
      cache: "no-store",
      referrerPolicy: "same-origin",
    });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError({
      code: "network_error",
      message: "The server could not be reached, or it answered with a redirect.",
    });
  }

  const { parsed, isJson } = await readBody(res);

  if (res.ok) {
    if (parsed === null && !isJson && res.status !== 204) {
      // A 2xx without a JSON body is unexpected for every endpoint we call.
      throw new ApiError({ status: res.status, code: "invalid_response", message: "The server answered with something that is not JSON." });
    }
    return parsed;
  }

  const err = toApiError(res, parsed);

  if (res.status === 401 && (err.code === "not_authenticated" || err.code === "session_expired")) {
    if (unauthenticatedHandler && notifyUnauthenticated) unauthenticatedHandler(err);
    throw err;
  }

  if (res.status === 401 && err.code === "connect_revoked") {
    if (connectRevokedHandler) connectRevokedHandler(err);
    throw err;
  }

  if (retryOnRefresh && err.code === "refresh_in_progress" && method === "GET") {
    await sleep(700, signal);
    return request(path, { method, json, signal, retryOnRefresh: false, notifyUnauthenticated });
  }

  throw err;
}

const segment = (value) => encodeURIComponent(String(value));

export const api = {
  // The OpenID Connect sign-in only: a browser holding just a Connect grant gets a 401 here, which is an
  // answer ("not signed in"), not a lost session.
  session: (opts) => request("/auth/session", { ...opts, notifyUnauthenticated: false }),
  logout: (path = "/auth/logout") => request(path, { method: "POST" }),
  userinfo: (opts) => request("/api/v1/userinfo", opts),
  integrations: ({ page, pageSize, searchedKey }, opts) => {
    const q = new URLSearchParams();
    q.set("page", String(page));
    q.set("pageSize", String(pageSize));
    if (searchedKey) q.set("searchedKey", searchedKey);
    return request(`/api/v1/integrations?${q.toString()}`, opts);
  },
  resync: (integrationId, opts) => request(`/api/v1/integrations/${segment(integrationId)}/resync`, { ...opts, method: "POST" }),
  syncJob: (jobId, opts) => request(`/api/v1/sync/${segment(jobId)}`, opts),
  grants: (opts) => request("/api/developer/grants", opts),
  setGrantLimit: (grantId, patch) =>
    request(`/api/developer/grants/${segment(grantId)}/transaction-limit`, { method: "PATCH", json: patch }),
  revokeGrant: (grantId) => request(`/api/developer/grants/${segment(grantId)}/revoke`, { method: "POST" }),
  // "Your devices": the signed-in user's sessions, named by opaque handles (never a session id or a cookie).
  sessions: (opts) => request("/auth/sessions", opts),
  endSession: (handle) => request(`/auth/sessions/${segment(handle)}`, { method: "DELETE" }),
  endOtherSessions: () => request("/auth/sessions/end-others", { method: "POST" }),
  // Administrators: any user's sessions, by their `sub` (force sign-out).
  userSessions: (sub, opts) => request(`/api/admin/users/${segment(sub)}/sessions`, opts),
  endUserSessions: (sub) => request(`/api/admin/users/${segment(sub)}/sessions`, { method: "DELETE" }),
  endUserSession: (sub, handle) => request(`/api/admin/users/${segment(sub)}/sessions/${segment(handle)}`, { method: "DELETE" }),
  // Kryptos Connect (Guests): the 15-year token stays in the BFF; the page only ever sees the one-time
  // link and public tokens, which are worthless once used.
  connectStatus: (opts) => request("/connect/status", { ...opts, notifyUnauthenticated: false }),
  connectLinkToken: () => request("/connect/link-token", { method: "POST" }),
  connectExchange: (publicToken) => request("/connect/exchange", { method: "POST", json: { public_token: publicToken } }),
  connectDisconnect: () => request("/connect/disconnect", { method: "POST" }),
};
