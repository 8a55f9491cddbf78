"""Sessions people can see and end, in a real Chromium against `bff dev`: "Your devices" and an
administrator's force sign-out.

Each browser context is one device with its own cookie jar. A context whose session was ended elsewhere
learns it at its next call: a 401 `session_expired`, after which the SPA shows its signed-out view. Counts
are asserted, not only visibility: how many sessions each list shows before and after every action, and how
many of the user's grants the emulator saw revoked.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx2
import pytest

from tests.e2e.conftest import CHROMIUM, SKIP_REASON, DevServer, OpenPage

if CHROMIUM is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)
pytest.importorskip("playwright.async_api", reason="playwright is not installed in .venv (a dev dependency)")

from playwright.async_api import Locator, Page, expect

from tests.e2e.helpers import (
    SESSION_COOKIE,
    Traffic,
    assert_no_secret,
    current_handle,
    expect_signed_out,
    fetch_json,
    issued_secrets,
    session_rows,
    sign_in,
    sign_in_alone,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

GUEST = "Guest Demo"
GUEST_SUB = "anon_7f3a9c21"
ADMIN = "Ada Admin"
DEVICE = "Chrome on Linux"  # how the BFF names headless Chromium ("HeadlessChrome/… X11; Linux")
ENDED_REASON = "Your session has ended: it expired, or it was signed out from another device. Please sign in again."


def row_of(rows: Locator, handle: str) -> Locator:
    return rows.and_(rows.page.locator(f"[data-handle='{handle}']"))


async def expect_session_ended(page: Page) -> None:
    """The page's session is gone: its next call is a 401 `session_expired`, and the SPA, at its next call
    (here the devices panel's Refresh), shows the signed-out view and says why."""
    answer = await fetch_json(page, "GET", "/auth/session")
    assert answer["status"] == 401, answer
    assert answer["body"]["code"] == "session_expired", answer
    await page.get_by_test_id("devices-refresh").click()
    await expect_signed_out(page)
    await expect(page.get_by_test_id("signed-out-reason")).to_have_text(ENDED_REASON)
    await expect(page.get_by_test_id("devices-section")).to_have_count(0)


async def expect_still_signed_in(page: Page) -> None:
    answer = await fetch_json(page, "GET", "/auth/session")
    assert answer["status"] == 200, answer
    assert answer["body"]["authenticated"] is True, answer
    await expect(page.locator("body")).to_have_attribute("data-state", "signed-in")


def revoked_grants(bff_dev: DevServer, sub: str) -> list[bool]:
    """Whether each OpenID Connect grant the emulator issued to `sub` (in this test) was revoked, sorted."""
    state = httpx2.get(f"{bff_dev.emulator_control}/state", timeout=10).json()
    return sorted(bool(g["revoked"]) for g in state["oidc_grants"] if g["sub"] == sub)


async def test_one_device_signs_another_out_and_that_one_is_signed_out_at_its_next_call(
    open_page: OpenPage, bff_dev: DevServer
) -> None:
    a, b = await open_page(), await open_page()
    a_handle = await sign_in_alone(a, GUEST)
    await sign_in(b, GUEST)
    b_handle = await current_handle(b)
    assert b_handle != a_handle
    await expect(session_rows(b)).to_have_count(2)  # B sees both devices as well, its own marked

    rows = session_rows(a)
    await a.get_by_test_id("devices-refresh").click()
    await expect(rows).to_have_count(2)
    await expect(a.get_by_test_id("devices-count")).to_have_text("2 sessions.")
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.handle)") == [a_handle, b_handle]  # own first
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.current)") == ["true", "false"]
    await expect(rows.get_by_test_id("session-device")).to_have_text([DEVICE, DEVICE])
    await expect(rows.get_by_test_id("session-kind")).to_have_text(["Browser", "Browser"])
    await expect(row_of(rows, a_handle).get_by_test_id("session-last-active")).to_have_text("Now")
    # Only the other device can be signed out from here; this one signs out with the header's button.
    await expect(rows.get_by_test_id("session-end")).to_have_count(1)
    await expect(row_of(rows, a_handle).get_by_test_id("session-end")).to_have_count(0)
    await expect(a.get_by_test_id("devices-end-others")).to_be_enabled()

    await row_of(rows, b_handle).get_by_role("button", name=f"Sign out {DEVICE}").click()
    await expect(a.get_by_test_id("devices-result")).to_have_text(f"Signed out 1 device ({DEVICE}).")
    await expect(rows).to_have_count(1)
    await expect(a.get_by_test_id("devices-count")).to_have_text("1 session.")
    await expect(rows).to_have_attribute("data-handle", a_handle)
    await expect(a.get_by_test_id("devices-end-others")).to_be_disabled()  # nobody else left
    await expect(a.get_by_test_id("devices-error")).to_be_hidden()

    await expect_session_ended(b)
    await b.reload()  # and it stays signed out
    await expect_signed_out(b)
    await expect_still_signed_in(a)
    # B's tokens were revoked at the provider, A's were not.
    assert revoked_grants(bff_dev, GUEST_SUB) == [False, True]

    # B's handle is no longer one of the user's live sessions.
    answer = await fetch_json(a, "DELETE", f"/auth/sessions/{b_handle}")
    assert answer["status"] == 404 and answer["body"]["code"] == "session_not_found", answer


