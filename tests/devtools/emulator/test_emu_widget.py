"""The Connect widget stand-in: its page (origin check, CSP, steps) and its `X-LINK-TOKEN` backend, driven
the way the page's script drives it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import BASE_URL, Driver

APP_ORIGIN = "http://app.test"  # the origin of the test client's redirect URI
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"


async def _page(emu: Driver, link_token: str, origin: str = APP_ORIGIN) -> Any:
    return await emu.http.get("/connect/widget", params={"link_token": link_token, "origin": origin})


def _visible_steps(html: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r'<section id="step-([a-z]+)"(?! hidden)>', html)}


async def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == code and body["error"]


async def test_the_page_for_a_new_connection(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    response = await _page(emu, link)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    html = response.text
    assert f'<script src="{BASE_URL}/connect/widget/widget.js" defer></script>' in html
    assert f'<link rel="stylesheet" href="{BASE_URL}/connect/widget/widget.css">' in html
    assert "<style" not in html and "<script>" not in html and " on" + "click=" not in html  # nothing inline
    assert f'data-origin="{APP_ORIGIN}"' in html and f'data-link-token="{link}"' in html
    assert 'data-existing-grant="false"' in html and 'data-error=""' in html
    assert _visible_steps(html) == {"choose"}
    for element_id in ("guest-login", "email", "send-otp", "otp-code", "otp", "verify-otp", "allow", "done", "cancel"):
        assert f'id="{element_id}"' in html
    assert ">Continue as Guest</button>" in html and ">Email login</button>" in html
    assert "integrations:read" in html  # the consent step lists the scopes


async def test_the_page_for_an_existing_grant_goes_straight_to_integration(emu: Driver) -> None:
    connected = await emu.connect()
    link = (await emu.link_token(access_token=connected["access_token"]))["link_token"]
    html = (await _page(emu, link)).text
    assert 'data-existing-grant="true"' in html
    assert _visible_steps(html) == {"integration"}


async def test_a_grant_revoked_after_the_link_token_was_made_no_longer_skips_sign_in(emu: Driver) -> None:
    connected = await emu.connect()
    link = (await emu.link_token(access_token=connected["access_token"]))["link_token"]
    await emu.connect_post("/token/revoke", {"grant_id": connected["grant_id"]})
    html = (await _page(emu, link)).text
    assert 'data-existing-grant="false"' in html and _visible_steps(html) == {"choose"}


async def test_an_expired_link_token_makes_the_page_report_an_error(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    await emu.advance_clock(30 * 60)
    response = await _page(emu, link)
    assert response.status_code == 200
    assert 'data-error="TOKEN_EXPIRED"' in response.text and "widget.js" in response.text
    assert _visible_steps(response.text) == {"error"}


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.test",
        "https://app.test",  # another scheme
        "http://app.test:8080",  # another port
        "http://app.test/",  # a URL, not an origin
        "http://app.test/auth/callback",
        "http://user@app.test",
        "HTTP://APP.TEST",  # not the serialized form a browser compares against
        "*",
        "null",
        "",
    ],
)
async def test_the_page_refuses_an_unregistered_origin_and_carries_no_script(emu: Driver, origin: str) -> None:
    link = (await emu.link_token())["link_token"]
    response = await _page(emu, link, origin)
    assert response.status_code == 400
    assert "ORIGIN_NOT_ALLOWED" in response.text
    assert "<script" not in response.text and "data-origin" not in response.text
    assert response.headers["content-security-policy"] == CSP


async def test_the_page_refuses_an_unknown_link_token(emu: Driver) -> None:
    response = await _page(emu, "link_nope")
    assert response.status_code == 400
    assert "INVALID_TOKEN" in response.text and "<script" not in response.text


async def test_the_page_accepts_a_default_port_spelled_out_in_the_redirect_uri(emu: Driver) -> None:
    emu.app.state.emulator.clients["bff-test"].redirect_uris.append("https://spa.example:443/cb")
    link = (await emu.link_token())["link_token"]
    assert (await _page(emu, link, "https://spa.example")).status_code == 200


async def test_assets_are_served_as_files(emu: Driver) -> None:
    script = await emu.http.get("/connect/widget/widget.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert '"kryptos-connect"' in script.text
    # Every message goes to the checked origin, never to "*".
    calls = re.findall(r"postMessage\((.*)\);", script.text)
    assert calls and all(call.endswith(", origin") for call in calls)
    style = await emu.http.get("/connect/widget/widget.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


async def test_guest_flow_end_to_end(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    signed_in = await emu.widget_post("/guest", link)
    assert signed_in.status_code == 200
    user = signed_in.json()["data"]
    assert user["account_type"] == "guest" and user["user_id"].startswith("anon_")
    assert user["workspace_id"].startswith("ws_guest_")
    consent = await emu.widget_post("/consent", link)
    assert consent.status_code == 200
    public = consent.json()["data"]["public_token"]
    assert public.startswith("public_") and consent.json()["data"]["expires_at"].endswith("Z")
    exchanged = (await emu.connect_post("/token/exchange", {"public_token": public})).json()["data"]
    assert exchanged["workspace_id"] == user["workspace_id"]

    token = exchanged["access_token"]
    info = (await emu.data("/v1/userinfo", token)).json()["userInfo"]
    assert info["sub"] == user["user_id"] and info["transaction_limit"] == 1_000
    items = {i["alias"]: i for i in (await emu.data("/v1/integrations", token)).json()["data"]}
    assert set(items) == {"Browser Wallet", "Binance Spot", "Phantom", "Kraken export"}
    binance = items["Binance Spot"]
    assert binance["limitExceeded"] is True and binance["totalTransactions"] == 580
    assert binance["status"] == "PARTIALLY SYNCED" and "transaction limit reached" in binance["message"]
    assert items["Phantom"]["limitExceeded"] is True and items["Phantom"]["totalTransactions"] == 0
    assert "limitExceeded" not in items["Browser Wallet"] and "limitExceeded" not in items["Kraken export"]


async def test_widget_guests_use_the_workspace_default_when_one_is_set(emu: Driver) -> None:
    await emu.configure(workspace_limit={"transaction_limit": 50_000})
    connected = await emu.connect()
    info = (await emu.data("/v1/userinfo", connected["access_token"])).json()["userInfo"]
    assert info["transaction_limit"] == 50_000
    items = (await emu.data("/v1/integrations", connected["access_token"])).json()["data"]
    assert not any("limitExceeded" in item for item in items)


async def test_email_login_errors_then_success_makes_a_linked_user(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    early = await emu.widget_post("/otp/verify", link, {"email": "new@example.com", "otp": "000000"})
    await _error(early, 400, "OTP_NOT_REQUESTED")
    bad_email = await emu.widget_post("/otp/request", link, {"email": "not an email"})
    await _error(bad_email, 400, "VALIDATION_ERROR")
    requested = await emu.widget_post("/otp/request", link, {"email": "New.Person@example.com"})
    assert requested.status_code == 200
    data = requested.json()["data"]
    assert data["email"] == "New.Person@example.com" and re.fullmatch(r"\d{6}", data["otp"])
    mismatch = await emu.widget_post("/otp/verify", link, {"email": "other@example.com", "otp": data["otp"]})
    await _error(mismatch, 400, "EMAIL_MISMATCH")
    wrong = "000000" if data["otp"] != "000000" else "111111"
    await _error(await emu.widget_post("/otp/verify", link, {"email": data["email"], "otp": wrong}), 400, "INVALID_OTP")
    # Not signed in yet: no consent.
    await _error(await emu.widget_post("/consent", link), 400, "NOT_AUTHENTICATED")

    verified = await emu.widget_post("/otp/verify", link, {"email": "new.person@example.com", "otp": data["otp"]})
    assert verified.status_code == 200
    user = verified.json()["data"]
    assert user["account_type"] == "linked" and user["user_id"].startswith("user_")
    # The code was used up.
    again = await emu.widget_post("/otp/verify", link, {"email": data["email"], "otp": data["otp"]})
    await _error(again, 400, "OTP_NOT_REQUESTED")

    public = (await emu.widget_post("/consent", link)).json()["data"]["public_token"]
    exchanged = (await emu.connect_post("/token/exchange", {"public_token": public})).json()["data"]
    info = (await emu.data("/v1/userinfo", exchanged["access_token"])).json()["userInfo"]
    assert info["sub"] == user["user_id"] and info["email"] == "New.Person@example.com"
    assert info["transaction_limit"] is None  # Linked users are never limited
    patch = await emu.patch_limit(exchanged["grant_id"], {"transactionLimit": 10})
    await _error(patch, 400, "NOT_ANON_USER")


async def test_email_login_of_a_known_email_is_that_user(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    lena = await emu.widget_sign_in(link, "LENA@example.com")
    assert lena == {"user_id": "user_lena_5c1d9e", "workspace_id": "ws_lena_personal",
                    "workspace_name": "Lena's Portfolio", "account_type": "linked"}  # fmt: skip
    # A new email logs in as the same new user the second time.
    first = await emu.widget_sign_in((await emu.link_token())["link_token"], "twice@example.com")
    second = await emu.widget_sign_in((await emu.link_token())["link_token"], "twice@example.com")
    assert first == second


async def test_email_login_of_a_seeded_guest_is_that_guest_and_patch_applies(emu: Driver) -> None:
    connected = await emu.connect(email="guest.demo@guest.kryptos.io")
    info = (await emu.data("/v1/userinfo", connected["access_token"])).json()["userInfo"]
    assert info["sub"] == "anon_7f3a9c21" and info["transaction_limit"] == 100_000
    patch = await emu.patch_limit(connected["grant_id"], {"transactionLimit": 123_456})
    assert patch.status_code == 200 and patch.json()["data"]["user_id"] == "anon_7f3a9c21"
    info = (await emu.data("/v1/userinfo", connected["access_token"])).json()["userInfo"]
    assert info["transaction_limit"] == 123_456


async def test_patch_on_a_widget_guest(emu: Driver) -> None:
    connected = await emu.connect()
    response = await emu.patch_limit(connected["grant_id"], {"transactionLimit": 5_000})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["grant_id"] == connected["grant_id"] and data["user_id"].startswith("anon_")
    assert data["transaction_limit"] == 5_000 and data["enable_limiter"] is True
    info = (await emu.data("/v1/userinfo", connected["access_token"])).json()["userInfo"]
    assert info["transaction_limit"] == 5_000


async def test_a_link_token_consents_once(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    await emu.widget_sign_in(link)
    assert (await emu.widget_post("/consent", link)).status_code == 200
    await _error(await emu.widget_post("/consent", link), 400, "TOKEN_ALREADY_USED")


async def test_widget_calls_need_a_live_link_token(emu: Driver) -> None:
    await _error(await emu.widget_post("/guest", "link_nope"), 401, "INVALID_TOKEN")
    await _error(await emu.http.post("/connect/widget/guest", json={}), 401, "INVALID_TOKEN")
    link = (await emu.link_token())["link_token"]
    await emu.widget_sign_in(link)
    await emu.advance_clock(30 * 60 + 1)
    for path in ("/guest", "/otp/request", "/consent"):
        await _error(await emu.widget_post(path, link, {"email": "a@b.test"}), 401, "TOKEN_EXPIRED")


async def test_widget_bodies_must_be_json_objects(emu: Driver) -> None:
    link = (await emu.link_token())["link_token"]
    response = await emu.http.post(
        "/connect/widget/otp/request",
        content=b"[1]",
        headers={"X-LINK-TOKEN": link, "Content-Type": "application/json"},
    )
    await _error(response, 400, "VALIDATION_ERROR")
