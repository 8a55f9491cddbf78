// DOM and formatting helpers. Everything is built with createElement /
// textContent: strings from the API are never parsed as HTML.

/**
 * h("div", {className, text, dataset, attrs, on}, ...children)
 * Children may be nodes, strings (inserted as text), arrays, or null/false.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { className, text, dataset, attrs, on, ...rest } = props || {};
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (dataset) {
    for (const [k, v] of Object.entries(dataset)) {
      if (v !== undefined && v !== null) node.dataset[k] = String(v);
    }
  }
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const [k, v] of Object.entries(rest)) {
    if (v !== undefined) node[k] = v;
  }
  if (on) {
    for (const [evt, fn] of Object.entries(on)) node.addEventListener(evt, fn);
  }
  append(node, children);
  return node;
}

/** Replace `node`'s children, with the same rules as h(): null/false are skipped, never shown as "null". */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

export function str(value, fallback = "") {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return fallback;
}

// Numbers use a fixed locale so that "10,000" is stable regardless of the
// browser's language; dates use the visitor's locale.
const numberFormat = new Intl.NumberFormat("en-US");

export function formatNumber(value) {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  return numberFormat.format(n);
}

export function formatLimit(limit) {
  if (limit === null) return "No limit";
  if (limit === undefined) return "—";
  return formatNumber(limit);
}

/** Accepts unix seconds, milliseconds or an ISO string; returns a Date or null. */
export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  let d;
  if (value instanceof Date) {
    d = new Date(value.getTime());
  } else if (typeof value === "number" && Number.isFinite(value)) {
    d = new Date(value < 1e11 ? value * 1000 : value);
  } else if (typeof value === "string") {
    const asNum = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN;
    d = Number.isFinite(asNum) ? new Date(asNum < 1e11 ? asNum * 1000 : asNum) : new Date(value);
  } else {
    return null;
  }
  return Number.isNaN(d.getTime()) ? null : d;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const relativeFormat = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

export function formatDateTime(value) {
  const d = toDate(value);
  return d ? dateTimeFormat.format(d) : "—";
}

export function formatDate(value) {
  const d = toDate(value);
  return d ? dateFormat.format(d) : "—";
}

export function formatTime(value) {
  const d = toDate(value);
  return d ? timeFormat.format(d) : "—";
}

