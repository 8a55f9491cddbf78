"""What the browser tests share: signing in through the emulator's page, the admin's limit form, the devices
panel, the record of everything a page received (and the check that no secret is in it), and same-origin
calls made from inside a page.

Imported by the test modules only after they have checked that Chromium and Playwright are there.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from playwright.async_api import BrowserContext, Locator, Page, Request, Response, expect
from playwright.async_api import Error as PlaywrightError

from tests.e2e.conftest import DevServer

SESSION_COOKIE = "bff-session"  # the plain-http name (`__Host-bff-session` behind https)
CONNECT_COOKIE = "bff-connect"  # the browser's handle on its Kryptos Connect grant (`__Host-bff-connect` on https)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.?[A-Za-z0-9_-]*")
TOKEN_KEYS = re.compile(r"\"(access_token|refresh_token|id_token)\"\s*:")


def integration_rows(page: Page) -> Locator:
    return page.get_by_test_id("integration-row")


async def sign_in(page: Page, user: str) -> None:
    """From the signed-out SPA through the emulator's login page (the user's button) back to the SPA."""
    await page.goto("/")
    await expect(page.locator("body")).to_have_attribute("data-state", "signed-out")
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "/_kryptos/oidc/" in page.url, page.url
    await page.get_by_role("button", name=user).click()
    await expect(page.locator("body")).to_have_attribute("data-state", "signed-in")
    await expect(page.get_by_test_id("user-name")).to_have_text(user)


async def expect_signed_out(page: Page) -> None:
    """The SPA shows its signed-out view: nobody's name in the header, a "Sign in" button."""
    await expect(page.locator("body")).to_have_attribute("data-state", "signed-out")
    await expect(page.get_by_test_id("sign-in")).to_be_visible()
    await expect(page.get_by_test_id("user-name")).to_have_count(0)


def session_rows(page: Page, table: str = "devices-table") -> Locator:
    """The rows of the devices panel's table (or of the admin's force sign-out table: `force-table`)."""
    return page.get_by_test_id(table).get_by_test_id("session-row")


async def sign_in_alone(page: Page, user: str) -> str:
    """Sign in, then end the user's other sessions, and return this one's handle once the devices panel lists
    it alone.

    `bff dev` keeps its sessions as long as it runs (the emulator's reset does not reach them): the sessions
    earlier tests opened for the same user would otherwise show up in the list.
    """
    await sign_in(page, user)
    answer = await fetch_json(page, "POST", "/auth/sessions/end-others")
    assert answer["status"] == 200, answer
    await page.get_by_test_id("devices-refresh").click()
    rows = session_rows(page)
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-current", "true")
    return await current_handle(page)


async def current_handle(page: Page) -> str:
    """The handle of the page's own session, as its devices panel lists it (the row marked "This device")."""
    row = session_rows(page).and_(page.locator("[data-current=true]"))
    await expect(row).to_have_count(1)
    await expect(row.get_by_test_id("session-current")).to_have_text("This device")
    handle = await row.get_attribute("data-handle")
    assert handle is not None and re.fullmatch(r"[0-9a-f]{32}", handle), handle
    return handle


def grant_row(page: Page, *, grant_id: str | None = None, workspace_id: str | None = None) -> Locator:
    """A row of the admin's grants table, by grant id or by the workspace the grant belongs to."""
    if grant_id is not None:
        return page.locator(f"[data-testid=grant-row][data-grant-id='{grant_id}']")
    assert workspace_id is not None
    return page.locator(f"[data-testid=grant-row][data-workspace-id='{workspace_id}']")


async def set_grant_limit(page: Page, grant_id: str, limit: str) -> Locator:
    """Fill and save one grant's limit form; the result line once it is no longer pending."""
    return await save_limit(grant_row(page, grant_id=grant_id), limit)


