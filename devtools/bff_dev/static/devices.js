// "Your devices" (every signed-in user) and "Force sign-out" (administrators).
//
// Sessions are named by the opaque handles the BFF lists (GET /auth/sessions): never a session id, a cookie
// or anything that could rebuild one. Everything the server says (device labels, a user's sub, error
// details) is shown as text, never parsed as HTML. A 401 (this session ended meanwhile) is api.js's
// business: it switches the page to the signed-out view, which destroys these panels.
import { api, isAbort } from "./api.js";
import { h, str, formatDateTime, formatRelative, toDate, renderError, uid } from "./ui.js";

const HANDLE = /^[0-9a-f]{32}$/;
const KIND_LABEL = { browser: "Browser", mobile: "Mobile app" };
// The BFF floors "last active" to this many seconds: a time less than a step ago is "now", to the step.
const LAST_ACTIVE_STEP = 300;
const MAX_SUB = 255;
const COLUMNS = ["Device", "Kind", "Signed in", "Last active", ""];

/** The well-formed entries of a listing (`{sessions: [...]}`), in the server's order. */
// The "Sign out" button of one session's row, in both panels.
function signOutButton(device, testid) {
  return h("button", {
    type: "button",
    className: "btn btn-small btn-danger-ghost",
    text: "Sign out",
    attrs: { "data-testid": testid, "aria-label": `Sign out ${device}` },
  });
}

// What an ending call answered, in both panels: "Signed out n …" in `result`, or the error in `error`. Nothing
// once the panel is gone, and nothing for a 401: the page shows itself signed out then.
async function showEnding(call, success, result, error, gone) {
  try {
    const body = await call();
    if (gone()) return;
    const n = body && Number.isInteger(body.ended) ? body.ended : 0;
    error.hide();
    result.show("success", success(n));
  } catch (err) {
    if (gone() || isAbort(err) || (err && err.status === 401)) return;
    error.show(err, "Not signed out.");
  }
}

export function sessionsOf(body) {
  const list = body && Array.isArray(body.sessions) ? body.sessions : [];
  return list.filter((s) => s && typeof s === "object" && typeof s.handle === "string" && HANDLE.test(s.handle));
}