export function formatRelative(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return "—";
  const diff = (d.getTime() - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return "just now";
  const steps = [
    [60, "second", 1],
    [3600, "minute", 60],
    [86400, "hour", 3600],
    [86400 * 7, "day", 86400],
    [86400 * 30, "week", 86400 * 7],
  ];
  for (const [limit, unit, size] of steps) {
    if (abs < limit) return relativeFormat.format(Math.round(diff / size), unit);
  }
  return dateTimeFormat.format(d);
}

/** "0x1234…abcd" for long identifiers, unchanged otherwise. */
export function shorten(value, head = 6, tail = 4) {
  const s = str(value);
  if (s.length <= head + tail + 3) return s;
  return `${s.slice(0, head)}…${s.slice(-tail)}`;
}

// Identifiers (grant ids, workspace ids) are shortened the same way everywhere: the first ID_HEAD and last
// ID_TAIL characters, the full value in the element's title.
export const ID_HEAD = 12;
export const ID_TAIL = 6;

/** The shortened text of an identifier ("cgrant_8fJk2…Qa9xZw"); short ids are unchanged. */
export function shortId(value) {
  return shorten(value, ID_HEAD, ID_TAIL);
}

/** A monospace span showing the shortened identifier, the full one in `title`; "—" when there is none. */
export function idText(value, attrs = {}) {
  const full = str(value);
  if (!full) return h("span", { className: "muted", text: "—", attrs });
  return h("span", { className: "mono id", text: shortId(full), attrs: { ...attrs, title: full } });
}

const ERROR_TEXT = {
  // BFF problem codes
  not_authenticated: "You are not signed in.",
  session_expired: "Your session has ended: it expired, or it was signed out from another device. Please sign in again.",
  session_not_found: "That session is not among the live sessions (it may have ended already). The list was refreshed.",
  csrf_required: "The request was blocked by the CSRF protection. Reload the page and try again.",
  forbidden: "You are not an administrator.",
  limit_management_disabled: "Administration (transaction limits, force sign-out) is turned off on this server: no administrators are configured.",
  upstream_unavailable: "The Kryptos API is unreachable right now. Please try again later.",
  upstream_timeout: "The Kryptos API took too long to answer. Please try again.",
  session_store_unavailable: "The session store is unavailable. Please try again in a moment.",
  refresh_in_progress: "Your session is being refreshed. Please try again in a moment.",
  network_error: "The server could not be reached. Check your connection and try again.",
  invalid_response: "The server sent an unexpected answer.",
  // Upstream (Kryptos) codes
  unauthorized: "The Kryptos API did not accept your session. Signing in again should fix this.",
  rate_limit_exceeded: "Too many requests to the Kryptos API.",
  NOT_ANON_USER: "This grant belongs to a Linked Kryptos account. Transaction limits only apply to Guest users.",
  ACCESS_DENIED: "Your developer account is not allowed to manage this grant.",
  GRANT_NOT_FOUND: "This grant no longer exists. Refresh the list and try again.",
  INVALID_CLIENT: "Kryptos rejected this server's client credentials. Check the BFF configuration.",
  // Kryptos Connect (Guests)
  connect_revoked: "Your connection was revoked; connect again.",
  public_token_used: "This connection attempt was already completed. Connect again to start a new one.",
  public_token_expired: "The connection attempt took too long and expired. Please connect again.",
  invalid_public_token: "Kryptos did not recognise this connection attempt. Please connect again.",
  connect_failed: "Kryptos did not accept the request. Please try again in a moment.",
  popup_blocked: "Your browser blocked the Kryptos window.",
};

// Codes whose server message is worth showing after the plain-words text.
const SHOW_SERVER_MESSAGE = new Set(["invalid_parameter", "invalid_parameters", "VALIDATION_ERROR"]);

/** Plain-words explanation of an ApiError (without the code). */
export function describeError(err) {
  if (!err) return "Something went wrong.";
  const code = typeof err.code === "string" ? err.code : "";
  let text = Object.prototype.hasOwnProperty.call(ERROR_TEXT, code) ? ERROR_TEXT[code] : "";
  if (code === "rate_limit_exceeded" || err.status === 429) {
    text = ERROR_TEXT.rate_limit_exceeded;
    text += err.retryAfter != null ? ` Try again in ${err.retryAfter} s.` : " Try again shortly.";
  } else if (SHOW_SERVER_MESSAGE.has(code)) {
    text = `The request was rejected: ${err.message || "invalid value"}`;
    if (err.details && err.details.length) text += ` (${err.details.join("; ")})`;
  } else if (!text) {
    text = err.message ? `Request failed: ${err.message}` : "Something went wrong.";
  }
  return text;
}

/** Fill `node` with the explanation and a "(code: …)" suffix. */
export function renderError(node, err, prefix = "") {
  const code = err && typeof err.code === "string" ? err.code : "unknown_error";
  fill(
    node,
    prefix ? h("strong", { text: `${prefix} ` }) : null,
    h("span", { text: describeError(err) }),
    " ",
    h("span", { className: "error-code", text: `(code: ${code}${err && err.status ? `, HTTP ${err.status}` : ""})` }),
  );
}

export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

let idCounter = 0;
export function uid(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A banner that shows the most recent error among several sources. */
export function createErrorBanner(node) {
  const errors = new Map();
  const textNode = h("div", { className: "banner-text" });
  const dismiss = h("button", {
    type: "button",
    className: "banner-dismiss",
    attrs: { "aria-label": "Dismiss error" },
    on: { click: () => clearAll() },
  });
  node.replaceChildren(h("span", { className: "banner-icon", attrs: { "aria-hidden": "true" } }), textNode, dismiss);

  function render() {
    const last = [...errors.values()].pop();
    if (!last) {
      node.hidden = true;
      textNode.replaceChildren();
      delete node.dataset.code;
      return;
    }
    renderError(textNode, last.err, last.label);
    node.dataset.code = last.err && last.err.code ? String(last.err.code) : "unknown_error";
    node.hidden = false;
  }
  function show(source, err, label = "") {
    errors.delete(source);
    errors.set(source, { err, label });
    render();
  }
  function clear(source) {
    if (errors.delete(source)) render();
  }
  function clearAll() {
    errors.clear();
    render();
  }
  render();
  return { show, clear, clearAll };
}
