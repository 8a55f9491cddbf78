// Kryptos Connect for Guests (people without a Kryptos account): the "Connect your accounts" card.
//
// The flow: POST /connect/link-token → the Kryptos Connect widget in a popup → the widget posts a one-time
// `public_token` back to this window → POST /connect/exchange. The BFF swaps the public token for the
// long-lived Connect token and keeps it server-side; the page only ever handles the one-time tokens.
//
// One controller lives as long as the page; the app mounts its card into whichever view is showing and is
// told (`onChange`) when the connection appears or goes away.
import { api, isAbort } from "./api.js";
import { h, str, fill, idText, renderError } from "./ui.js";

// `bff dev` serves the widget from the emulator on this same origin; in production it is Kryptos's page.
const WIDGET_PATH = "/_kryptos/connect/widget";
const WIDGET_ORIGIN = window.location.origin;
const POPUP_NAME = "kryptos-connect";
const POPUP_FEATURES = "popup,width=480,height=680";
const CLOSED_POLL_MS = 500;
const MAX_TOKEN_LENGTH = 4096;

const NOTICE_TEXT = {
  connected: "Connected. Your exchange and wallet accounts are now shared with this app.",
  already: "Already connected: nothing new to share.",
  exit: "The Kryptos window was closed before connecting. Nothing was shared.",
  closed: "The Kryptos window was closed before connecting. Nothing was shared.",
  disconnected: "Disconnected. This app can no longer read your accounts.",
  revoked: "Your connection was revoked; connect again.",
  nothing: "The Kryptos window finished, but no connection was found. Please connect again.",
};

function scopesOf(value) {
  if (Array.isArray(value)) return value.filter((s) => typeof s === "string" && s).map((s) => s.slice(0, 60));
  if (typeof value === "string") return value.split(/\s+/).filter(Boolean).map((s) => s.slice(0, 60));
  return [];
}

/** A /connect/status (or /connect/exchange) answer as the card uses it. */
export function normaliseStatus(body) {
  const b = body && typeof body === "object" ? body : {};
  return {
    connected: b.connected === true,
    workspaceId: str(b.workspace_id),
    workspaceName: str(b.workspace_name),
    scopes: scopesOf(b.scopes),
  };
}

function widgetUrl(linkToken) {
  const q = new URLSearchParams({ link_token: linkToken, origin: window.location.origin });
  return `${WIDGET_PATH}?${q.toString()}`;
}