async def test_sign_out_everywhere_else_ends_every_other_device(open_page: OpenPage, bff_dev: DevServer) -> None:
    a, b, c = await open_page(), await open_page(), await open_page()
    a_handle = await sign_in_alone(a, GUEST)
    await sign_in(b, GUEST)
    await sign_in(c, GUEST)

    rows = session_rows(a)
    await a.get_by_test_id("devices-refresh").click()
    await expect(rows).to_have_count(3)
    await expect(a.get_by_test_id("devices-count")).to_have_text("3 sessions.")
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.current)") == ["true", "false", "false"]
    await expect(rows.first).to_have_attribute("data-handle", a_handle)
    await expect(rows.get_by_test_id("session-end")).to_have_count(2)

    # B's list is now stale: C is about to be signed out by A.
    b_rows = session_rows(b)
    await b.get_by_test_id("devices-refresh").click()
    await expect(b_rows).to_have_count(3)
    c_handle = await current_handle(c)

    await a.get_by_test_id("devices-end-others").click()
    await expect(a.get_by_test_id("devices-result")).to_have_text("Signed out 2 other devices.")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-handle", a_handle)
    await expect(rows).to_have_attribute("data-current", "true")
    await expect(a.get_by_test_id("devices-count")).to_have_text("1 session.")

    # B's stale "Sign out" of C: B's own session has ended, so its click is a 401 and B shows signed out.
    await row_of(b_rows, c_handle).get_by_test_id("session-end").click()
    await expect_signed_out(b)
    await expect(b.get_by_test_id("signed-out-reason")).to_have_text(ENDED_REASON)
    answer = await fetch_json(b, "GET", "/auth/session")
    assert answer["status"] == 401 and answer["body"]["code"] == "session_expired", answer
    await expect_session_ended(c)

    await expect_still_signed_in(a)
    await a.get_by_test_id("devices-refresh").click()
    await expect(rows).to_have_count(1)
    assert revoked_grants(bff_dev, GUEST_SUB) == [False, True, True]


async def test_an_admin_forces_a_user_to_sign_out(open_page: OpenPage, bff_dev: DevServer) -> None:
    g1, g2, g3 = await open_page(), await open_page(), await open_page()
    await sign_in_alone(g1, GUEST)
    await sign_in(g2, GUEST)
    await sign_in(g3, GUEST)
    g2_handle, g3_handle = await current_handle(g2), await current_handle(g3)
    await expect(g1.get_by_test_id("force-signout-section")).to_have_count(0)  # not an admin

    admin = await open_page()
    await sign_in(admin, ADMIN)
    tool = admin.get_by_test_id("force-signout-section")
    rows = session_rows(admin, "force-table")
    sub_input, find = tool.get_by_test_id("force-sub"), tool.get_by_test_id("force-find")

    # Checked in the page before anything is sent; then a user without sessions.
    await find.click()
    await expect(tool.get_by_test_id("force-hint")).to_have_text(
        "Enter the user's subject identifier (sub), e.g. anon_7f3a9c21."
    )
    await expect(sub_input).to_have_attribute("aria-invalid", "true")
    await expect(tool.get_by_test_id("force-heading")).to_be_hidden()
    await sub_input.fill("x" * 300)
    assert len(await sub_input.input_value()) == 255  # the field takes no more than a sub may have
    await sub_input.fill("zoë")
    await find.click()
    await expect(tool.get_by_test_id("force-hint")).to_contain_text("only printable ASCII characters")
    await sub_input.fill("a/b")  # the BFF refuses an encoded slash in a path: the page says so instead
    await find.click()
    await expect(tool.get_by_test_id("force-hint")).to_contain_text("cannot be looked up here")
    await expect(tool.get_by_test_id("force-heading")).to_be_hidden()
    await sub_input.fill("nobody? 1 %&x=y")  # every character of it must reach the BFF as part of the sub
    await find.click()
    await expect(tool.get_by_test_id("force-heading")).to_have_text("Sessions of nobody? 1 %&x=y")
    await expect(rows).to_have_count(0)
    await expect(tool.get_by_test_id("sessions-empty")).to_have_text("This user has no active sessions.")
    await expect(tool.get_by_test_id("force-end-all")).to_be_disabled()
    await expect(tool.get_by_test_id("force-hint")).to_be_hidden()

    await sub_input.fill(GUEST_SUB)
    await find.click()
    await expect(tool.get_by_test_id("force-heading")).to_have_text(f"Sessions of {GUEST_SUB}")
    await expect(rows).to_have_count(3)
    await expect(tool.get_by_test_id("force-count")).to_have_text("3 sessions")
    await expect(rows.and_(admin.locator("[data-current=true]"))).to_have_count(0)  # none is the admin's
    await expect(rows.get_by_test_id("force-end")).to_have_count(3)

    # One session: G3.
    await row_of(rows, g3_handle).get_by_test_id("force-end").click()
    await expect(tool.get_by_test_id("force-result")).to_have_text(f"Signed out 1 session ({DEVICE}).")
    await expect(rows).to_have_count(2)
    await expect(row_of(rows, g3_handle)).to_have_count(0)
    await expect_session_ended(g3)

    # G2 signs itself out meanwhile: the admin's "Sign out" of it is a 404, shown, and the list reloaded.
    answer = await fetch_json(g2, "POST", "/auth/logout")
    assert answer["status"] == 200, answer
    await row_of(rows, g2_handle).get_by_test_id("force-end").click()
    error = tool.get_by_test_id("force-error")
    await expect(error).to_be_visible()
    await expect(error).to_have_attribute("data-code", "session_not_found")
    await expect(error).to_contain_text("(code: session_not_found, HTTP 404)")
    await expect(rows).to_have_count(1)

    # Everywhere: what is left (G1), after a confirmation.
    await tool.get_by_test_id("force-end-all").click()
    await expect(tool.get_by_test_id("force-end-all-prompt")).to_be_visible()
    await tool.get_by_test_id("force-end-all-confirm").click()
    await expect(tool.get_by_test_id("force-result")).to_have_text(f"Signed out 1 session of {GUEST_SUB}.")
    await expect(rows).to_have_count(0)
    await expect(tool.get_by_test_id("force-count")).to_have_text("0 sessions")
    await expect(tool.get_by_test_id("force-end-all")).to_be_disabled()
    await expect(error).to_be_hidden()

    await expect_session_ended(g1)
    await expect_still_signed_in(admin)
    assert revoked_grants(bff_dev, GUEST_SUB) == [True, True, True]


