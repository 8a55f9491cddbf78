"""The demo as a person uses it, in a real Chromium against `bff dev`.

Sign-in goes through the emulator's HTML login page (a click on the user's button, never `login_hint`), and
every assertion is about what the page shows or what the browser holds. Each test starts from the seeded
emulator (`fresh_emulator`) in a fresh browser context, so the tests do not depend on their order.
"""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from tests.e2e.conftest import CHROMIUM, SKIP_REASON, DevServer, OpenPage

if CHROMIUM is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)
pytest.importorskip("playwright.async_api", reason="playwright is not installed in .venv (a dev dependency)")

from playwright.async_api import Frame, Locator, Page, expect

from tests.e2e.helpers import (
    JWT,
    SESSION_COOKIE,
    Traffic,
    assert_no_secret,
    grant_row,
    integration_rows,
    issued_secrets,
    set_grant_limit,
    sign_in,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

GUEST_GRANT = "cgrant_guest_demo"
LINKED_GRANT = "cgrant_linked_lena"
NOT_ANON_USER_TEXT = "This grant belongs to a Linked Kryptos account. Transaction limits only apply to Guest users."
_rows = integration_rows


async def wallet_ids(rows: Locator) -> list[str]:
    ids: list[str] = await rows.evaluate_all("rows => rows.map(row => row.dataset.walletId)")
    return ids


async def fetch_session_status(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        """async () => {
            const r = await fetch("/auth/session", {headers: {"X-CSRF": "1"}, cache: "no-store"});
            return {status: r.status, body: await r.json()};
        }"""
    )
    return result


async def test_guest_signs_in_through_the_login_page_and_sees_integrations(page: Page, bff_dev: DevServer) -> None:
    await sign_in(page, "Guest Demo")

    await expect(page).to_have_url(f"{bff_dev.base_url}/")
    await expect(page.get_by_test_id("user-email")).to_have_text("guest.demo@guest.kryptos.io")
    # The effective limit from /v1/userinfo: the platform default, no override yet.
    await expect(page.get_by_test_id("transaction-limit")).to_have_text("100,000")
    await expect(_rows(page)).to_have_count(14)
    await expect(page.get_by_test_id("page-info")).to_have_text("Page 1 of 1 · 14 integrations")
    await expect(_rows(page).filter(has_text="Main Trading Account")).to_contain_text("Binance")
    await expect(page.get_by_test_id("admin-section")).to_have_count(0)
    await expect(page.get_by_test_id("error-banner")).to_be_hidden()


async def test_search_narrows_the_table_and_clearing_brings_every_row_back(page: Page) -> None:
    await sign_in(page, "Guest Demo")
    rows = _rows(page)
    await expect(rows).to_have_count(14)
    search = page.get_by_test_id("search")

    await search.fill("bybit")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("Derivatives Desk")
    await expect(page.get_by_test_id("page-info")).to_have_text("Page 1 of 1 · 1 integration")

    await search.fill("Phantom")  # a wallet alias
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("Solana")

    await search.fill("no such integration")
    await expect(page.get_by_test_id("empty")).to_have_text("No integrations match “no such integration”.")

    await search.fill("")
    await expect(rows).to_have_count(14)


LIST_TOP_IN_VIEW = """() => {
    const top = document.querySelector("[data-testid=integrations-section]").getBoundingClientRect().top;
    return top >= 0 && top < 120;
}"""


async def test_paging_through_sixty_integrations(page: Page) -> None:
    await sign_in(page, "Gustav Guest")
    rows = _rows(page)
    info = page.get_by_test_id("page-info")
    prev, next_ = page.get_by_test_id("prev-page"), page.get_by_test_id("next-page")
    await expect(info).to_have_text("Page 1 of 3 · 60 integrations")  # 25 per page by default

    await page.get_by_test_id("page-size").select_option("10")
    await expect(info).to_have_text("Page 1 of 6 · 60 integrations")
    await expect(rows).to_have_count(10)
    await expect(prev).to_be_disabled()
    first = await wallet_ids(rows)

    await next_.click()  # below the fold: Playwright scrolls down to it
    await expect(info).to_have_text("Page 2 of 6 · 60 integrations")
    await expect(rows).to_have_count(10)
    second = await wallet_ids(rows)
    assert not set(first) & set(second), (first, second)
    # The new page starts at the top of the list (just under the sticky header), not at the pager.
    await page.wait_for_function(LIST_TOP_IN_VIEW)
    assert await page.evaluate("window.scrollY") > 0

    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await prev.click()
    await expect(info).to_have_text("Page 1 of 6 · 60 integrations")
    assert await wallet_ids(rows) == first
    await page.wait_for_function(LIST_TOP_IN_VIEW)


async def test_details_of_a_partially_synced_integration_explain_the_limit(page: Page) -> None:
    await sign_in(page, "Guest Demo")
    await expect(page.get_by_test_id("transaction-limit")).to_have_text("100,000")
    row = _rows(page).filter(has_text="Derivatives Desk")
    await expect(row).to_contain_text("Partially synced")
    await expect(row).to_contain_text("Limit reached")

    toggle = row.get_by_test_id("details-toggle")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    details = page.locator(f"#{await toggle.get_attribute('aria-controls')}")
    await expect(details).to_be_visible()
    await expect(details.get_by_test_id("limit-exceeded-message")).to_have_text(
        "This integration stopped importing because the transaction limit (100,000) was reached."
    )
    await expect(details.locator("caption")).to_have_text("Last sync, per stage")
    await expect(details.locator("tr[data-stage=Balances]")).to_contain_text("Completed")
    transactions = details.locator("tr[data-stage=Transactions]")
    await expect(transactions).to_contain_text("Failed")
    await expect(transactions).to_contain_text("Limit reached")
    await expect(transactions).to_contain_text("due to transaction limit reached")

    # A partial sync for another reason (an NFT stage failure) does not blame the limit.
    ledger = _rows(page).filter(has_text="Ledger Nano X")
    ledger_toggle = ledger.get_by_test_id("details-toggle")
    await ledger_toggle.click()
    ledger_details = page.locator(f"#{await ledger_toggle.get_attribute('aria-controls')}")
    await expect(ledger_details.locator("tr[data-stage='NFT Holdings']")).to_contain_text("Failed")
    await expect(ledger_details.get_by_test_id("limit-exceeded-message")).to_have_count(0)

    await toggle.click()
    await expect(details).to_be_hidden()


async def resync(row: Locator) -> None:
    """Re-sync one integration from its row and wait until the job ended and the list was loaded again."""
    await row.get_by_test_id("resync").click()
    await expect(row.get_by_test_id("resync-status")).to_have_attribute("data-status", "completed")
    await expect(row.get_by_test_id("resync")).to_be_enabled()


async def test_admin_raises_a_guest_limit_and_the_guest_sees_it_after_a_resync(open_page: OpenPage) -> None:
    admin = await open_page()
    await sign_in(admin, "Ada Admin")
    await expect(admin.get_by_test_id("admin-badge")).to_be_visible()
    await expect(admin.get_by_test_id("admin-section")).to_be_visible()
    await expect(admin.get_by_test_id("grants-table")).to_contain_text(GUEST_GRANT)

    result = await set_grant_limit(admin, GUEST_GRANT, "500000")
    await expect(result).to_have_attribute("data-kind", "success")
    await expect(result).to_have_text(re.compile(r"^Saved: limit 500,000, limiter \w+ for user anon_7f3a9c21$"))
    # The row shows what the answer said: a Guest's grant, limited to 500,000.
    guest_grant = grant_row(admin, grant_id=GUEST_GRANT)
    await expect(guest_grant.get_by_test_id("grant-kind")).to_have_text("Guest")
    await expect(guest_grant.get_by_test_id("grant-limit")).to_have_text("500,000")

    linked = grant_row(admin, grant_id=LINKED_GRANT)
    await expect(linked.get_by_test_id("grant-kind")).to_have_text("Unknown")  # nothing learned about it yet
    result = await set_grant_limit(admin, LINKED_GRANT, "5000")
    await expect(result).to_have_attribute("data-kind", "error")
    await expect(result).to_contain_text(NOT_ANON_USER_TEXT)
    await expect(result).to_contain_text("code: NOT_ANON_USER")
    await expect(linked.get_by_test_id("grant-kind")).to_have_text("Linked")
    # Once the BFF knows the grant is a Linked account's, the list offers no limit form for it.
    await admin.get_by_test_id("admin-section").get_by_role("button", name="Refresh").click()
    await expect(linked.get_by_test_id("grant-kind")).to_have_text("Linked")
    await expect(linked.get_by_test_id("grant-limit-input")).to_have_count(0)
    await expect(linked.get_by_test_id("grant-limit-na")).to_be_visible()
    await expect(guest_grant.get_by_test_id("grant-limit-input")).to_be_visible()

    guest = await open_page()  # another browser context: the Guest's own cookie jar
    await sign_in(guest, "Guest Demo")
    await expect(guest.get_by_test_id("transaction-limit")).to_have_text("500,000")
    await expect(_rows(guest)).to_have_count(14)
    # An integration shows what its last sync imported: the raised limit shows after a re-sync.
    limited = [_rows(guest).filter(has_text=name) for name in ("Derivatives Desk", "Phantom")]
    for row in limited:
        await expect(row).to_contain_text("Limit reached")
    for row in limited:
        await resync(row)
    # Every integration now fits under the limit: nothing is "limit reached" any more.
    await expect(guest.get_by_text("Limit reached")).to_have_count(0)
    await expect(_rows(guest).filter(has_text="Derivatives Desk")).to_contain_text("Completed")


async def test_the_page_can_neither_read_the_session_cookie_nor_receive_a_token(page: Page, bff_dev: DevServer) -> None:
    traffic = Traffic(bff_dev.base_url)
    traffic.watch(page)

    await sign_in(page, "Ada Admin")
    await expect(_rows(page)).to_have_count(2)
    await page.get_by_test_id("search").fill("treasury")
    await expect(_rows(page)).to_have_count(1)
    await page.get_by_test_id("page-size").select_option("10")
    await expect(page.get_by_test_id("page-info")).to_have_text("Page 1 of 1 · 1 integration")
    result = await set_grant_limit(page, GUEST_GRANT, "250000")
    await expect(result).to_have_attribute("data-kind", "success")
    await traffic.settle()

    cookies = {c["name"]: c for c in await page.context.cookies(bff_dev.base_url)}
    session = cookies[SESSION_COOKIE]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/"
    assert session["value"]
    visible: str = await page.evaluate("document.cookie")
    assert SESSION_COOKIE not in visible
    assert session["value"] not in visible
    storage: str = await page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert storage == "[{},{}]"

    # The page asked for (and got) every kind of BFF answer the demo uses.
    for call in (
        "GET /auth/session",
        "GET /api/v1/userinfo",
        "GET /api/v1/integrations",
        "GET /api/developer/grants",
        f"PATCH /api/developer/grants/{GUEST_GRANT}/transaction-limit",
    ):
        assert traffic.bodies.get(call), (call, traffic.bodies)

    tokens, client_secrets = issued_secrets(bff_dev)
    assert tokens, "the BFF should have called the emulator's APIs with a bearer token"
    assert client_secrets
    assert_no_secret(traffic, tokens | client_secrets)


async def test_sign_out_ends_the_session(page: Page, bff_dev: DevServer) -> None:
    await sign_in(page, "Guest Demo")
    await expect(_rows(page)).to_have_count(14)
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))

    def back_home(frame: Frame) -> bool:
        return frame is page.main_frame and frame.url == f"{bff_dev.base_url}/"

    # Sign-out navigates through the provider's end-session endpoint, which redirects back to `/`.
    async with page.expect_event("framenavigated", back_home):
        await page.get_by_test_id("sign-out").click()
    await page.wait_for_load_state()
    end_session = [url for url in visited if "/_kryptos/oidc/session/end?" in url]
    assert end_session, visited
    # The logout URL came from the BFF's JSON: it must not carry the ID token (`id_token_hint`) to the page.
    assert not JWT.search(end_session[0]), end_session[0]

    await expect(page.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(page.get_by_test_id("sign-in")).to_be_visible()
    await expect(page.get_by_test_id("user-name")).to_have_count(0)
    # The page that comes back confirms the sign-out, and keeps nothing in storage to do so.
    await expect(page.get_by_test_id("page-notice")).to_have_text("Signed out. Your session on this site has ended.")
    assert await page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])") == "[{},{}]"
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(page.get_by_test_id("page-notice")).to_be_hidden()  # said once, not on every visit
    answer = await fetch_session_status(page)
    assert answer["status"] == 401
    assert answer["body"]["code"] == "not_authenticated"
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies(bff_dev.base_url)}

    # The tokens were revoked at the provider, not only forgotten by the BFF.
    state = httpx2.get(f"{bff_dev.emulator_control}/state", timeout=10).json()
    guest_grants = [g for g in state["oidc_grants"] if g["sub"] == "anon_7f3a9c21"]
    assert guest_grants
    assert all(g["revoked"] for g in guest_grants), guest_grants
