// Admin section: transaction limits for Guest users, per OAuth grant.
import { api, isAbort } from "./api.js";
import { h, str, formatNumber, formatDateTime, renderError, shorten, uid } from "./ui.js";

const MAX_LIMIT = Number.MAX_SAFE_INTEGER;

function scopesOf(grant) {
  if (Array.isArray(grant.scopes)) return grant.scopes.filter((s) => typeof s === "string");
  if (typeof grant.scopes === "string") return grant.scopes.split(/\s+/).filter(Boolean);
  return [];
}

/** Parse the limit input. Returns {value} (number or undefined when empty) or {error}. */
export function parseLimit(input) {
  if (input.validity && input.validity.badInput) return { error: "Enter the limit as a whole number, e.g. 10000." };
  const raw = input.value.trim();
  if (raw === "") return { value: undefined };
  if (!/^\d+$/.test(raw)) return { error: "The transaction limit must be a positive whole number." };
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_LIMIT) return { error: "The transaction limit must be a positive whole number." };
  return { value: n };
}

export function createAdmin(container) {
  let controller = null;
  let destroyed = false;

  const noticeText = h("div", { className: "banner-text" });
  const notice = h(
    "div",
    { className: "banner banner-danger banner-inline", hidden: true, attrs: { role: "alert", "data-testid": "admin-error" } },
    h("span", { className: "banner-icon", attrs: { "aria-hidden": "true" } }),
    noticeText,
  );
  const status = h("p", { className: "list-status", attrs: { role: "status", "aria-live": "polite" } });
  const tbody = h("tbody");
  const count = h("span", { className: "muted" });
  const table = h(
    "table",
    { className: "table grants", attrs: { "data-testid": "grants-table" } },
    h("caption", { className: "visually-hidden", text: "Grants of your OAuth client" }),
    h(
      "thead",
      {},
      h("tr", {}, ["Grant", "Workspace", "Scopes", "Created", "Expires", "Change limit"].map((t) => h("th", { attrs: { scope: "col" }, text: t }))),
    ),
    tbody,
  );
  const refresh = h("button", { type: "button", className: "btn btn-ghost", text: "Refresh", on: { click: () => load() } });

  container.replaceChildren(
    h("div", { className: "section-head" }, h("h2", {}, "Transaction limits ", h("span", { className: "muted-heading", text: "(Guest users)" })), refresh),
    h(
      "p",
      { className: "muted section-intro" },
      "Set the maximum number of transactions imported for a Guest user, per grant. Leave a field on “unchanged” to keep its current value. ",
      count,
    ),
    notice,
    status,
    h("div", { className: "table-wrap" }, table),
  );

  async function load() {
    if (destroyed) return;
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    status.replaceChildren(h("span", { className: "spinner", attrs: { "aria-hidden": "true" } }), " Loading grants…");
    table.setAttribute("aria-busy", "true");
    try {
      const body = await api.grants({ signal: mine.signal });
      if (mine !== controller || destroyed) return;
      const data = body && body.data && typeof body.data === "object" ? body.data : {};
      const grants = Array.isArray(data.grants) ? data.grants.filter((g) => g && typeof g === "object") : [];
      notice.hidden = true;
      render(grants, Number.isInteger(data.count) ? data.count : grants.length);
    } catch (err) {
      if (isAbort(err) || mine !== controller || destroyed) return;
      renderError(noticeText, err, "Could not load grants.");
      notice.dataset.code = str(err.code, "unknown_error");
      notice.hidden = false;
      tbody.replaceChildren(h("tr", { className: "empty-row" }, h("td", { attrs: { colspan: 6 }, text: "Grants are not available." })));
      count.textContent = "";
    } finally {
      if (mine === controller && !destroyed) {
        status.replaceChildren();
        table.setAttribute("aria-busy", "false");
        controller = null;
      }
    }
  }

  function render(grants, total) {
    count.textContent = `${formatNumber(total)} ${total === 1 ? "grant" : "grants"}.`;
    if (!grants.length) {
      tbody.replaceChildren(h("tr", { className: "empty-row" }, h("td", { attrs: { colspan: 6, "data-testid": "grants-empty" }, text: "No grants yet. Grants appear once users connect through this client." })));
      return;
    }
    tbody.replaceChildren(...grants.map(renderGrant));
  }

  function renderGrant(grant) {
    const grantId = str(grant.grant_id);
    const scopes = scopesOf(grant);
    const limitId = uid("grant-limit");
    const limiterId = uid("grant-limiter");
    const resultId = uid("grant-result");

    const limitInput = h("input", {
      id: limitId,
      type: "number",
      className: "input input-number",
      min: "1",
      step: "1",
      inputMode: "numeric",
      attrs: { "data-testid": "grant-limit-input", placeholder: "unchanged", "aria-describedby": resultId },
    });
    const limiterSelect = h(
      "select",
      { id: limiterId, className: "input select", attrs: { "data-testid": "grant-limiter-select", "aria-describedby": resultId } },
      h("option", { value: "", text: "Unchanged" }),
      h("option", { value: "on", text: "On" }),
      h("option", { value: "off", text: "Off" }),
    );
    const save = h("button", { type: "submit", className: "btn btn-primary btn-small", text: "Save", attrs: { "data-testid": "grant-save" } });
    const result = h("p", { id: resultId, className: "grant-result", attrs: { "data-testid": "grant-result", role: "status", "aria-live": "polite" } });

    const form = h(
      "form",
      { className: "grant-form", noValidate: true, attrs: { "aria-label": `Transaction limit for grant ${shorten(grantId, 8, 4)}` } },
      h("div", { className: "field" }, h("label", { htmlFor: limitId, text: "Transaction limit" }), limitInput),
      h("div", { className: "field" }, h("label", { htmlFor: limiterId, text: "Limiter enabled" }), limiterSelect),
      h("div", { className: "field field-action" }, save),
      result,
    );

    const showResult = (kind, build) => {
      result.className = `grant-result grant-result-${kind}`;
      result.dataset.kind = kind;
      build(result);
    };

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (save.disabled) return;
      const parsed = parseLimit(limitInput);
      if (parsed.error) {
        showResult("error", (n) => n.replaceChildren(parsed.error));
        limitInput.setAttribute("aria-invalid", "true");
        limitInput.focus();
        return;
      }
      limitInput.removeAttribute("aria-invalid");
      const patch = {};
      if (parsed.value !== undefined) patch.transactionLimit = parsed.value;
      if (limiterSelect.value === "on") patch.enableLimiter = true;
      else if (limiterSelect.value === "off") patch.enableLimiter = false;
      if (!Object.keys(patch).length) {
        showResult("error", (n) => n.replaceChildren("Nothing to save: enter a transaction limit or choose On / Off for the limiter."));
        return;
      }
      if (!grantId) {
        showResult("error", (n) => n.replaceChildren("This grant has no id and cannot be changed."));
        return;
      }

      save.disabled = true;
      save.textContent = "Saving…";
      showResult("pending", (n) => n.replaceChildren("Saving…"));
      try {
        const body = await api.setGrantLimit(grantId, patch);
        if (destroyed) return;
        if (!body || body.success === false) {
          const err = { code: str(body && body.code, "unknown_error"), message: str(body && body.error), status: 200 };
          showResult("error", (n) => renderError(n, err, "Not saved."));
          return;
        }
        const d = body.data && typeof body.data === "object" ? body.data : {};
        const limitText = d.transaction_limit === null || d.transaction_limit === undefined ? "none" : formatNumber(d.transaction_limit);
        const limiterText = d.enable_limiter === true ? "on" : d.enable_limiter === false ? "off" : "unchanged";
        showResult("success", (n) =>
          n.replaceChildren(`Saved: limit ${limitText}, limiter ${limiterText} for user ${str(d.user_id, "unknown")}`),
        );
      } catch (err) {
        if (destroyed || isAbort(err)) return;
        showResult("error", (n) => renderError(n, err, "Not saved."));
      } finally {
        save.disabled = false;
        save.textContent = "Save";
      }
    });

    const created = grant.created_at;
    const expires = grant.expires_at;
    return h(
      "tr",
      { attrs: { "data-testid": "grant-row" }, dataset: { grantId } },
      h("td", { dataset: { label: "Grant" } }, h("span", { className: "mono", text: shorten(grantId, 10, 4), attrs: { title: grantId } })),
      h("td", { dataset: { label: "Workspace" } }, h("span", { className: "mono", text: shorten(str(grant.workspace_id, "—"), 10, 4), attrs: { title: str(grant.workspace_id) } })),
      h(
        "td",
        { dataset: { label: "Scopes" } },
        scopes.length
          ? h("ul", { className: "chips" }, scopes.slice(0, 12).map((s) => h("li", { className: "chip", text: s.slice(0, 60) })), scopes.length > 12 ? h("li", { className: "chip", text: `+${scopes.length - 12}` }) : null)
          : "—",
      ),
      h("td", { dataset: { label: "Created" }, text: formatDateTime(created) }),
      h("td", { dataset: { label: "Expires" }, text: expires ? formatDateTime(expires) : "Never" }),
      h("td", { className: "col-form", dataset: { label: "Change limit" } }, form),
    );
  }

  return {
    load,
    destroy() {
      destroyed = true;
      if (controller) controller.abort();
    },
  };
}