/** A subject identifier as the admin routes take it (1–255 printable ASCII characters), or an error. */
export function parseSub(raw) {
  const sub = raw.trim();
  if (!sub) return { error: "Enter the user's subject identifier (sub), e.g. anon_7f3a9c21." };
  if (sub.length > MAX_SUB) return { error: `A subject identifier has at most ${MAX_SUB} characters.` };
  // OpenID Connect Core §2: a sub is ASCII; the BFF takes printable ASCII (400 invalid_parameter otherwise).
  if (/[^\x20-\x7e]/.test(sub)) return { error: "A subject identifier has only printable ASCII characters (no accents, no control characters)." };
  // The sub travels as a path segment: the browser resolves "." and ".." away before sending, and the BFF
  // refuses a path with an (encoded) slash, backslash or "#" in it (400 invalid_path). Said here, plainly.
  if (sub === "." || sub === ".." || /[/\\#]/.test(sub)) {
    return { error: "This subject identifier cannot be looked up here: it is “.” or “..”, or has a /, \\ or # in it." };
  }
  return { value: sub };
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function lastActiveText(entry, now) {
  if (entry.current === true) return "Now";
  const d = toDate(entry.last_active_at);
  if (!d) return "—";
  const age = (now - d.getTime()) / 1000;
  return age < LAST_ACTIVE_STEP ? "In the last 5 minutes" : formatRelative(d, now);
}

function timeNode(value, text, testid) {
  const d = toDate(value);
  if (!d) return h("span", { className: "muted", text: "—", attrs: { "data-testid": testid } });
  return h("time", { text, attrs: { datetime: d.toISOString(), title: formatDateTime(d), "data-testid": testid } });
}

/**
 * The table of sessions both panels show. `action(entry)` returns the last cell's content (or null).
 * Returns {node, render(entries)}.
 */
function sessionTable({ caption, testid, action }) {
  const tbody = h("tbody");
  const table = h(
    "table",
    { className: "table sessions", attrs: { "data-testid": testid } },
    h("caption", { className: "visually-hidden", text: caption }),
    h("thead", {}, h("tr", {}, COLUMNS.map((t) => h("th", { attrs: { scope: "col" }, text: t })))),
    tbody,
  );

  function row(entry, now) {
    const device = str(entry.device) || "Unknown device";
    const kind = Object.prototype.hasOwnProperty.call(KIND_LABEL, entry.kind) ? entry.kind : "unknown";
    const current = entry.current === true;
    return h(
      "tr",
      {
        className: current ? "is-current" : "",
        attrs: { "data-testid": "session-row" },
        dataset: { handle: entry.handle, kind, current: String(current) },
      },
      h(
        "td",
        { dataset: { label: "Device" } },
        h(
          "div",
          { className: "session-device" },
          h("span", { className: "device-name", text: device, attrs: { "data-testid": "session-device" } }),
          current ? h("span", { className: "badge badge-success badge-small", text: "This device", attrs: { "data-testid": "session-current" } }) : null,
        ),
      ),
      h(
        "td",
        { dataset: { label: "Kind" } },
        h("span", { className: "badge badge-neutral", text: KIND_LABEL[kind] || "Unknown", attrs: { "data-testid": "session-kind" } }),
      ),
      h("td", { className: "col-when", dataset: { label: "Signed in" } }, timeNode(entry.created_at, formatDateTime(entry.created_at), "session-created")),
      h("td", { className: "col-when", dataset: { label: "Last active" } }, timeNode(entry.last_active_at, lastActiveText(entry, now), "session-last-active")),
      h("td", { className: "col-action", dataset: { label: "" } }, action(entry)),
    );
  }

  function render(entries, emptyText) {
    if (!entries.length) {
      tbody.replaceChildren(h("tr", { className: "empty-row" }, h("td", { attrs: { colspan: COLUMNS.length, "data-testid": "sessions-empty" }, text: emptyText })));
      return;
    }
    const now = Date.now();
    tbody.replaceChildren(...entries.map((entry) => row(entry, now)));
  }

  return { node: h("div", { className: "table-wrap" }, table), table, render };
}

/** An inline error banner (the admin section's look), filled by renderError. */
function inlineError(testid) {
  const text = h("div", { className: "banner-text" });
  const node = h(
    "div",
    { className: "banner banner-danger banner-inline", hidden: true, attrs: { role: "alert", "data-testid": testid } },
    h("span", { className: "banner-icon", attrs: { "aria-hidden": "true" } }),
    text,
  );
  return {
    node,
    show(err, prefix) {
      renderError(text, err, prefix);
      node.dataset.code = str(err && err.code, "unknown_error");
      node.hidden = false;
    },
    hide() {
      node.hidden = true;
      text.replaceChildren();
      delete node.dataset.code;
    },
  };
}

/** The outcome line under a panel's table ("Signed out 2 devices."). */
function resultLine(testid) {
  const node = h("p", { className: "grant-result", attrs: { "data-testid": testid, role: "status", "aria-live": "polite" } });
  return {
    node,
    show(kind, text) {
      node.className = `grant-result grant-result-${kind}`;
      node.dataset.kind = kind;
      node.textContent = text;
    },
    clear() {
      node.className = "grant-result";
      delete node.dataset.kind;
      node.textContent = "";
    },
  };
}

/** "Your devices": the signed-in user's sessions; sign out one of the others, or all of them. */
export function createDevices(container) {
  let controller = null;
  let destroyed = false;
  let busy = false; // an action is running: its own reload follows it
  let entries = [];

  const error = inlineError("devices-error");
  const result = resultLine("devices-result");
  const status = h("p", { className: "list-status", attrs: { role: "status", "aria-live": "polite" } });
  const count = h("span", { attrs: { "data-testid": "devices-count" } });
  const sessions = sessionTable({ caption: "Devices signed in to your account", testid: "devices-table", action: endButton });
  const refresh = h("button", {
    type: "button",
    className: "btn btn-ghost",
    text: "Refresh",
    attrs: { "data-testid": "devices-refresh" },
    on: {
      click: () => {
        result.clear();
        load();
      },
    },
  });
  const endOthers = h("button", {
    type: "button",
    className: "btn btn-secondary btn-small",
    text: "Sign out everywhere else",
    disabled: true,
    attrs: { "data-testid": "devices-end-others" },
    on: { click: () => run(endOthers, "Signing out…", () => api.endOtherSessions(), (n) => `Signed out ${plural(n, "other device", "other devices")}.`) },
  });

  container.replaceChildren(
    h("div", { className: "section-head" }, h("h2", { text: "Your devices" }), refresh),
    h(
      "p",
      { className: "muted section-intro" },
      "Where you are signed in: browsers and the mobile app. Signing a device out ends its session at once; it has to sign in again. ",
      count,
    ),
    error.node,
    status,
    sessions.node,
    h("div", { className: "actions devices-actions" }, endOthers, result.node),
  );

  function endButton(entry) {
    if (entry.current === true) return null;
    const device = str(entry.device) || "Unknown device";
    const button = signOutButton(device, "session-end");
    button.addEventListener("click", () =>
      run(button, "Signing out…", () => api.endSession(entry.handle), (n) => `Signed out ${plural(n, "device", "devices")} (${device}).`),
    );
    return button;
  }

  function setControls(disabled) {
    for (const b of container.querySelectorAll("[data-testid=session-end]")) b.disabled = disabled;
    endOthers.disabled = disabled || !entries.some((e) => e.current !== true);
  }

  /** One action: the button says what it does meanwhile, then the outcome, then the list again. */
  async function run(button, pending, call, success) {
    if (busy || destroyed) return;
    busy = true;
    const label = button.textContent;
    setControls(true);
    button.textContent = pending;
    result.clear();
    try {
      await showEnding(call, success, result, error, () => destroyed);
    } finally {
      busy = false;
      if (!destroyed) {
        button.textContent = label;
        load({ keepError: true });
      }
    }
  }

  /** (Re)load the list; `keepError` keeps an action's error on screen while the list is refreshed after it. */
  async function load({ keepError = false } = {}) {
    if (destroyed) return;
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    status.replaceChildren(h("span", { className: "spinner", attrs: { "aria-hidden": "true" } }), " Loading your devices…");
    sessions.table.setAttribute("aria-busy", "true");
    try {
      const body = await api.sessions({ signal: mine.signal });
      if (mine !== controller || destroyed) return;
      entries = sessionsOf(body);
      sessions.render(entries, "No active sessions.");
      count.textContent = `${plural(entries.length, "session", "sessions")}.`;
      if (!keepError) error.hide();
    } catch (err) {
      if (isAbort(err) || mine !== controller || destroyed || (err && err.status === 401)) return;
      entries = [];
      error.show(err, "Could not load your devices.");
      sessions.render([], "Your devices are not available.");
      count.textContent = "";
    } finally {
      if (mine === controller && !destroyed) {
        status.replaceChildren();
        sessions.table.setAttribute("aria-busy", "false");
        controller = null;
        setControls(busy);
      }
    }
  }

  // Coming back to the tab: another device may have signed this one (or another) out meanwhile.
  function onVisible() {
    if (document.visibilityState === "visible" && !busy) load();
  }
  document.addEventListener("visibilitychange", onVisible);

  return {
    load,
    destroy() {
      destroyed = true;
      if (controller) controller.abort();
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

/** Administrators: list any user's sessions by their sub; end one, or all of them (force sign-out). */
export function createForceSignOut(container) {
  let controller = null;
  let destroyed = false;
  let busy = false;
  let shown = null; // the sub whose sessions are on screen

  const inputId = uid("force-sub");
  const hintId = uid("force-hint");
  const input = h("input", {
    id: inputId,
    type: "text",
    className: "input",
    autocomplete: "off",
    spellcheck: false,
    attrs: { "data-testid": "force-sub", placeholder: "e.g. anon_7f3a9c21", maxlength: String(MAX_SUB), "aria-describedby": hintId },
  });
  const find = h("button", { type: "submit", className: "btn btn-primary", text: "Find sessions", attrs: { "data-testid": "force-find" } });
  const hint = h("p", { id: hintId, className: "force-hint small", attrs: { "data-testid": "force-hint" } });
  const form = h(
    "form",
    { className: "toolbar force-form", noValidate: true, attrs: { "aria-label": "Find a user's sessions" } },
    h("div", { className: "field field-grow" }, h("label", { htmlFor: inputId, text: "User (sub)" }), input),
    h("div", { className: "field field-action" }, find),
  );

  const error = inlineError("force-error");
  const result = resultLine("force-result");
  const status = h("p", { className: "list-status", attrs: { role: "status", "aria-live": "polite" } });
  const heading = h("h3", { className: "force-heading", attrs: { "data-testid": "force-heading" } });
  const count = h("span", { className: "muted", attrs: { "data-testid": "force-count" } });
  const sessions = sessionTable({ caption: "The user's sessions", testid: "force-table", action: endButton });
  const endAllCell = h("div", { className: "actions" });
  const listing = h("div", { className: "force-listing", hidden: true }, h("div", { className: "force-head" }, heading, count), sessions.node, h("div", { className: "actions devices-actions" }, endAllCell, result.node));

  container.replaceChildren(
    h("div", { className: "section-head" }, h("h2", {}, "Force sign-out ", h("span", { className: "muted-heading", text: "of a user's sessions" }))),
    h(
      "p",
      { className: "muted section-intro" },
      "List every session of a user by their subject identifier (sub), and end one or all of them. Their tokens are revoked; they have to sign in again.",
    ),
    form,
    hint,
    error.node,
    status,
    listing,
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const parsed = parseSub(input.value);
    if (parsed.error) {
      hint.textContent = parsed.error;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    hint.textContent = "";
    input.removeAttribute("aria-invalid");
    result.clear();
    load(parsed.value);
  });

  function endButton(entry) {
    const sub = shown;
    const device = str(entry.device) || "Unknown device";
    const button = signOutButton(device, "force-end");
    button.addEventListener("click", () =>
      run(sub, () => api.endUserSession(sub, entry.handle), (n) => `Signed out ${plural(n, "session", "sessions")} (${device}).`),
    );
    return button;
  }

  function idleEndAll() {
    const button = h("button", {
      type: "button",
      className: "btn btn-small btn-danger-ghost",
      text: "Sign out everywhere…",
      attrs: { "data-testid": "force-end-all" },
      on: { click: () => confirmEndAll() },
    });
    endAllCell.replaceChildren(button);
    return button;
  }

  function confirmEndAll() {
    const sub = shown;
    const confirm = h("button", { type: "button", className: "btn btn-small btn-danger", text: "Sign out everywhere", attrs: { "data-testid": "force-end-all-confirm" } });
    const cancel = h("button", {
      type: "button",
      className: "btn btn-small btn-ghost",
      text: "Cancel",
      attrs: { "data-testid": "force-end-all-cancel" },
      on: { click: () => idleEndAll().focus() },
    });
    confirm.addEventListener("click", () => {
      confirm.textContent = "Signing out…";
      run(sub, () => api.endUserSessions(sub), (n) => `Signed out ${plural(n, "session", "sessions")} of ${sub}.`);
    });
    endAllCell.replaceChildren(
      h(
        "div",
        { className: "revoke-confirm", attrs: { role: "group", "aria-label": "Confirm signing this user out everywhere", "data-testid": "force-end-all-prompt" } },
        h("p", { className: "small", text: "End every session of this user? Each device has to sign in again." }),
        h("div", { className: "actions" }, confirm, cancel),
      ),
    );
    cancel.focus();
  }

  function setControls(disabled, any) {
    for (const b of listing.querySelectorAll("button")) b.disabled = disabled;
    find.disabled = disabled;
    const endAll = endAllCell.querySelector("[data-testid=force-end-all]");
    if (endAll && !disabled) endAll.disabled = !any;
  }

  async function run(sub, call, success) {
    if (busy || destroyed || sub === null) return;
    busy = true;
    setControls(true, false);
    result.clear();
    try {
      await showEnding(call, success, result, error, () => destroyed);
    } finally {
      busy = false;
      if (!destroyed) load(sub, { keepResult: true });
    }
  }

  async function load(sub, { keepResult = false } = {}) {
    if (destroyed) return;
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    if (!keepResult) result.clear();
    status.replaceChildren(h("span", { className: "spinner", attrs: { "aria-hidden": "true" } }), " Loading sessions…");
    sessions.table.setAttribute("aria-busy", "true");
    let any = false;
    try {
      const body = await api.userSessions(sub, { signal: mine.signal });
      if (mine !== controller || destroyed) return;
      const entries = sessionsOf(body);
      any = entries.length > 0;
      shown = sub;
      heading.textContent = `Sessions of ${sub}`;
      count.textContent = plural(entries.length, "session", "sessions");
      sessions.render(entries, "This user has no active sessions.");
      idleEndAll();
      if (!keepResult) error.hide();
      listing.hidden = false;
    } catch (err) {
      if (isAbort(err) || mine !== controller || destroyed || (err && err.status === 401)) return;
      error.show(err, "Could not load the user's sessions.");
      if (!keepResult || shown !== sub) {
        shown = null;
        listing.hidden = true;
      }
    } finally {
      if (mine === controller && !destroyed) {
        status.replaceChildren();
        sessions.table.setAttribute("aria-busy", "false");
        controller = null;
        setControls(false, any);
      }
    }
  }

  return {
    destroy() {
      destroyed = true;
      if (controller) controller.abort();
    },
  };
}
