// Integrations table: search, page size, pagination, per-row sync details and re-sync.
import { api, isAbort, sleep } from "./api.js";
import { h, str, fill, formatNumber, formatLimit, formatRelative, formatDateTime, toDate, shorten, debounce, uid, describeError } from "./ui.js";

export const PAGE_SIZES = [10, 25, 50, 100, 200];
const DEFAULT_PAGE_SIZE = 25;
const SEARCH_MAX = 200;
const SEARCH_DEBOUNCE_MS = 300;

// Re-sync: POST …/resync answers a job id; GET /api/v1/sync/{jobId} is polled until the job ends.
const SYNC_POLL_MS = 600;
const SYNC_MAX_POLLS = 40; // ~25 s: a job still running after that is left to finish on its own
const SYNC_TERMINAL = new Set(["completed", "partially_synced", "failed", "cancelled"]);
const SYNC_TEXT = {
  starting: { text: "Starting re-sync…", tone: "info" },
  queued: { text: "Re-sync queued…", tone: "info" },
  ongoing: { text: "Re-syncing…", tone: "info" },
  completed: { text: "Re-sync completed", tone: "success" },
  partially_synced: { text: "Re-sync partially completed", tone: "warning" },
  failed: { text: "Re-sync failed", tone: "danger" },
  cancelled: { text: "Re-sync cancelled", tone: "warning" },
  timeout: { text: "Still re-syncing; refresh in a while to see the result.", tone: "warning" },
};

const STATUS = {
  COMPLETED: { label: "Completed", tone: "success" },
  ONGOING: { label: "Syncing", tone: "info" },
  "PARTIALLY SYNCED": { label: "Partially synced", tone: "warning" },
  FAILED: { label: "Failed", tone: "danger" },
  active: { label: "Not synced yet", tone: "neutral" },
};

export function statusBadge(status) {
  const raw = str(status, "unknown");
  const known = Object.prototype.hasOwnProperty.call(STATUS, raw) ? STATUS[raw] : null;
  const upper = raw.toUpperCase();
  const fallback = Object.prototype.hasOwnProperty.call(STATUS, upper) ? STATUS[upper] : null;
  const info = known || fallback || { label: raw.slice(0, 40) || "Unknown", tone: "neutral" };
  return h("span", {
    className: `badge badge-${info.tone}`,
    text: info.label,
    dataset: { status: raw.slice(0, 40) },
    attrs: { title: raw.slice(0, 80) },
  });
}

function titleCase(value) {
  const s = str(value, "unknown");
  return s ? s.charAt(0).toUpperCase() + s.slice(1) : "—";
}

function isSafeImageUrl(value) {
  if (typeof value !== "string" || !value) return false;
  try {
    const u = new URL(value, window.location.href);
    if (u.protocol === "data:") return /^data:image\//i.test(value);
    return u.protocol === "https:" || u.protocol === "http:";
  } catch {
    return false;
  }
}

function logo(integration) {
  const name = str(integration.providerPublicName) || str(integration.provider) || "Provider";
  const fallback = h("span", {
    className: "logo logo-fallback",
    text: name.trim().charAt(0).toUpperCase() || "?",
    attrs: { role: "img", "aria-label": `${name} logo` },
  });
  if (!isSafeImageUrl(integration.logoUrl)) return fallback;
  const img = h("img", {
    className: "logo",
    attrs: { src: integration.logoUrl, alt: `${name} logo`, width: 32, height: 32, loading: "lazy", decoding: "async", referrerpolicy: "no-referrer" },
  });
  img.addEventListener("error", () => img.replaceWith(fallback), { once: true });
  return img;
}

