// Admin section: the OAuth client's grants, their transaction limits (Guest users only) and revocation.
import { api, isAbort } from "./api.js";
import { h, str, formatNumber, formatDate, formatDateTime, toDate, renderError, idText, shortId, uid } from "./ui.js";

const MAX_LIMIT = Number.MAX_SAFE_INTEGER;
const COLUMNS = ["Grant", "Kind", "Limit", "Limiter", "Scopes", "Created / expires", "Manage"];
const KIND_LABEL = { guest: "Guest", linked: "Linked", unknown: "Unknown" };

/**
 * What the BFF learned about a grant from earlier transaction-limit answers (`known`); every field null
 * until it has learned something.
 */
export function knownOf(grant) {
  const k = grant && grant.known && typeof grant.known === "object" ? grant.known : {};
  return {
    kind: k.kind === "guest" || k.kind === "linked" ? k.kind : null,
    limit: Number.isSafeInteger(k.transaction_limit) ? k.transaction_limit : null,
    limiter: typeof k.enable_limiter === "boolean" ? k.enable_limiter : null,
  };
}

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
      h("tr", {}, COLUMNS.map((t) => h("th", { attrs: { scope: "col" }, text: t }))),
    ),
    tbody,
  );
  const refresh = h("button", { type: "button", className: "btn btn-ghost", text: "Refresh", on: { click: () => load() } });

  container.replaceChildren(
    h("div", { className: "section-head" }, h("h2", {}, "Grants ", h("span", { className: "muted-heading", text: "and transaction limits" })), refresh),
    h(
      "p",
      { className: "muted section-intro" },
      "Set the maximum number of transactions imported for a Guest user, per grant (Linked Kryptos accounts are never limited). ",
      "Leave a field on “unchanged” to keep its current value. Kind, limit and limiter show what this server learned from earlier changes; “—” is not known yet. ",
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
      tbody.replaceChildren(h("tr", { className: "empty-row" }, h("td", { attrs: { colspan: COLUMNS.length }, text: "Grants are not available." })));
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
      tbody.replaceChildren(h("tr", { className: "empty-row" }, h("td", { attrs: { colspan: COLUMNS.length, "data-testid": "grants-empty" }, text: "No grants yet. Grants appear once users connect through this client." })));
      return;
    }
    tbody.replaceChildren(...grants.map(renderGrant));
  }

  function renderGrant(grant) {
    const grantId = str(grant.grant_id);
    const workspaceId = str(grant.workspace_id);
    const scopes = scopesOf(grant);
    const known = knownOf(grant);

    const kindCell = h("td", { dataset: { label: "Kind" } });
    const limitCell = h("td", { className: "num", dataset: { label: "Limit" } });
    const limiterCell = h("td", { dataset: { label: "Limiter" } });
    const formCell = h("div", { className: "grant-manage-form" });
    const accessCell = h("div", { className: "grant-access" });
    const tr = h("tr", { attrs: { "data-testid": "grant-row" }, dataset: { grantId, workspaceId, kind: known.kind || "unknown" } });

    function paintKnown() {
      const kind = known.kind || "unknown";
      tr.dataset.kind = kind;
      const tone = kind === "guest" ? "info" : kind === "linked" ? "success" : "neutral";
      kindCell.replaceChildren(
        h("span", {
          className: `badge badge-${tone}`,
          text: KIND_LABEL[kind],
          attrs: {
            "data-testid": "grant-kind",
            "data-kind": kind,
            title: kind === "unknown" ? "Not known yet: learned from the next limit change" : kind === "guest" ? "Guest user: limits apply" : "Linked Kryptos account: never limited",
          },
        }),
      );
      const limitText = known.kind === "linked" ? "Not limited" : known.limit === null ? "—" : formatNumber(known.limit);
      limitCell.replaceChildren(
        h("span", {
          text: limitText,
          attrs: { "data-testid": "grant-limit", title: known.limit === null && known.kind !== "linked" ? "Not known yet, or no per-user limit" : null },
        }),
      );
      const limiterText = known.kind === "linked" ? "—" : known.limiter === true ? "On" : known.limiter === false ? "Off" : "—";
      limiterCell.replaceChildren(h("span", { text: limiterText, attrs: { "data-testid": "grant-limiter" } }));
    }

    paintKnown();
    if (known.kind === "linked") {
      formCell.replaceChildren(
        h("p", { className: "muted small", text: "Linked Kryptos account: transaction limits apply to Guest users only.", attrs: { "data-testid": "grant-limit-na" } }),
      );
    } else {
      formCell.replaceChildren(limitForm(grantId, known, paintKnown));
    }
    renderAccess(accessCell, grantId, tr, formCell);

    tr.append(
      h(
        "td",
        { dataset: { label: "Grant" } },
        h("div", {}, idText(grantId, { "data-testid": "grant-id" })),
        h("div", { className: "sub" }, h("span", { className: "muted small", text: "Workspace " }), idText(workspaceId, { "data-testid": "grant-workspace" })),
      ),
      kindCell,
      limitCell,
      limiterCell,
      h(
        "td",
        { dataset: { label: "Scopes" } },
        scopes.length
          ? h(
              "details",
              { className: "scopes" },
              h("summary", { text: `${scopes.length} ${scopes.length === 1 ? "scope" : "scopes"}` }),
              h("ul", { className: "chips" }, scopes.slice(0, 30).map((sc) => h("li", { className: "chip", text: sc.slice(0, 60) })), scopes.length > 30 ? h("li", { className: "chip", text: `+${scopes.length - 30}` }) : null),
            )
          : "—",
      ),
      h(
        "td",
        { className: "col-dates", dataset: { label: "Created / expires" } },
        dateLine("Created", grant.created_at, "—", "grant-created"),
        dateLine("Expires", grant.expires_at, "Never", "grant-expires"),
      ),
      h("td", { className: "col-manage", dataset: { label: "Manage" } }, formCell, accessCell),
    );
    return tr;
  }

  function dateLine(label, value, empty, testid) {
    const d = toDate(value);
    return h(
      "div",
      { className: "date-line" },
      h("span", { className: "muted small", text: `${label} ` }),
      d ? h("time", { text: formatDate(d), attrs: { datetime: d.toISOString(), title: formatDateTime(d), "data-testid": testid } }) : h("span", { text: empty, attrs: { "data-testid": testid } }),
    );
  }

  function limitForm(grantId, known, paintKnown) {
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
      { className: "grant-form", noValidate: true, attrs: { "aria-label": `Transaction limit for grant ${shortId(grantId)}` } },
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
        // The answer is the grant's current setting: show it in the row.
        known.kind = "guest";
        known.limit = Number.isSafeInteger(d.transaction_limit) ? d.transaction_limit : null;
        if (typeof d.enable_limiter === "boolean") known.limiter = d.enable_limiter;
        paintKnown();
        showResult("success", (n) =>
          n.replaceChildren(`Saved: limit ${limitText}, limiter ${limiterText} for user ${str(d.user_id, "unknown")}`),
        );
      } catch (err) {
        if (destroyed || isAbort(err)) return;
        if (err && err.code === "NOT_ANON_USER") {
          // Now we know: a Linked account. The form goes away on the next load.
          known.kind = "linked";
          known.limit = null;
          known.limiter = null;
          paintKnown();
        }
        showResult("error", (n) => renderError(n, err, "Not saved."));
      } finally {
        save.disabled = false;
        save.textContent = "Save";
      }
    });
    return form;
  }

  /** The Access cell: "Revoke…", then an inline confirmation, then the outcome. */
  function renderAccess(cell, grantId, tr, formCell) {
    const outcome = h("p", { className: "grant-result", attrs: { "data-testid": "grant-revoke-result", role: "status", "aria-live": "polite" } });
    const label = shortId(grantId);
    const revokeButton = h("button", {
      type: "button",
      className: "btn btn-small btn-danger-ghost",
      text: "Revoke…",
      disabled: !grantId,
      attrs: { "data-testid": "grant-revoke", "aria-label": `Revoke grant ${label}` },
      on: { click: () => confirmStep() },
    });

    function idle() {
      cell.replaceChildren(revokeButton, outcome);
    }

    function confirmStep() {
      const confirm = h("button", { type: "button", className: "btn btn-small btn-danger", text: "Revoke", attrs: { "data-testid": "grant-revoke-confirm" } });
      const cancel = h("button", {
        type: "button",
        className: "btn btn-small btn-ghost",
        text: "Cancel",
        attrs: { "data-testid": "grant-revoke-cancel" },
        on: {
          click: () => {
            idle();
            revokeButton.focus();
          },
        },
      });
      confirm.addEventListener("click", () => revoke(confirm, cancel));
      outcome.replaceChildren();
      outcome.className = "grant-result";
      cell.replaceChildren(
        h(
          "div",
          { className: "revoke-confirm", attrs: { role: "group", "aria-label": `Confirm revoking grant ${label}`, "data-testid": "grant-revoke-prompt" } },
          h("p", { className: "small", text: "Revoke this grant? The user's connection ends; they have to connect again." }),
          h("div", { className: "actions" }, confirm, cancel),
        ),
        outcome,
      );
      cancel.focus();
    }

    async function revoke(confirm, cancel) {
      confirm.disabled = true;
      cancel.disabled = true;
      confirm.textContent = "Revoking…";
      try {
        const body = await api.revokeGrant(grantId);
        if (destroyed) return;
        if (!body || body.revoked !== true) {
          throw Object.assign(new Error(str(body && body.error)), { code: str(body && body.code, "invalid_response"), status: 200 });
        }
        tr.dataset.revoked = "true";
        tr.classList.add("is-revoked");
        for (const control of formCell.querySelectorAll("input, select, button")) control.disabled = true;
        cell.replaceChildren(h("span", { className: "badge badge-danger", text: "Revoked", attrs: { "data-testid": "grant-revoked" } }));
      } catch (err) {
        if (destroyed || isAbort(err)) return;
        idle();
        outcome.className = "grant-result grant-result-error";
        renderError(outcome, err, "Not revoked.");
      }
    }

    idle();
  }

  return {
    load,
    destroy() {
      destroyed = true;
      if (controller) controller.abort();
    },
  };
}
