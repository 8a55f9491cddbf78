"""Kryptos Connect for Guests, in a real Chromium against `bff dev`.

A Guest here is a browser context that never signs in with OpenID Connect: it only ever goes through the
Connect widget, the emulator's page that the SPA opens as a popup ("Continue as Guest", "Allow"). The admin
is a second context, signed in through the emulator's login page. Each test starts from the seeded emulator;
every Guest the widget makes is a new user with their own workspace, which is how the admin finds their
grant. A Guest made in the widget starts with a limit of 1,000 transactions, which "Binance Spot" (1,250)
and "Phantom" (after it) cross; a raised limit shows on an integration once it has been re-synced.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.e2e.conftest import CHROMIUM, SKIP_REASON, DevServer, OpenPage

if CHROMIUM is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)
pytest.importorskip("playwright.async_api", reason="playwright is not installed in .venv (a dev dependency)")

from playwright.async_api import Page, expect

from tests.e2e.helpers import (
    CONNECT_COOKIE,
    JWT,
    SESSION_COOKIE,
    TOKEN_KEYS,
    Traffic,
    fetch_json,
    grant_row,
    integration_rows,
    save_limit,
    sign_in,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

WIDGET_PATH = "/_kryptos/connect/widget"
LIMITED = "Binance Spot"  # 1,250 transactions: crosses the new Guest's limit of 1,000
ALSO_LIMITED = "Phantom"  # added after it: nothing left for it under 1,000
REVOKED_TEXT = "Your connection was revoked; connect again."


async def open_widget(page: Page) -> Page:
    """Click "Connect your accounts" and return the widget popup (the SPA's own window stays as it was)."""
    async with page.expect_popup() as popup_info:
        await page.get_by_test_id("connect").click()
    widget = await popup_info.value
    await widget.wait_for_load_state()
    url = urlsplit(widget.url)
    assert url.path == WIDGET_PATH, widget.url
    query = parse_qs(url.query)
    assert query["link_token"][0].startswith("link_"), widget.url
    assert query["origin"] == [await page.evaluate("location.origin")], widget.url
    return widget


async def connect_as_guest(page: Page) -> str:
    """From the SPA with no connection: Connect → the widget → Continue as Guest → Allow → connected.

    Returns the workspace id the page shows for the new connection.
    """
    await expect(page.get_by_test_id("connect")).to_be_enabled()
    widget = await open_widget(page)
    await widget.locator("#guest-login").click()
    await expect(widget.locator("#allow")).to_be_visible()
    async with widget.expect_event("close"):  # the widget reports to the SPA and closes itself
        await widget.locator("#allow").click()
    await expect(page.locator("body")).to_have_attribute("data-state", "connected")
    section = page.get_by_test_id("connect-section")
    await expect(section).to_have_attribute("data-connected", "true")
    await expect(section.get_by_test_id("connect-notice")).to_have_text(
        "Connected. Your exchange and wallet accounts are now shared with this app."
    )
    workspace = await section.get_by_test_id("connect-workspace-id").get_attribute("title")
    assert workspace is not None and workspace.startswith("ws_guest_"), workspace
    return workspace


async def cookies_by_name(page: Page) -> dict[str, Any]:
    return {c["name"]: c for c in await page.context.cookies()}


def emulator_get(bff_dev: DevServer, path: str, **params: Any) -> Any:
    response = httpx2.get(f"{bff_dev.emulator_control}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def connect_tokens_used(bff_dev: DevServer) -> set[str]:
    """The `cat_` tokens the BFF sent to the emulator's data API (from the emulator's request log)."""
    log = emulator_get(bff_dev, "/requests", limit=1000)
    tokens = set()
    for entry in log["requests"]:
        scheme, _, value = entry["headers"].get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.startswith("cat_"):
            tokens.add(value)
    return tokens


async def test_a_guest_connects_an_admin_raises_their_limit_and_a_resync_lifts_it(
    open_page: OpenPage, bff_dev: DevServer
) -> None:
    guest = await open_page()
    traffic = Traffic(bff_dev.base_url)
    traffic.watch(guest.context)  # the Guest's page and the widget popup it opens
    await guest.goto("/")
    await expect(guest.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(guest.get_by_test_id("sign-in")).to_be_visible()  # never used: this Guest has no account

    workspace = await connect_as_guest(guest)
    section = guest.get_by_test_id("connect-section")
    await expect(section.get_by_test_id("connect-workspace-name")).to_have_text("Guest workspace")
    await expect(section.get_by_test_id("connect-scopes")).to_contain_text("integrations:read")
    # The data view works on the Connect grant alone: profile, limit and integrations.
    await expect(guest.get_by_test_id("transaction-limit")).to_have_text("1,000")
    rows = integration_rows(guest)
    await expect(rows).to_have_count(4)
    limited = rows.filter(has_text=LIMITED)
    await expect(limited).to_contain_text("Limit reached")
    await expect(rows.filter(has_text=ALSO_LIMITED)).to_contain_text("Limit reached")
    await expect(guest.get_by_test_id("error-banner")).to_be_hidden()
    # Connect is not an OpenID Connect sign-in.
    session = await fetch_json(guest, "GET", "/auth/session")
    assert session["status"] == 401, session

    # The admin finds the Guest's grant by the workspace the Guest's page shows, and raises its limit.
    admin = await open_page()
    await sign_in(admin, "Ada Admin")
    grant = grant_row(admin, workspace_id=workspace)
    await expect(grant).to_have_count(1)
    await expect(grant.get_by_test_id("grant-limit-input")).to_be_visible()  # not known to be Linked
    result = await save_limit(grant, "5000")
    await expect(result).to_have_attribute("data-kind", "success")
    await expect(result).to_contain_text("Saved: limit 5,000")
    await expect(grant.get_by_test_id("grant-kind")).to_have_text("Guest")
    await expect(grant.get_by_test_id("grant-limit")).to_have_text("5,000")
    grant_id = await grant.get_attribute("data-grant-id")
    assert grant_id and grant_id.startswith("cgrant_"), grant_id

    # Nothing changes for the Guest until the limited integration syncs again.
    await limited.get_by_test_id("resync").click()
    await expect(limited.get_by_test_id("resync-status")).to_have_attribute("data-status", "completed")
    await expect(limited.get_by_test_id("resync-status")).to_have_text("Re-sync completed")
    await expect(limited).not_to_contain_text("Limit reached")
    await expect(limited).to_contain_text("1,250")
    await expect(guest.get_by_test_id("transaction-limit")).to_have_text("5,000")
    await expect(rows.filter(has_text=ALSO_LIMITED)).to_contain_text("Limit reached")  # not re-synced yet

    # Disconnect: the view says so, and a data call now answers connect_revoked.
    await section.get_by_test_id("disconnect").click()
    await expect(guest.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(guest.get_by_test_id("connect-notice")).to_have_text(
        "Disconnected. This app can no longer read your accounts."
    )
    await expect(guest.get_by_test_id("connect")).to_be_visible()
    answer = await fetch_json(guest, "GET", "/api/v1/integrations?page=1&pageSize=25")
    assert answer["status"] == 401, answer
    assert answer["body"]["code"] == "connect_revoked", answer
    status = await fetch_json(guest, "GET", "/connect/status")
    assert status["status"] == 200 and status["body"]["connected"] is False, status
    # The grant ended at Kryptos too, not only in the BFF.
    users = emulator_get(bff_dev, "/state")["users"]
    grants = [g for u in users if u["workspace_id"] == workspace for g in u["grants"]]
    assert [(g["grant_id"], g["revoked"]) for g in grants] == [(grant_id, True)], grants

    # Nothing the Guest's browser received carries the Connect token or the client secret.
    await traffic.settle()
    used = connect_tokens_used(bff_dev)
    assert used, "the BFF should have called the data API with the Guest's cat_ token"
    for call in (
        "POST /connect/link-token",
        "POST /connect/exchange",
        "GET /connect/status",
        "GET /api/v1/integrations",
        "GET /api/v1/userinfo",
        "POST /api/v1/integrations/{id}/resync",
        "GET /api/v1/sync/{id}",
        "POST /connect/disconnect",
    ):
        prefix, _, rest = call.partition("{id}")
        assert any(key.startswith(prefix) and key.endswith(rest) for key in traffic.bodies), (call, traffic.bodies)
    assert traffic.texts
    for where, text in traffic.texts:
        assert "cat_" not in text, f"a Connect token reached the browser: {where}"
        assert bff_dev.client_secret not in text, f"the client secret reached the browser: {where}"
        for token in used:
            assert token not in text, where
        assert not JWT.search(text), f"a JWT reached the page: {where}: {text[:300]}"
        assert not TOKEN_KEYS.search(text), f"a token field reached the page: {where}: {text[:300]}"
    assert any('"set-cookie"' in text for _, text in traffic.texts)  # the cookies were looked at too
    assert await guest.evaluate("document.cookie") == ""
    assert await guest.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])") == "[{},{}]"


async def test_a_returning_browser_is_connected_again_without_the_widget(page: Page, bff_dev: DevServer) -> None:
    await page.goto("/")
    workspace = await connect_as_guest(page)
    await expect(integration_rows(page)).to_have_count(4)

    cookies = await cookies_by_name(page)
    grant_cookie = cookies[CONNECT_COOKIE]
    assert grant_cookie["httpOnly"] is True
    assert grant_cookie["sameSite"] == "Strict"
    assert grant_cookie["path"] == "/"
    assert grant_cookie["expires"] > 0  # outlives the browser session
    old_session = cookies[SESSION_COOKIE]["value"]

    # The session goes (expired, or the browser dropped it); the grant cookie and the others stay.
    await page.context.clear_cookies(name=SESSION_COOKIE)
    left = await cookies_by_name(page)
    assert SESSION_COOKIE not in left
    assert set(left) == set(cookies) - {SESSION_COOKIE}

    popups: list[Page] = []
    page.on("popup", lambda popup: popups.append(popup))
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("connect-workspace-id")).to_have_attribute("title", workspace)
    await expect(integration_rows(page)).to_have_count(4)
    await expect(page.get_by_test_id("error-banner")).to_be_hidden()
    assert popups == [], "no widget flow for a returning browser"
    renewed = await cookies_by_name(page)
    assert renewed[SESSION_COOKIE]["value"] != old_session  # a new session, resumed from the grant

    # The widget would skip sign-in and consent: this browser already holds a grant.
    answer = await fetch_json(page, "POST", "/connect/link-token")
    assert answer["status"] == 200, answer
    assert answer["body"]["isAuthorized"] is True, answer
    assert answer["body"]["link_token"].startswith("link_"), answer


async def test_a_grant_revoked_by_the_admin_tells_the_guest_to_connect_again(
    open_page: OpenPage, bff_dev: DevServer
) -> None:
    guest = await open_page()
    await guest.goto("/")
    workspace = await connect_as_guest(guest)
    await expect(integration_rows(guest)).to_have_count(4)

    admin = await open_page()
    await sign_in(admin, "Ada Admin")
    grant = grant_row(admin, workspace_id=workspace)
    await grant.get_by_test_id("grant-revoke").click()
    await expect(grant.get_by_test_id("grant-revoke-prompt")).to_contain_text("Revoke this grant?")
    await grant.get_by_test_id("grant-revoke-cancel").click()  # changing one's mind revokes nothing
    await expect(grant.get_by_test_id("grant-revoke-prompt")).to_have_count(0)
    await grant.get_by_test_id("grant-revoke").click()
    await grant.get_by_test_id("grant-revoke-confirm").click()
    await expect(grant.get_by_test_id("grant-revoked")).to_have_text("Revoked")
    await expect(grant.get_by_test_id("grant-save")).to_be_disabled()
    # Once gone, the grant is no longer listed.
    await admin.get_by_test_id("admin-section").get_by_role("button", name="Refresh").click()
    await expect(grant).to_have_count(0)
    await expect(grant_row(admin, grant_id="cgrant_guest_demo")).to_have_count(1)

    # The Guest's next data call finds out, and the page says what to do.
    await guest.get_by_test_id("integrations-section").get_by_role("button", name="Refresh").click()
    await expect(guest.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(guest.get_by_test_id("connect-notice")).to_have_text(REVOKED_TEXT)
    await expect(guest.get_by_test_id("error-banner")).to_be_hidden()

    # Connecting again works: a new Guest, a new grant.
    again = await connect_as_guest(guest)
    assert again != workspace
    await expect(integration_rows(guest)).to_have_count(4)


async def test_the_page_believes_only_its_widget_and_a_cancel_connects_nothing(page: Page) -> None:
    exchanges: list[str] = []
    page.on("request", lambda request: exchanges.append(request.url) if "/connect/exchange" in request.url else None)
    await page.goto("/")
    widget = await open_widget(page)
    status = page.get_by_test_id("connect-status")
    await expect(status).to_have_text("Finish connecting in the Kryptos window…")

    # A message that claims success but does not come from the widget window is ignored.
    await page.evaluate(
        """() => window.postMessage(
            {source: "kryptos-connect", event: "success", public_token: "public_forged"}, location.origin)"""
    )
    await page.wait_for_timeout(300)
    assert exchanges == []
    await expect(status).to_have_text("Finish connecting in the Kryptos window…")

    async with widget.expect_event("close"):
        await widget.locator("#cancel").click()
    await expect(page.get_by_test_id("connect-notice")).to_have_text(
        "The Kryptos window was closed before connecting. Nothing was shared."
    )
    await expect(page.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(page.get_by_test_id("connect")).to_be_enabled()
    assert exchanges == []
    answer = await fetch_json(page, "GET", "/connect/status")
    assert answer["status"] == 200 and answer["body"]["connected"] is False, answer