function stageEntries(integration) {
  const details = integration.lastSyncLogDetails;
  const log = integration.lastSyncLog;
  const out = [];
  if (details && typeof details === "object" && !Array.isArray(details)) {
    for (const [stage, info] of Object.entries(details)) {
      if (info && typeof info === "object") {
        out.push({ stage, status: str(info.status, "unknown"), message: str(info.message), limitExceeded: info.limitExceeded === true });
      } else {
        out.push({ stage, status: str(info, "unknown"), message: "", limitExceeded: false });
      }
    }
  } else if (log && typeof log === "object" && !Array.isArray(log)) {
    for (const [stage, status] of Object.entries(log)) {
      out.push({ stage, status: str(status, "unknown"), message: "", limitExceeded: false });
    }
  }
  return out;
}

function stageLabel(stage) {
  return stage
    .replace(/[_-]+/g, " ")
    .replace(/([a-z])([A-Z])/g, "$1 $2")
    .replace(/^./, (c) => c.toUpperCase());
}

function hasDetails(integration) {
  return (
    integration.limitExceeded === true ||
    (typeof integration.message === "string" && integration.message.trim() !== "") ||
    stageEntries(integration).length > 0
  );
}

function limitExceededText(limit) {
  if (typeof limit === "number" && Number.isFinite(limit)) {
    return `This integration stopped importing because the transaction limit (${formatLimit(limit)}) was reached.`;
  }
  return "This integration stopped importing because the transaction limit was reached.";
}