def _session_secrets(cookie: str) -> set[str]:
    """The session cookie's value, the session id inside it and the id's digest (what Redis knows it by)."""
    session_id = cookie.rsplit(".", 1)[0]
    return {cookie, session_id, hashlib.sha256(session_id.encode()).hexdigest()[:40]}


async def test_the_sessions_panels_show_no_token_secret_or_session_id(open_page: OpenPage, bff_dev: DevServer) -> None:
    g1, g2, admin = await open_page(), await open_page(), await open_page()
    traffic = Traffic(bff_dev.base_url)
    for page in (g1, g2, admin):
        traffic.watch(page.context)
    await sign_in_alone(g1, GUEST)
    await sign_in(g2, GUEST)
    await sign_in(admin, ADMIN)
    session_secrets: set[str] = set()
    for page in (g1, g2, admin):
        cookies = {c["name"]: c["value"] for c in await page.context.cookies(bff_dev.base_url)}
        session_secrets |= _session_secrets(cookies[SESSION_COOKIE])

    rows = session_rows(g1)
    await g1.get_by_test_id("devices-refresh").click()
    await expect(rows).to_have_count(2)
    handles: list[str] = await rows.evaluate_all("rows => rows.map(r => r.dataset.handle)")
    tool = admin.get_by_test_id("force-signout-section")
    await tool.get_by_test_id("force-sub").fill(GUEST_SUB)
    await tool.get_by_test_id("force-find").click()
    await expect(session_rows(admin, "force-table")).to_have_count(2)
    dom: list[str] = [await page.content() for page in (g1, g2, admin)]

    await rows.get_by_test_id("session-end").click()
    await expect(rows).to_have_count(1)
    await tool.get_by_test_id("force-end-all").click()
    await tool.get_by_test_id("force-end-all-confirm").click()
    await expect(session_rows(admin, "force-table")).to_have_count(0)
    await traffic.settle()

    for call in ("GET /auth/sessions", "POST /auth/sessions/end-others", f"GET /api/admin/users/{GUEST_SUB}/sessions"):
        assert traffic.bodies.get(call), (call, traffic.bodies)
    assert any(key.startswith("DELETE /auth/sessions/") for key in traffic.bodies), traffic.bodies
    assert traffic.bodies.get(f"DELETE /api/admin/users/{GUEST_SUB}/sessions"), traffic.bodies

    tokens, client_secrets = issued_secrets(bff_dev)
    assert tokens, "the BFF should have called the emulator's APIs with a bearer token"
    assert_no_secret(traffic, tokens | client_secrets | {bff_dev.client_secret})
    # The cookie is in Set-Cookie headers, of course; never in a body, a URL or the page.
    shown = [(where, text) for where, text in traffic.texts if not where.startswith("headers of")]
    shown += [(f"the DOM of page {n}", text) for n, text in enumerate(dom, start=1)]
    for where, text in shown:
        for secret in session_secrets:
            assert secret not in text, f"a session cookie, id or its digest reached the page: {where}"
    for handle in handles:
        assert all(handle not in secret for secret in session_secrets), handle
    storage: list[Any] = [
        await p.evaluate("[document.cookie, localStorage.length, sessionStorage.length]") for p in (g1, admin)
    ]
    assert storage == [["", 0, 0], ["", 0, 0]], storage
