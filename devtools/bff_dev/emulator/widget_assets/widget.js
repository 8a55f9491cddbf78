// The Kryptos Connect widget stand-in (served by the emulator, see widget.py). Drives the X-LINK-TOKEN
// endpoints and reports to the app that opened this popup:
//   window.opener.postMessage({source: "kryptos-connect", event: "success", public_token}, origin)
//   {source, event: "exit"} on Cancel, {source, event: "error", code, message} when the session cannot go on.
// `origin` was checked by the server against the client's registered redirect URIs before this script
// was allowed on the page; nothing is ever posted to "*".
(() => {
  "use strict";

  const SOURCE = "kryptos-connect";
  // A widget session that hits one of these cannot go on: the app has to start again.
  const FATAL = new Set(["TOKEN_EXPIRED", "INVALID_TOKEN", "TOKEN_ALREADY_USED", "NOT_AUTHENTICATED"]);
  const STEPS = ["choose", "otp", "consent", "integration", "error"];

  const root = document.getElementById("widget");
  const { api, linkToken, origin } = root.dataset;
  const $ = (id) => document.getElementById(id);
  let requestedEmail = "";

  function show(step) {
    for (const name of STEPS) $("step-" + name).hidden = name !== step;
    $("cancel").hidden = step === "error";
    say("");
  }

  function say(text) {
    $("message").textContent = text;
  }

  function post(message) {
    // The opener may have gone (navigated away, closed): then there is nobody left to tell.
    if (window.opener) window.opener.postMessage({ source: SOURCE, ...message }, origin);
  }

  function finish(message) {
    post(message);
    window.close();
  }

  function fail(code, text) {
    show("error");
    $("error-message").textContent = `${text} (${code})`;
    post({ event: "error", code, message: text });
  }

  async function call(path, body) {
    let response;
    try {
      response = await fetch(api + path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-LINK-TOKEN": linkToken },
        body: JSON.stringify(body || {}),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw Object.assign(new Error("The Kryptos service cannot be reached."), { code: "NETWORK_ERROR" });
    }
    const payload = await response.json().catch(() => null);
    if (!response.ok || !payload || payload.success !== true) {
      const message = (payload && payload.error) || `Unexpected answer (HTTP ${response.status}).`;
      throw Object.assign(new Error(message), { code: (payload && payload.code) || "UNEXPECTED_RESPONSE" });
    }
    return payload.data;
  }

  // Run one user action: its button is disabled meanwhile; a fatal error ends the session, others are shown.
  async function act(button, action) {
    button.disabled = true;
    say("");
    try {
      await action();
    } catch (error) {
      if (FATAL.has(error.code)) fail(error.code, error.message);
      else say(`${error.message} (${error.code})`);
    } finally {
      button.disabled = false;
    }
  }

  function start() {
    $("guest-login").addEventListener("click", (event) =>
      act(event.currentTarget, async () => {
        await call("/guest");
        show("consent");
      }),
    );
    $("email-form").addEventListener("submit", (event) => {
      event.preventDefault();
      act($("send-otp"), async () => {
        const data = await call("/otp/request", { email: $("email").value });
        requestedEmail = data.email;
        show("otp");
        $("otp-email").textContent = data.email;
        $("otp-code").textContent = data.otp;
        $("otp").focus();
      });
    });
    $("otp-form").addEventListener("submit", (event) => {
      event.preventDefault();
      act($("verify-otp"), async () => {
        await call("/otp/verify", { email: requestedEmail, otp: $("otp").value });
        show("consent");
      });
    });
    $("allow").addEventListener("click", (event) =>
      act(event.currentTarget, async () => {
        const data = await call("/consent");
        finish({ event: "success", public_token: data.public_token });
      }),
    );
    $("done").addEventListener("click", () => finish({ event: "success", public_token: null }));
    $("cancel").addEventListener("click", () => finish({ event: "exit" }));
    $("close").addEventListener("click", () => window.close());

    if (!window.opener) {
      // Nobody to report to (opened directly, or the opener went away): say so instead of failing silently.
      show("error");
      $("error-message").textContent = "Open this page from the app: it reports to the window that opened it.";
    } else if (root.dataset.error) {
      post({ event: "error", code: root.dataset.error, message: $("error-message").textContent });
    }
  }

  start();
})();