export function createConnect({ onChange }) {
  let status = null; // normalised /connect/status, or null while unknown
  let notice = null; // { kind: "success" | "info" | "warning" | "error", text?, err?, code }
  let busy = ""; // "" | "starting" | "waiting" | "exchanging" | "checking" | "disconnecting"
  let flow = null; // the open widget: { popup, linkToken, timer }
  let blockedLinkToken = ""; // a link token whose popup the browser blocked, for the "open it" button
  let container = null;
  let statusController = null;

  const isConnected = () => status !== null && status.connected;

  function setStatus(next) {
    const was = isConnected();
    status = next;
    render();
    if (was !== isConnected()) onChange();
  }

  function say(kind, key, extra = {}) {
    notice = { kind, code: key, text: NOTICE_TEXT[key] || "", ...extra };
  }

  // --- The popup ----------------------------------------------------------
  function openWidget(linkToken) {
    const popup = window.open(widgetUrl(linkToken), POPUP_NAME, POPUP_FEATURES);
    if (!popup) {
      blockedLinkToken = linkToken;
      busy = "";
      notice = { kind: "warning", code: "popup_blocked", err: { code: "popup_blocked", message: "" }, text: "" };
      render();
      return;
    }
    blockedLinkToken = "";
    endFlow(false);
    flow = { popup, linkToken, timer: null };
    window.addEventListener("message", onMessage);
    // A window closed by the user sends nothing: notice it by looking.
    flow.timer = window.setInterval(() => {
      if (flow && flow.popup.closed) {
        endFlow(false);
        busy = "";
        say("info", "closed");
        render();
      }
    }, CLOSED_POLL_MS);
    busy = "waiting";
    notice = null;
    render();
    try {
      popup.focus();
    } catch {
      /* a browser may refuse; the window is open anyway */
    }
  }

  function endFlow(close) {
    if (!flow) return;
    window.clearInterval(flow.timer);
    window.removeEventListener("message", onMessage);
    const { popup } = flow;
    flow = null;
    if (close) {
      try {
        if (!popup.closed) popup.close();
      } catch {
        /* already gone */
      }
    }
  }

  function onMessage(event) {
    // Only the window we opened, on the widget's origin, speaking the widget's protocol, is believed.
    if (!flow || event.source !== flow.popup || event.origin !== WIDGET_ORIGIN) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.source !== "kryptos-connect") return;
    if (data.event === "success") {
      const token = data.public_token;
      endFlow(true);
      if (typeof token === "string" && token && token.length <= MAX_TOKEN_LENGTH) {
        exchange(token);
      } else if (token === null || token === undefined) {
        // The browser already held a grant (isAuthorized): nothing to exchange, the status tells the rest.
        confirmExisting();
      } else {
        busy = "";
        notice = { kind: "error", err: { code: "invalid_public_token", message: "" } };
        render();
      }
    } else if (data.event === "exit") {
      endFlow(true);
      busy = "";
      say("info", "exit");
      render();
    } else if (data.event === "error") {
      endFlow(false); // the widget keeps its own explanation on screen until the person closes it
      busy = "";
      const code = str(data.code, "connect_error").slice(0, 80);
      const message = str(data.message).slice(0, 300);
      notice = { kind: "error", err: { code, message: message || "The Kryptos window reported an error." } };
      render();
    }
  }

  // --- Actions --------------------------------------------------------------
  async function start() {
    if (busy === "waiting" && flow) {
      try {
        flow.popup.focus();
      } catch {
        /* ignore */
      }
      return;
    }
    if (busy) return;
    busy = "starting";
    notice = null;
    render();
    let body;
    try {
      body = await api.connectLinkToken();
    } catch (err) {
      busy = "";
      notice = { kind: "error", err, prefix: "Could not start connecting." };
      render();
      return;
    }
    const linkToken = body && typeof body.link_token === "string" ? body.link_token : "";
    if (!linkToken || linkToken.length > MAX_TOKEN_LENGTH) {
      busy = "";
      notice = { kind: "error", err: { code: "invalid_response", message: "" }, prefix: "Could not start connecting." };
      render();
      return;
    }
    openWidget(linkToken);
  }

  async function exchange(publicToken) {
    busy = "exchanging";
    notice = null;
    render();
    try {
      const body = await api.connectExchange(publicToken);
      let next = normaliseStatus(body);
      try {
        // The exchange answer has no workspace name; the status has everything.
        const full = normaliseStatus(await api.connectStatus());
        if (full.connected) next = full;
      } catch {
        /* the exchange's own answer is enough to show the connection */
      }
      busy = "";
      say("success", next.connected ? "connected" : "nothing");
      setStatus(next);
    } catch (err) {
      busy = "";
      notice = { kind: "error", err, prefix: "Not connected." };
      render();
    }
  }

  async function confirmExisting() {
    busy = "checking";
    render();
    try {
      const next = normaliseStatus(await api.connectStatus());
      busy = "";
      say(next.connected ? "success" : "warning", next.connected ? "already" : "nothing");
      setStatus(next);
    } catch (err) {
      busy = "";
      notice = { kind: "error", err, prefix: "Could not check your connection." };
      render();
    }
  }

  async function disconnect() {
    if (busy) return;
    busy = "disconnecting";
    notice = null;
    render();
    try {
      const body = await api.connectDisconnect();
      busy = "";
      say("info", "disconnected");
      setStatus({ ...normaliseStatus(body), connected: false });
    } catch (err) {
      busy = "";
      notice = { kind: "error", err, prefix: "Not disconnected." };
      render();
    }
  }

  /** GET /connect/status (on load: also resumes a returning browser's grant). Never throws. */
  async function refresh() {
    if (statusController) statusController.abort();
    const ctl = new AbortController();
    statusController = ctl;
    try {
      const next = normaliseStatus(await api.connectStatus({ signal: ctl.signal }));
      if (statusController !== ctl) return;
      if (notice && notice.code === "status_failed") notice = null;
      setStatus(next);
    } catch (err) {
      if (isAbort(err) || statusController !== ctl) return;
      notice = { kind: "error", code: "status_failed", err, prefix: "Could not check your connection." };
      render();
    } finally {
      if (statusController === ctl) statusController = null;
    }
  }

  /** A data call said `connect_revoked`: the grant is gone (disconnected elsewhere, or revoked by an admin). */
  function markRevoked() {
    if (notice && notice.code === "revoked" && !isConnected()) return;
    say("warning", "revoked");
    setStatus({ connected: false, workspaceId: "", workspaceName: "", scopes: [] });
  }

  // --- Rendering --------------------------------------------------------------
  function noticeNode() {
    if (!notice) return null;
    const node = h("div", {
      className: `callout callout-${notice.kind === "error" ? "danger" : notice.kind}`,
      attrs: { "data-testid": "connect-notice", "data-kind": notice.kind, "data-code": notice.err ? str(notice.err.code) : notice.code, role: notice.kind === "error" || notice.kind === "warning" ? "alert" : "status" },
    });
    if (notice.err) renderError(node, notice.err, notice.prefix || "");
    else node.textContent = notice.text;
    if (notice.code === "popup_blocked" && blockedLinkToken) {
      node.append(
        " ",
        h("button", {
          type: "button",
          className: "btn btn-small btn-secondary",
          text: "Open the Kryptos window",
          attrs: { "data-testid": "connect-open-popup" },
          on: { click: () => openWidget(blockedLinkToken) },
        }),
      );
    }
    return node;
  }

  function busyText() {
    switch (busy) {
      case "starting":
        return "Opening the Kryptos window…";
      case "waiting":
        return "Finish connecting in the Kryptos window…";
      case "exchanging":
        return "Connecting your accounts…";
      case "checking":
        return "Checking your connection…";
      case "disconnecting":
        return "Disconnecting…";
      default:
        return "";
    }
  }

  function render() {
    if (!container) return;
    const connected = isConnected();
    container.dataset.connected = connected ? "true" : status === null ? "unknown" : "false";
    document.body.dataset.connect = container.dataset.connected;
    const statusLine = h(
      "p",
      { className: "list-status", attrs: { role: "status", "aria-live": "polite", "data-testid": "connect-status" } },
      busy ? [h("span", { className: "spinner", attrs: { "aria-hidden": "true" } }), ` ${busyText()}`] : null,
    );

    if (connected) {
      const s = status;
      const disconnectButton = h("button", {
        type: "button",
        className: "btn btn-secondary",
        text: busy === "disconnecting" ? "Disconnecting…" : "Disconnect",
        disabled: Boolean(busy),
        attrs: { "data-testid": "disconnect" },
        on: { click: disconnect },
      });
      fill(
        container,
        h("div", { className: "section-head" }, h("h2", { text: "Connected accounts" }), disconnectButton),
        noticeNode(),
        h(
          "dl",
          { className: "profile connection" },
          h("div", { className: "kv" }, h("dt", { text: "Workspace" }), h("dd", { text: s.workspaceName || "—", attrs: { "data-testid": "connect-workspace-name" } })),
          h("div", { className: "kv" }, h("dt", { text: "Workspace id" }), h("dd", {}, idText(s.workspaceId, { "data-testid": "connect-workspace-id" }))),
          h(
            "div",
            { className: "kv kv-wide" },
            h("dt", { text: "Shared with this app" }),
            h(
              "dd",
              { attrs: { "data-testid": "connect-scopes" } },
              s.scopes.length ? h("ul", { className: "chips" }, s.scopes.map((scope) => h("li", { className: "chip", text: scope }))) : "—",
            ),
          ),
        ),
        statusLine,
      );
      return;
    }

    const connectButton = h("button", {
      type: "button",
      className: "btn btn-primary",
      text: busy === "waiting" ? "Show the Kryptos window" : "Connect your accounts",
      disabled: Boolean(busy) && busy !== "waiting",
      attrs: { "data-testid": "connect" },
      on: { click: start },
    });
    fill(
      container,
      h("div", { className: "section-head" }, h("h2", { text: "Connect your accounts" })),
      noticeNode(),
      h(
        "p",
        { className: "muted section-intro" },
        "No Kryptos account needed: continue as a Guest in the Kryptos window, connect your exchanges and wallets, and see them here. ",
        "The connection is kept by the server; this page never sees its token.",
      ),
      h("div", { className: "actions" }, connectButton),
      statusLine,
    );
  }

  return {
    get connected() {
      return isConnected();
    },
    get status() {
      return status;
    },
    refresh,
    markRevoked,
    start,
    /** Render the card into `node` (the views rebuild; the controller and any open popup stay). */
    mount(node) {
      container = node;
      render();
    },
    unmount(node) {
      if (container === node) container = null;
    },
  };
}
