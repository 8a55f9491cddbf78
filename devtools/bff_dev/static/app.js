// Entry module of the demo SPA. Talks only to same-origin BFF endpoints
// (see api.js); never sees a token and cannot read the HttpOnly session cookie.
//
// Three views, chosen by two independent facts:
//   * "signed-in":  an OpenID Connect sign-in (/auth/session), with or without a Connect grant;
//   * "connected":  no sign-in, but a Kryptos Connect grant (a Guest who connected through the widget);
//   * "signed-out": neither.
// The "Connect your accounts" card is part of every view.
import { api, onUnauthenticated, onConnectRevoked } from "./api.js";
import { h, str, formatLimit, formatDateTime, formatTime, toDate, createErrorBanner } from "./ui.js";
import { createIntegrations } from "./integrations.js";
import { createAdmin } from "./admin.js";
import { createConnect } from "./connect.js";
import { createDevices, createForceSignOut } from "./devices.js";

const LOGIN_ERRORS = {
  access_denied: "Sign-in was cancelled, or access was not granted. You can try again whenever you like.",
  login_failed: "Sign-in failed. Please try again.",
  invalid_state: "The sign-in attempt expired or was started in another tab. Please try again.",
  login_required: "Please sign in to continue.",
  consent_required: "Sign-in needs your consent. Please try again and approve the request.",
  interaction_required: "Sign-in needs your interaction. Please try again.",
  temporarily_unavailable: "The sign-in service is temporarily unavailable. Please try again later.",
  server_error: "The sign-in service had a problem. Please try again later.",
  upstream_unavailable: "The sign-in service could not be reached. Please try again later.",
  upstream_timeout: "The sign-in service took too long to answer. Please try again.",
  session_store_unavailable: "The session could not be stored. Please try again in a moment.",
};

const $ = (id) => document.getElementById(id);

const els = {
  body: document.body,
  userArea: $("user-area"),
  view: $("view"),
  loginError: $("login-error"),
  pageNotice: $("page-notice"),
  main: $("main"),
};

const banner = createErrorBanner($("error-banner"));

// Sign-out leaves through the provider's end-session page and comes back as a fresh page load; this flag
// (a timestamp, removed as soon as it is read) lets the page that comes back say "Signed out".
const SIGNED_OUT_KEY = "bff-demo.signed-out";
const SIGNED_OUT_FRESH_MS = 10 * 60 * 1000;

let auth = null; // the /auth/session answer while signed in with OpenID Connect
let current = null; // the view on screen: { mode, session, integrations, admin, devices, forceSignOut, userinfoController, connectNode, profile }
let checkSeq = 0;
let checking = false; // a full check is running: it renders once both answers are in

const connect = createConnect({ onChange: connectionChanged });

function setState(state) {
  els.body.dataset.state = state;
}

// --- Sign-in error from the redirect back (?login_error=code) -------------
function handleLoginError() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("login_error")) return;
  const code = (url.searchParams.get("login_error") || "").slice(0, 100);
  url.searchParams.delete("login_error");
  const clean = `${url.pathname}${url.search}${url.hash}`;
  window.history.replaceState(window.history.state, "", clean);

  const known = Object.prototype.hasOwnProperty.call(LOGIN_ERRORS, code) ? LOGIN_ERRORS[code] : null;
  const dismiss = h("button", {
    type: "button",
    className: "banner-dismiss",
    attrs: { "aria-label": "Dismiss sign-in message" },
    on: { click: () => { els.loginError.hidden = true; } },
  });
  els.loginError.replaceChildren(
    h("span", { className: "banner-icon", attrs: { "aria-hidden": "true" } }),
    h(
      "div",
      { className: "banner-text" },
      h("strong", { text: "Sign-in did not complete. " }),
      known || "Something went wrong while signing in. Please try again.",
      " ",
      h("span", { className: "error-code", text: `(code: ${code || "unknown"})` }),
    ),
    dismiss,
  );
  els.loginError.dataset.code = code;
  els.loginError.hidden = false;
}

// --- Navigation helpers ---------------------------------------------------
function currentLocalPath() {
  const path = `${window.location.pathname}${window.location.search}`;
  if (!path.startsWith("/") || path.startsWith("//") || path.includes("\\")) return "/";
  return path;
}

function signIn() {
  window.location.assign(`/auth/login?return_to=${encodeURIComponent(currentLocalPath())}`);
}

