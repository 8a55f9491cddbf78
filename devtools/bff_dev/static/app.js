// Entry module of the demo SPA. Talks only to same-origin BFF endpoints
// (see api.js); never sees a token and cannot read the HttpOnly session cookie.
import { api, onUnauthenticated } from "./api.js";
import { h, str, formatLimit, formatDateTime, formatTime, toDate, createErrorBanner } from "./ui.js";
import { createIntegrations } from "./integrations.js";
import { createAdmin } from "./admin.js";

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
  main: $("main"),
};

const banner = createErrorBanner($("error-banner"));

let current = null; // { session, integrations, admin } while signed in
let sessionSeq = 0;

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
function teardown() {
  if (current) {
    if (current.integrations) current.integrations.destroy();
    if (current.admin) current.admin.destroy();
    if (current.userinfoController) current.userinfoController.abort();
  }
  current = null;
  els.userArea.replaceChildren();
}

function showSignedOut(reason = "") {
  sessionSeq += 1; // ignore any session check still in flight
  const wasSignedIn = current !== null;
  teardown();
  banner.clearAll();
  const button = h("button", { type: "button", className: "btn btn-primary btn-large", text: "Sign in", attrs: { "data-testid": "sign-in" }, on: { click: signIn } });
  els.view.replaceChildren(
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
  );
  setState("signed-out");
  if (wasSignedIn) button.focus();
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

function profileRow(label, value, testid) {
  return h("div", { className: "kv" }, h("dt", { text: label }), h("dd", { attrs: testid ? { "data-testid": testid } : undefined }, value));
}

function renderProfile(section, session, userinfo) {
  const base = session.user && typeof session.user === "object" ? session.user : {};
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
      profileRow("Name", str(u.name) || "—"),
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
  const ctl = new AbortController();
  current.userinfoController = ctl;
  const mine = current;
  try {
    const body = await api.userinfo({ signal: ctl.signal });
    if (current !== mine) return;
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

function showSignedIn(session) {
  teardown();
  banner.clearAll();
  renderHeader(session);

  const profile = h("section", { className: "card", attrs: { "aria-label": "Your account", "data-testid": "profile" } });
  const integrationsSection = h("section", { className: "card", attrs: { "aria-label": "Integrations", "data-testid": "integrations-section" } });
  const sections = [profile, integrationsSection];

  current = { session, integrations: null, admin: null, userinfoController: null };
  renderProfile(profile, session, undefined);
  current.integrations = createIntegrations(integrationsSection, { banner });

  if (session.is_admin === true) {
    const adminSection = h("section", { className: "card card-admin", attrs: { "aria-label": "Transaction limits (Guest users)", "data-testid": "admin-section" } });
    current.admin = createAdmin(adminSection);
    sections.push(adminSection);
  }

  els.view.replaceChildren(h("div", { className: "stack" }, sections));
  setState("signed-in");

  loadUserinfo(profile, session);
  current.integrations.load();
  if (current.admin) current.admin.load();
}

async function doSignOut(session, button) {
  button.disabled = true;
  button.textContent = "Signing out…";
  try {
    const body = await api.logout(logoutPath(session));
    const target = safeNavigationUrl(body && body.logout_url);
    showSignedOut(target ? "" : "You have signed out.");
    if (target) window.location.assign(target);
  } catch (err) {
    if (err && err.status === 401) return; // already signed out; handler showed the view
    button.disabled = false;
    button.textContent = "Sign out";
    banner.show("logout", err, "Sign-out failed.");
  }
}

async function checkSession() {
  sessionSeq += 1;
  const mine = sessionSeq;
  try {
    const session = await api.session();
    if (mine !== sessionSeq) return;
    if (session && session.authenticated === true) showSignedIn(session);
    else showSignedOut();
  } catch (err) {
    if (mine !== sessionSeq) return;
    showSignedOut();
    if (!(err && err.status === 401)) banner.show("session", err, "Could not check your session.");
  }
}

onUnauthenticated((err) => {
  if (err.code === "session_expired") {
    showSignedOut("Your session has expired. Please sign in again.");
  } else if (els.body.dataset.state !== "signed-out") {
    showSignedOut(current ? "You have been signed out." : "");
  }
});

// Coming back through the back/forward cache: the session may have changed.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) checkSession();
});

handleLoginError();
checkSession();