async def save_limit(grant: Locator, limit: str) -> Locator:
    """Fill and save the limit form of a grant's row; the result line once it is no longer pending."""
    await grant.get_by_test_id("grant-limit-input").fill(limit)
    await grant.get_by_test_id("grant-save").click()
    result = grant.get_by_test_id("grant-result")
    await expect(result).not_to_have_attribute("data-kind", "pending")
    return result


async def fetch_json(page: Page, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A same-origin call made by the page itself (its cookies, `X-CSRF: 1`): `{status, body}`."""
    result: dict[str, Any] = await page.evaluate(
        """async ([method, path, body]) => {
            const headers = {"X-CSRF": "1"};
            const init = {method, headers, cache: "no-store"};
            if (body !== null) {
                headers["Content-Type"] = "application/json";
                init.body = JSON.stringify(body);
            }
            const r = await fetch(path, init);
            const text = await r.text();
            let parsed = null;
            try { parsed = JSON.parse(text); } catch { parsed = text; }
            return {status: r.status, body: parsed};
        }""",
        [method, path, body],
    )
    return result


@dataclass
class Traffic:
    """Everything the watched pages received (and the URLs they asked for), as text to search for secrets.

    Watch a page, or a whole browser context: that also covers the popups its pages open, from their first
    request on.
    """

    base_url: str
    pending: list[asyncio.Future[None]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    bodies: dict[str, int] = field(default_factory=dict)

    def watch(self, target: Page | BrowserContext) -> None:
        target.on("request", self._on_request)
        target.on("response", lambda response: self.pending.append(asyncio.ensure_future(self._capture(response))))

    def _on_request(self, request: Request) -> None:
        self.texts.append((f"request URL {request.url}", request.url))

    async def _capture(self, response: Response) -> None:
        where = f"{response.request.method} {response.url} → {response.status}"
        try:
            headers = await response.all_headers()
        except PlaywrightError as exc:  # a popup that closed itself right after this response
            self.texts.append((f"headers of {where}", f"[headers unavailable: {exc}]"))
            return
        self.texts.append((f"headers of {where}", json.dumps(headers)))
        content_type = headers.get("content-type", "")
        textual = "json" in content_type or content_type.startswith("text/")
        if response.url.startswith(self.base_url) and textual and not 300 <= response.status < 400:
            try:
                body = (await response.body()).decode("utf-8", "replace")
            except PlaywrightError as exc:  # the document was replaced before its body was read
                body = f"[body unavailable: {exc}]"
            else:
                key = f"{response.request.method} {response.url.removeprefix(self.base_url).split('?')[0]}"
                self.bodies[key] = self.bodies.get(key, 0) + 1
            self.texts.append((f"body of {where}", body))

    async def settle(self) -> None:
        await asyncio.gather(*self.pending)

    def find(self, needle: str) -> list[str]:
        """Where `needle` appears in what was recorded."""
        return [where for where, text in self.texts if needle in text]


def issued_secrets(bff_dev: DevServer) -> tuple[set[str], set[str]]:
    """Access tokens and client secrets that reached the emulator's APIs, from its request log."""
    log = httpx2.get(f"{bff_dev.emulator_control}/requests", params={"limit": 1000}, timeout=10).json()
    tokens, secrets = set(), set()
    for entry in log["requests"]:
        authorization = entry["headers"].get("authorization", "")
        if authorization.lower().startswith("bearer "):
            tokens.add(authorization.split(" ", 1)[1])
        if entry["headers"].get("x-client-secret"):
            secrets.add(entry["headers"]["x-client-secret"])
    return tokens, secrets


def assert_no_secret(traffic: Traffic, secrets: Iterable[str]) -> None:
    """Nothing the watched pages received carries one of `secrets`, a JWT or a token field."""
    secrets = set(secrets)
    assert traffic.texts, "nothing was recorded"
    for where, text in traffic.texts:
        for secret in secrets:
            assert secret not in text, f"a token or the client secret reached the page: {where}"
        assert not JWT.search(text), f"a JWT reached the page: {where}: {text[:300]}"
        assert not TOKEN_KEYS.search(text), f"a token field reached the page: {where}: {text[:300]}"