function logoutPath(session) {
  const candidate = session && typeof session.logout_url === "string" ? session.logout_url : "";
  return /^\/auth\/logout(\?[^\\\s#]*)?$/.test(candidate) ? candidate : "/auth/logout";
}

function safeNavigationUrl(value) {
  if (typeof value !== "string" || !value) return null;
  try {
    const u = new URL(value, window.location.href);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

// --- Views ------------------------------------------------------------------
function mode() {
  if (auth) return "signed-in";
  return connect.connected ? "connected" : "signed-out";
}

/** Show the view the current facts call for; only rebuilds when the view changes (or `force`). */
function render({ reason = "", force = false } = {}) {
  const next = mode();
  if (!force && current && current.mode === next) return false;
  const hadView = current !== null;
  teardown();
  banner.clearAll();
  if (next === "signed-in") showMain(auth);
  else if (next === "connected") showMain(null);
  else showSignedOut(reason, hadView);
  return true;
}

function connectionChanged() {
  if (checking) return; // the running check renders once it has both answers
  if (render()) return;
  // Same view (signed in with OpenID Connect): the data may now come from another grant.
  if (current && current.integrations) {
    current.integrations.load();
    if (current.profile) loadUserinfo(current.profile, current.session);
  }
}

function teardown() {
  if (current) {
    if (current.integrations) current.integrations.destroy();
    if (current.admin) current.admin.destroy();
    if (current.devices) current.devices.destroy();
    if (current.forceSignOut) current.forceSignOut.destroy();
    if (current.userinfoController) current.userinfoController.abort();
    if (current.connectNode) connect.unmount(current.connectNode);
  }
  current = null;
  els.userArea.replaceChildren();
}

function connectSection(extraClass = "") {
  return h("section", { className: `card card-connect ${extraClass}`.trim(), attrs: { "aria-label": "Connect your accounts", "data-testid": "connect-section" } });
}

function showSignedOut(reason, focusButton) {
  const button = h("button", { type: "button", className: "btn btn-primary btn-large", text: "Sign in", attrs: { "data-testid": "sign-in" }, on: { click: signIn } });
  const connectNode = connectSection("hero");
  els.view.replaceChildren(
    h(
      "div",
      { className: "stack hero-stack" },
      h(
        "section",
        { className: "card hero", attrs: { "aria-labelledby": "signed-out-title" } },
        h("h1", { id: "signed-out-title", text: "See your crypto integrations" }),
        reason ? h("p", { className: "callout callout-info", text: reason, attrs: { "data-testid": "signed-out-reason" } }) : null,
        h(
          "p",
          { className: "lead" },
          "Sign in with Kryptos to view the exchanges and wallets connected to your account, their sync status and your transaction limit.",
        ),
        h(
          "ul",
          { className: "checklist" },
          h("li", { text: "Your tokens stay on the server; this page never sees them." }),
          h("li", { text: "You can sign out at any time." }),
        ),
        button,
      ),
      connectNode,
    ),
  );
  current = { mode: "signed-out", session: null, integrations: null, admin: null, devices: null, forceSignOut: null, userinfoController: null, connectNode, profile: null };
  connect.mount(connectNode);
  setState("signed-out");
  if (focusButton) button.focus();
}

function renderHeader(session) {
  const user = session.user && typeof session.user === "object" ? session.user : {};
  const name = str(user.name) || str(user.preferred_username) || str(user.email) || str(user.sub) || "Signed in";
  const email = str(user.email);
  const expires = toDate(session.expires_at);
  const signOut = h("button", { type: "button", className: "btn btn-secondary", text: "Sign out", attrs: { "data-testid": "sign-out" } });
  signOut.addEventListener("click", () => doSignOut(session, signOut));
  els.userArea.replaceChildren(
    h(
      "div",
      { className: "user-meta" },
      h(
        "div",
        { className: "user-line" },
        h("span", { className: "user-name", text: name, attrs: { "data-testid": "user-name", title: name } }),
        session.is_admin === true ? h("span", { className: "badge badge-admin", text: "Admin", attrs: { "data-testid": "admin-badge" } }) : null,
      ),
      email && email !== name ? h("span", { className: "user-email", text: email, attrs: { "data-testid": "user-email", title: email } }) : null,
      expires
        ? h("span", {
            className: "session-expiry",
            text: `Session until ${formatTime(expires)}`,
            attrs: { "data-testid": "session-expiry", title: `Session expires ${formatDateTime(expires)}` },
          })
        : null,
    ),
    signOut,
  );
}

function renderConnectedHeader() {
  const status = connect.status || {};
  const workspace = str(status.workspaceName) || "your workspace";
  els.userArea.replaceChildren(
    h(
      "div",
      { className: "user-meta" },
      h(
        "div",
        { className: "user-line" },
        h("span", { className: "user-name", text: workspace, attrs: { "data-testid": "connection-name", title: workspace } }),
        h("span", { className: "badge badge-success badge-small", text: "Connected" }),
      ),
      h("span", { className: "user-email", text: "Guest connection, no sign-in" }),
    ),
    h("button", { type: "button", className: "btn btn-secondary", text: "Sign in", attrs: { "data-testid": "sign-in" }, on: { click: signIn } }),
  );
}

function profileRow(label, value, testid) {
  return h("div", { className: "kv" }, h("dt", { text: label }), h("dd", { attrs: testid ? { "data-testid": testid } : undefined }, value));
}

function renderProfile(section, session, userinfo) {
  const base = session && session.user && typeof session.user === "object" ? session.user : {};
  const ui = userinfo && userinfo.userInfo && typeof userinfo.userInfo === "object" ? userinfo.userInfo : null;
  const u = { ...base, ...(ui || {}) };
  const limitNode = ui
    ? h("span", { className: "limit-value", text: formatLimit(Object.prototype.hasOwnProperty.call(ui, "transaction_limit") ? ui.transaction_limit : null) })
    : h("span", { className: "muted", text: userinfo === undefined ? "Loading…" : "Unavailable" });
  const email = str(u.email);
  section.replaceChildren(
    h("div", { className: "section-head" }, h("h2", { text: "Your account" })),
    h(
      "dl",
      { className: "profile" },
      profileRow("Name", str(u.name) || "—", "profile-name"),
      profileRow(
        "Email",
        email
          ? [h("span", { text: email }), u.email_verified === true ? h("span", { className: "badge badge-success badge-small", text: "Verified" }) : u.email_verified === false ? h("span", { className: "badge badge-neutral badge-small", text: "Not verified" }) : null]
          : "—",
      ),
      profileRow("Username", str(u.preferred_username) || "—"),
      profileRow("Language", str(u.language) || "—"),
      h(
        "div",
        { className: "kv kv-highlight" },
        h("dt", { text: "Transaction limit" }),
        h("dd", { attrs: { "data-testid": "transaction-limit" } }, limitNode),
      ),
    ),
  );
}

async function loadUserinfo(section, session) {
  if (!current) return;
  if (current.userinfoController) current.userinfoController.abort();
  const ctl = new AbortController();
  current.userinfoController = ctl;
  const mine = current;
  try {
    const body = await api.userinfo({ signal: ctl.signal });
    if (current !== mine || ctl.signal.aborted) return;
    renderProfile(section, session, body);
    banner.clear("userinfo");
    const ui = body && body.userInfo && typeof body.userInfo === "object" ? body.userInfo : {};
    const limit = typeof ui.transaction_limit === "number" ? ui.transaction_limit : null;
    current.integrations.setLimit(limit);
  } catch (err) {
    if (current !== mine || err.name === "AbortError") return;
    renderProfile(section, session, null);
    banner.show("userinfo", err, "Could not load your profile.");
  }
}

/** The data view: signed in with OpenID Connect (`session`), or only connected through Kryptos Connect (null). */
function showMain(session) {
  const signedIn = session !== null;
  if (signedIn) renderHeader(session);
  else renderConnectedHeader();

  const connectNode = connectSection();
  const profile = h("section", { className: "card", attrs: { "aria-label": "Your account", "data-testid": "profile" } });
  const integrationsSection = h("section", { className: "card card-integrations", attrs: { "aria-label": "Integrations", "data-testid": "integrations-section" } });
  const sections = signedIn ? [profile, connectNode, integrationsSection] : [connectNode, profile, integrationsSection];

  current = { mode: signedIn ? "signed-in" : "connected", session, integrations: null, admin: null, devices: null, forceSignOut: null, userinfoController: null, connectNode, profile };
  renderProfile(profile, session, undefined);
  const mine = current;
  current.integrations = createIntegrations(integrationsSection, {
    banner,
    // A finished re-sync may have changed what the profile shows (the limit).
    onSynced: () => {
      if (current === mine) loadUserinfo(profile, session);
    },
  });
  connect.mount(connectNode);

  if (signedIn) {
    // Sessions of an OpenID Connect sign-in only: a Connect-only browser has nobody signed in to list.
    const devicesSection = h("section", { className: "card card-devices", attrs: { "aria-label": "Your devices", "data-testid": "devices-section" } });
    current.devices = createDevices(devicesSection);
    sections.push(devicesSection);
  }

  if (signedIn && session.is_admin === true) {
    const adminSection = h("section", { className: "card card-admin", attrs: { "aria-label": "Grants and transaction limits", "data-testid": "admin-section" } });
    current.admin = createAdmin(adminSection);
    sections.push(adminSection);
    const forceSection = h("section", { className: "card card-admin", attrs: { "aria-label": "Force sign-out", "data-testid": "force-signout-section" } });
    current.forceSignOut = createForceSignOut(forceSection);
    sections.push(forceSection);
  }

  els.view.replaceChildren(h("div", { className: "stack" }, sections));
  setState(current.mode);

  loadUserinfo(profile, session);
  current.integrations.load();
  if (current.admin) current.admin.load();
  if (current.devices) current.devices.load();
}

// --- Page notice ("Signed out") -----------------------------------------------
function showPageNotice(text, kind) {
  const dismiss = h("button", {
    type: "button",
    className: "banner-dismiss",
    attrs: { "aria-label": "Dismiss message" },
    on: { click: () => { els.pageNotice.hidden = true; } },
  });
  els.pageNotice.replaceChildren(h("span", { className: "banner-icon", attrs: { "aria-hidden": "true" } }), h("div", { className: "banner-text", text }), dismiss);
  els.pageNotice.dataset.kind = kind;
  els.pageNotice.hidden = false;
}

function hidePageNotice() {
  els.pageNotice.hidden = true;
}

const SIGNED_OUT_TEXT = "Signed out. Your session on this site has ended.";

function rememberSignedOut() {
  try {
    window.sessionStorage.setItem(SIGNED_OUT_KEY, String(Date.now()));
  } catch {
    /* storage may be disabled: the page then just does not confirm */
  }
}

function takeSignedOut() {
  try {
    const value = window.sessionStorage.getItem(SIGNED_OUT_KEY);
    if (value === null) return false;
    window.sessionStorage.removeItem(SIGNED_OUT_KEY);
    const when = Number(value);
    return Number.isFinite(when) && Date.now() - when >= 0 && Date.now() - when < SIGNED_OUT_FRESH_MS;
  } catch {
    return false;
  }
}

async function doSignOut(session, button) {
  button.disabled = true;
  button.textContent = "Signing out…";
  try {
    const body = await api.logout(logoutPath(session));
    const target = safeNavigationUrl(body && body.logout_url);
    auth = null;
    if (target) {
      // The provider ends its own session and sends the browser back to `/`, which confirms.
      rememberSignedOut();
      render({ force: true });
      window.location.assign(target);
      return;
    }
    render({ force: true });
    showPageNotice(SIGNED_OUT_TEXT, "signed-out");
  } catch (err) {
    if (err && err.status === 401) return; // already signed out; handler showed the view
    button.disabled = false;
    button.textContent = "Sign out";
    banner.show("logout", err, "Sign-out failed.");
  }
}

/** Ask both questions (signed in? connected?) and show the matching view. */
async function checkState({ reason = "", justSignedOut = false } = {}) {
  checkSeq += 1;
  const mine = checkSeq;
  checking = true;
  const [sessionResult] = await Promise.allSettled([api.session(), connect.refresh()]);
  if (mine !== checkSeq) return;
  checking = false;
  let sessionError = null;
  if (sessionResult.status === "fulfilled") {
    const session = sessionResult.value;
    auth = session && session.authenticated === true ? session : null;
  } else {
    auth = null;
    const err = sessionResult.reason;
    if (!(err && err.status === 401)) sessionError = err;
  }
  render({ reason, force: true });
  if (sessionError) banner.show("session", sessionError, "Could not check your session.");
  if (justSignedOut && !auth) showPageNotice(SIGNED_OUT_TEXT, "signed-out");
  else if (auth) hidePageNotice();
}

onUnauthenticated((err) => {
  const wasSignedIn = auth !== null;
  auth = null;
  const reason =
    err.code === "session_expired"
      ? "Your session has ended: it expired, or it was signed out from another device. Please sign in again."
      : wasSignedIn
        ? "You have been signed out."
        : "";
  render({ reason });
  // The browser may still hold a Connect grant, which the status call also resumes.
  connect.refresh();
});

onConnectRevoked(() => connect.markRevoked());

// Coming back through the back/forward cache: the session may have changed.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) checkState();
});

handleLoginError();
checkState({ justSignedOut: takeSignedOut() });