export function createIntegrations(container, { banner, onSynced = null }) {
  const state = {
    page: 1,
    pageSize: DEFAULT_PAGE_SIZE,
    searchedKey: "",
    limit: undefined, // effective transaction limit from userinfo (null = no limit)
    data: [],
    pagination: null,
    loading: false,
    loaded: false,
    error: null,
    expanded: new Set(),
    // walletId -> { status, active, jobId, error }: survives re-renders and reloads of the list.
    syncs: new Map(),
  };
  let seq = 0;
  let controller = null;
  let destroyed = false;
  let scrollAfterLoad = false; // paging: bring the top of the list back into view once the page is shown
  const syncControllers = new Set();
  const rowControls = new Map(); // walletId -> { button, statusNode } of the rows on screen

  // --- Static structure -------------------------------------------------
  const searchId = uid("search");
  const sizeId = uid("page-size");
  const search = h("input", {
    id: searchId,
    type: "search",
    className: "input",
    maxLength: SEARCH_MAX,
    attrs: { "data-testid": "search", placeholder: "Search by name, alias or address", autocomplete: "off", spellcheck: "false" },
  });
  const pageSize = h(
    "select",
    { id: sizeId, className: "input select", attrs: { "data-testid": "page-size" } },
    PAGE_SIZES.map((n) => h("option", { value: String(n), text: String(n), selected: n === DEFAULT_PAGE_SIZE })),
  );
  const refresh = h("button", { type: "button", className: "btn btn-ghost", text: "Refresh" });
  const status = h("p", { className: "list-status", attrs: { role: "status", "aria-live": "polite" } });

  const tbody = h("tbody");
  const table = h(
    "table",
    { className: "table integrations", attrs: { "data-testid": "integrations-table" } },
    h("caption", { className: "visually-hidden", text: "Your integrations" }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Logo", "Integration", "Category", "Type", "Status", "Transactions", "Last synced", "Actions"].map((label, i) =>
          h("th", { attrs: { scope: "col" }, className: i === 0 || i === 7 ? "col-narrow" : i === 5 ? "num" : "" }, i === 0 || i === 7 ? h("span", { className: "visually-hidden", text: label }) : label),
        ),
      ),
    ),
    tbody,
  );

  const prev = h("button", { type: "button", className: "btn btn-secondary", text: "← Previous", disabled: true, attrs: { "data-testid": "prev-page" } });
  const next = h("button", { type: "button", className: "btn btn-secondary", text: "Next →", disabled: true, attrs: { "data-testid": "next-page" } });
  const pageInfo = h("span", { className: "page-info", attrs: { "data-testid": "page-info", "aria-live": "polite" } });

  container.replaceChildren(
    h(
      "div",
      { className: "section-head" },
      h("h2", { id: uid("integrations-title"), text: "Integrations" }),
      refresh,
    ),
    h(
      "div",
      { className: "toolbar" },
      h("div", { className: "field field-grow" }, h("label", { htmlFor: searchId, text: "Search" }), search),
      h("div", { className: "field" }, h("label", { htmlFor: sizeId, text: "Per page" }), pageSize),
    ),
    status,
    h("div", { className: "table-wrap" }, table),
    h("nav", { className: "pager", attrs: { "aria-label": "Integrations pages" } }, prev, pageInfo, next),
  );

  // --- Behaviour --------------------------------------------------------
  const runSearch = debounce(() => {
    const value = search.value.slice(0, SEARCH_MAX).trim();
    if (value === state.searchedKey) return;
    state.searchedKey = value;
    state.page = 1;
    load();
  }, SEARCH_DEBOUNCE_MS);

  search.addEventListener("input", runSearch);
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      runSearch.cancel();
      const value = search.value.slice(0, SEARCH_MAX).trim();
      state.searchedKey = value;
      state.page = 1;
      load();
    }
  });
  pageSize.addEventListener("change", () => {
    const n = Number(pageSize.value);
    state.pageSize = PAGE_SIZES.includes(n) ? n : DEFAULT_PAGE_SIZE;
    state.page = 1;
    scrollAfterLoad = true;
    load();
  });
  prev.addEventListener("click", () => {
    if (state.page > 1) {
      state.page -= 1;
      scrollAfterLoad = true;
      load();
    }
  });
  next.addEventListener("click", () => {
    state.page += 1;
    scrollAfterLoad = true;
    load();
  });
  refresh.addEventListener("click", () => load());

  async function load() {
    if (destroyed) return;
    seq += 1;
    const mine = seq;
    if (controller) controller.abort();
    controller = new AbortController();
    state.loading = true;
    renderChrome();
    try {
      const body = await api.integrations(
        { page: state.page, pageSize: state.pageSize, searchedKey: state.searchedKey },
        { signal: controller.signal },
      );
      if (mine !== seq || destroyed) return; // a newer request superseded this one
      const data = body && Array.isArray(body.data) ? body.data.filter((x) => x && typeof x === "object") : [];
      const p = body && body.pagination && typeof body.pagination === "object" ? body.pagination : {};
      state.data = data;
      state.pagination = {
        page: Number.isInteger(p.page) && p.page > 0 ? p.page : state.page,
        pageSize: Number.isInteger(p.pageSize) && p.pageSize > 0 ? p.pageSize : state.pageSize,
        totalCount: Number.isInteger(p.totalCount) && p.totalCount >= 0 ? p.totalCount : data.length,
        hasNextPage: p.hasNextPage === true,
        hasPreviousPage: p.hasPreviousPage === true,
      };
      state.page = state.pagination.page;
      state.error = null;
      state.loaded = true;
      banner.clear("integrations");
    } catch (err) {
      if (isAbort(err) || mine !== seq || destroyed) return;
      state.error = err;
      state.data = [];
      state.pagination = null;
      banner.show("integrations", err, "Could not load integrations.");
    } finally {
      if (mine === seq && !destroyed) {
        state.loading = false;
        controller = null;
        renderRows();
        renderChrome();
        if (scrollAfterLoad) {
          scrollAfterLoad = false;
          scrollToTop();
        }
      }
    }
  }

  /** After paging, the new page starts at the top of the list, not wherever the pager button was. */
  function scrollToTop() {
    const header = document.querySelector(".app-header");
    const headerBottom = header && getComputedStyle(header).position === "sticky" ? header.getBoundingClientRect().bottom : 0;
    const top = container.getBoundingClientRect().top;
    if (top < headerBottom || top > window.innerHeight) {
      // `scroll-margin-top` (style.css) keeps the heading clear of the sticky header.
      container.scrollIntoView({ block: "start", behavior: "auto" });
    }
  }

  // --- Re-sync ------------------------------------------------------------
  function syncInfo(walletId) {
    return state.syncs.get(walletId) || null;
  }

  function setSync(walletId, info) {
    state.syncs.set(walletId, info);
    paintSync(walletId);
  }

  function paintSync(walletId) {
    const controls = rowControls.get(walletId);
    if (!controls) return;
    const info = syncInfo(walletId);
    const active = Boolean(info && info.active);
    controls.button.disabled = active;
    controls.button.textContent = active ? "Re-syncing…" : "Re-sync";
    controls.button.setAttribute("aria-busy", active ? "true" : "false");
    const node = controls.statusNode;
    if (!info) {
      node.replaceChildren();
      node.hidden = true;
      delete node.dataset.status;
      return;
    }
    const known = Object.prototype.hasOwnProperty.call(SYNC_TEXT, info.status) ? SYNC_TEXT[info.status] : null;
    let text = known ? known.text : `Re-sync: ${info.status.slice(0, 40)}`;
    let tone = known ? known.tone : "neutral";
    if (info.error) {
      text = `Re-sync did not finish: ${describeError(info.error)}`;
      tone = "danger";
    }
    node.className = `resync-status resync-${tone}`;
    node.dataset.status = info.error ? "error" : info.status;
    fill(node, active ? h("span", { className: "spinner spinner-small", attrs: { "aria-hidden": "true" } }) : null, active ? " " : null, text);
    node.hidden = false;
  }

  async function resync(walletId) {
    if (!walletId || destroyed) return;
    const existing = syncInfo(walletId);
    if (existing && existing.active) return;
    const ctl = new AbortController();
    syncControllers.add(ctl);
    setSync(walletId, { status: "starting", active: true, jobId: "", error: null });
    try {
      const started = await api.resync(walletId, { signal: ctl.signal });
      const job = started && started.data && typeof started.data === "object" ? started.data : {};
      const jobId = str(job.job_id);
      if (!jobId) throw Object.assign(new Error("no job id"), { code: "invalid_response", status: 0 });
      let status = str(job.status, "queued").toLowerCase();
      setSync(walletId, { status, active: !SYNC_TERMINAL.has(status), jobId, error: null });
      for (let polls = 0; !SYNC_TERMINAL.has(status) && polls < SYNC_MAX_POLLS; polls += 1) {
        await sleep(SYNC_POLL_MS, ctl.signal);
        let body;
        try {
          body = await api.syncJob(jobId, { signal: ctl.signal });
        } catch (err) {
          if (err && err.status === 429 && !isAbort(err)) {
            await sleep(Math.min(10, Math.max(1, err.retryAfter || 1)) * 1000, ctl.signal);
            continue;
          }
          throw err;
        }
        const data = body && body.data && typeof body.data === "object" ? body.data : {};
        status = str(data.status, status).toLowerCase();
        setSync(walletId, { status, active: !SYNC_TERMINAL.has(status), jobId, error: null });
      }
      if (!SYNC_TERMINAL.has(status)) {
        setSync(walletId, { status: "timeout", active: false, jobId, error: null });
        return;
      }
      if (destroyed) return;
      // The job changed what the list (and the profile) show: load them again.
      load();
      if (onSynced) onSynced(walletId, status);
    } catch (err) {
      if (isAbort(err) || destroyed) return;
      setSync(walletId, { status: "error", active: false, jobId: "", error: err });
    } finally {
      syncControllers.delete(ctl);
    }
  }

  function renderChrome() {
    const p = state.pagination;
    table.setAttribute("aria-busy", state.loading ? "true" : "false");
    container.classList.toggle("is-loading", state.loading);
    prev.disabled = state.loading || !p || !p.hasPreviousPage;
    next.disabled = state.loading || !p || !p.hasNextPage;
    if (p) {
      const pages = Math.max(1, Math.ceil(p.totalCount / p.pageSize));
      pageInfo.textContent = `Page ${formatNumber(p.page)} of ${formatNumber(pages)} · ${formatNumber(p.totalCount)} ${p.totalCount === 1 ? "integration" : "integrations"}`;
    } else {
      pageInfo.textContent = "";
    }
    if (state.loading) {
      status.replaceChildren(h("span", { className: "spinner", attrs: { "aria-hidden": "true" } }), " Loading integrations…");
    } else {
      status.replaceChildren();
    }
  }

  function renderRows() {
    rowControls.clear();
    const rows = [];
    if (state.error) {
      rows.push(emptyRow("Integrations could not be loaded.", "empty-error"));
    } else if (state.loaded && state.data.length === 0) {
      rows.push(
        emptyRow(
          state.searchedKey ? `No integrations match “${state.searchedKey}”.` : "No integrations yet. Connect an exchange or wallet in Kryptos to see it here.",
          "empty",
        ),
      );
    } else {
      state.data.forEach((integration, index) => rows.push(...renderIntegration(integration, index)));
    }
    tbody.replaceChildren(...rows);
  }

  function emptyRow(text, testid) {
    return h("tr", { className: "empty-row" }, h("td", { attrs: { colspan: 8, "data-testid": testid }, text }));
  }

  function rowKey(integration, index) {
    return str(integration.walletId) || `${str(integration.provider)}#${index}`;
  }

  function renderIntegration(integration, index) {
    const key = rowKey(integration, index);
    const name = str(integration.alias) || str(integration.providerPublicName) || str(integration.provider) || "Unnamed integration";
    const idValue = str(integration.publicAddress) || str(integration.walletId);
    const provider = str(integration.providerPublicName) || str(integration.provider);
    const lastSynced = integration.lastSyncedAt;

    const cells = [
      h("td", { className: "col-logo", dataset: { label: "" } }, logo(integration)),
      h(
        "td",
        { className: "col-name", dataset: { label: "Integration" } },
        h("div", { className: "name", text: name }),
        provider && provider !== name ? h("div", { className: "sub", text: provider }) : null,
        idValue ? h("div", { className: "sub mono", text: shorten(idValue, 6, 4), attrs: { title: idValue } }) : null,
        integration.isContract === true ? h("span", { className: "tag", text: "Contract" }) : null,
      ),
      h("td", { dataset: { label: "Category" }, text: titleCase(integration.category) }),
      h("td", { dataset: { label: "Type" }, text: str(integration.type).toUpperCase() || "—" }),
      h(
        "td",
        { dataset: { label: "Status" } },
        h(
          "span",
          { className: "badges" },
          statusBadge(integration.status),
          integration.limitExceeded === true ? h("span", { className: "badge badge-warning badge-outline", text: "Limit reached" }) : null,
        ),
      ),
      h("td", { className: "num", dataset: { label: "Transactions" }, text: formatNumber(integration.totalTransactions) }),
      h(
        "td",
        { dataset: { label: "Last synced" } },
        lastSynced ? h("time", { text: formatRelative(lastSynced), attrs: { title: formatDateTime(lastSynced), datetime: safeIso(lastSynced) } }) : "Never",
      ),
    ];

    const walletId = str(integration.walletId);
    const tr = h("tr", { className: "integration-row", attrs: { "data-testid": "integration-row" }, dataset: { walletId } });
    const out = [tr];
    const actions = h("div", { className: "row-actions" });
    if (walletId) {
      const resyncButton = h("button", {
        type: "button",
        className: "btn btn-small btn-secondary",
        text: "Re-sync",
        attrs: { "data-testid": "resync", "aria-label": `Re-sync ${name}` },
        on: { click: () => resync(walletId) },
      });
      const statusNode = h("span", { className: "resync-status", hidden: true, attrs: { "data-testid": "resync-status", role: "status", "aria-live": "polite" } });
      actions.append(resyncButton);
      rowControls.set(walletId, { button: resyncButton, statusNode });
      paintSync(walletId);
      cells[1].append(statusNode);
    }

    if (hasDetails(integration)) {
      const detailsId = uid("sync-details");
      const open = state.expanded.has(key);
      const toggle = h("button", {
        type: "button",
        className: "btn btn-small btn-ghost details-toggle",
        attrs: { "data-testid": "details-toggle", "aria-expanded": open ? "true" : "false", "aria-controls": detailsId, "aria-label": `Details for ${name}` },
      }, h("span", { className: "chevron", attrs: { "aria-hidden": "true" } }), "Details");
      const detailsRow = h(
        "tr",
        { id: detailsId, className: "details-row", hidden: !open, attrs: { "data-testid": "sync-details" } },
        h("td", { attrs: { colspan: 8 } }, renderDetails(integration)),
      );
      toggle.addEventListener("click", () => {
        const nowOpen = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", nowOpen ? "true" : "false");
        detailsRow.hidden = !nowOpen;
        tr.classList.toggle("is-open", nowOpen);
        if (nowOpen) state.expanded.add(key);
        else state.expanded.delete(key);
      });
      tr.classList.toggle("is-open", open);
      actions.prepend(toggle);
      cells.push(h("td", { className: "col-details", dataset: { label: "" } }, actions));
      tr.append(...cells);
      out.push(detailsRow);
    } else {
      cells.push(h("td", { className: "col-details", dataset: { label: "" } }, actions));
      tr.append(...cells);
    }
    return out;
  }

  function renderDetails(integration) {
    const stages = stageEntries(integration);
    const limitHit = integration.limitExceeded === true || stages.some((s) => s.limitExceeded);
    const parts = [];
    if (limitHit) {
      parts.push(
        h(
          "div",
          { className: "callout callout-warning", attrs: { role: "note" } },
          h("strong", { text: "Transaction limit reached. " }),
          h("span", { text: limitExceededText(state.limit), attrs: { "data-testid": "limit-exceeded-message" } }),
        ),
      );
    }
    const message = str(integration.message).trim();
    if (message) parts.push(h("p", { className: "wallet-message" }, h("strong", { text: "Message: " }), message));
    if (stages.length) {
      parts.push(
        h(
          "table",
          { className: "table stages" },
          h("caption", { className: "stages-caption", text: "Last sync, per stage" }),
          h("thead", {}, h("tr", {}, h("th", { attrs: { scope: "col" }, text: "Stage" }), h("th", { attrs: { scope: "col" }, text: "Status" }), h("th", { attrs: { scope: "col" }, text: "Message" }))),
          h(
            "tbody",
            {},
            stages.map((s) =>
              h(
                "tr",
                { dataset: { stage: s.stage.slice(0, 80) } },
                h("th", { attrs: { scope: "row" }, text: stageLabel(s.stage) }),
                h("td", {}, h("span", { className: "badges" }, statusBadge(s.status), s.limitExceeded ? h("span", { className: "badge badge-warning badge-outline", text: "Limit reached" }) : null)),
                h("td", { text: s.message || "—" }),
              ),
            ),
          ),
        ),
      );
    }
    const added = integration.addedOn;
    if (added) parts.push(h("p", { className: "muted small", text: `Added ${formatDateTime(added)}` }));
    return h("div", { className: "details" }, parts);
  }

  function safeIso(value) {
    const d = toDate(value);
    return d ? d.toISOString() : null;
  }

  // --- Public API -------------------------------------------------------
  renderChrome();
  return {
    load,
    setLimit(limit) {
      state.limit = limit;
      for (const node of tbody.querySelectorAll('[data-testid="limit-exceeded-message"]')) {
        node.textContent = limitExceededText(limit);
      }
    },
    destroy() {
      destroyed = true;
      runSearch.cancel();
      if (controller) controller.abort();
      for (const ctl of syncControllers) ctl.abort();
      syncControllers.clear();
    },
  };
}
