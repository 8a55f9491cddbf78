"""The Connect API's widget-flow calls: link tokens, the public-token exchange, check-session, revocation, the
grant list, and `cat_` tokens on the data API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from .conftest import ALL_SCOPES, BASIC_CLIENT_ID, BASIC_SECRET, CLIENT_ID, CLIENT_SECRET, Driver

UNAUTHORIZED = {"error": "unauthorized", "message": "Invalid or missing authentication token", "details": []}
NO_SESSION = {"success": True, "data": {"has_valid_session": False, "reason": "token_expired"}}


def _seconds(iso: str) -> float:
    assert iso.endswith("Z"), iso
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _grant_ids(emu: Driver) -> set[str]:
    response = await emu.http.get("/connect/token/grants", headers=emu.connect_headers())
    assert response.status_code == 200
    return {g["grant_id"] for g in response.json()["data"]["grants"]}


async def test_link_token_without_a_stored_token(emu: Driver) -> None:
    before = time.time()
    response = await emu.connect_post("/link-token", {"scopes": ALL_SCOPES})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert set(body["data"]) == {"link_token", "expires_at"}  # no has_existing_grant, user or workspace
    assert body["data"]["link_token"].startswith("link_")
    assert before + 1800 - 2 <= _seconds(body["data"]["expires_at"]) <= time.time() + 1800 + 1  # 30 minutes


async def test_link_token_with_a_valid_stored_token_carries_the_existing_grant(emu: Driver) -> None:
    connected = await emu.connect()
    data = await emu.link_token(access_token=connected["access_token"])
    assert data["has_existing_grant"] is True
    assert data["workspace_id"] == connected["workspace_id"]
    assert data["user_id"].startswith("anon_")
    assert data["link_token"].startswith("link_") and data["expires_at"].endswith("Z")


@pytest.mark.parametrize("stored", ["revoked", "other_client", "garbage", "not_a_string"])
async def test_an_invalid_stored_token_silently_yields_a_plain_link_token(emu: Driver, stored: str) -> None:
    connected = await emu.connect()
    token: Any = connected["access_token"]
    if stored == "revoked":
        revoked = await emu.connect_post("/token/revoke", {"grant_id": connected["grant_id"]})
        assert revoked.status_code == 200
    elif stored == "garbage":
        token = "cat_nope"
    elif stored == "not_a_string":
        token = 42
    client = (BASIC_CLIENT_ID, BASIC_SECRET) if stored == "other_client" else (CLIENT_ID, CLIENT_SECRET)
    response = await emu.connect_post("/link-token", {"scopes": ALL_SCOPES, "access_token": token}, *client)
    assert response.status_code == 200
    assert set(response.json()["data"]) == {"link_token", "expires_at"}


@pytest.mark.parametrize("scopes", ["openid nonsense:read", "", "   ", None, ["openid"]])
async def test_link_token_scopes_are_checked(emu: Driver, scopes: Any) -> None:
    response = await emu.connect_post("/link-token", {"scopes": scopes})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["code"] == "INVALID_SCOPE" and body["error"]


async def test_client_credentials_in_headers_or_in_the_body(emu: Driver) -> None:
    in_body = await emu.http.post(
        "/connect/link-token", json={"scopes": "openid", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    )
    assert in_body.status_code == 200 and in_body.json()["data"]["link_token"].startswith("link_")
    wrong_body = await emu.http.post(
        "/connect/link-token", json={"scopes": "openid", "client_id": CLIENT_ID, "client_secret": "wrong"}
    )
    # Headers win when sent: a wrong header is not rescued by a right body.
    wrong_header = await emu.http.post(
        "/connect/link-token",
        json={"scopes": "openid", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        headers=emu.connect_headers(secret="wrong"),
    )
    nothing = await emu.http.post("/connect/link-token", json={"scopes": "openid"})
    for response in (wrong_body, wrong_header, nothing):
        assert response.status_code == 401
        assert response.json() == {"success": False, "error": "Invalid client credentials", "code": "INVALID_CLIENT"}


async def test_exchange_returns_a_cat_token_and_a_grant(emu: Driver) -> None:
    public = await emu.public_token(scopes="openid profile integrations:read users:read")
    response = await emu.connect_post("/token/exchange", {"public_token": public})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {"access_token", "grant_id", "token_type", "expires_in", "scope", "workspace_id"}
    assert data["access_token"].startswith("cat_") and data["grant_id"].startswith("cgrant_")
    assert data["token_type"] == "Bearer" and data["expires_in"] == 473_040_000
    assert data["scope"] == "openid profile integrations:read users:read"
    assert data["workspace_id"].startswith("ws_guest_")


async def test_public_tokens_are_single_use(emu: Driver) -> None:
    public = await emu.public_token()
    assert (await emu.connect_post("/token/exchange", {"public_token": public})).status_code == 200
    replay = await emu.connect_post("/token/exchange", {"public_token": public})
    assert replay.status_code == 400
    assert replay.json() == {
        "success": False,
        "error": "Public token has already been used",
        "code": "TOKEN_ALREADY_USED",
    }


async def test_public_tokens_expire_after_30_minutes(emu: Driver) -> None:
    fresh, stale = await emu.public_token(), await emu.public_token()
    await emu.advance_clock(29 * 60)
    assert (await emu.connect_post("/token/exchange", {"public_token": fresh})).status_code == 200
    await emu.advance_clock(61)
    expired = await emu.connect_post("/token/exchange", {"public_token": stale})
    assert expired.status_code == 400 and expired.json()["code"] == "TOKEN_EXPIRED"


async def test_unknown_and_foreign_public_tokens_are_invalid(emu: Driver) -> None:
    unknown = await emu.connect_post("/token/exchange", {"public_token": "public_nope"})
    assert unknown.status_code == 400 and unknown.json()["code"] == "INVALID_TOKEN"
    public = await emu.public_token()  # minted for CLIENT_ID
    foreign = await emu.connect_post("/token/exchange", {"public_token": public}, BASIC_CLIENT_ID, BASIC_SECRET)
    assert foreign.status_code == 400 and foreign.json()["code"] == "INVALID_TOKEN"
    # Another client's attempt does not use the token up.
    assert (await emu.connect_post("/token/exchange", {"public_token": public})).status_code == 200
    missing = await emu.connect_post("/token/exchange", {})
    assert missing.status_code == 400 and missing.json()["code"] == "VALIDATION_ERROR"


async def test_check_session_of_a_valid_token(emu: Driver) -> None:
    connected = await emu.connect()
    response = await emu.connect_post("/link-token/check-session", {"access_token": connected["access_token"]})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {
        "has_valid_session": True,
        "user_id": data["user_id"],
        "workspace_id": connected["workspace_id"],
        "workspace_name": "Guest workspace",
        "granted_scopes": ALL_SCOPES,
        "grant_id": connected["grant_id"],
    }
    assert data["user_id"].startswith("anon_")


async def test_check_session_of_invalid_tokens(emu: Driver) -> None:
    connected = await emu.connect()
    other_client = await emu.connect_post(
        "/link-token/check-session", {"access_token": connected["access_token"]}, BASIC_CLIENT_ID, BASIC_SECRET
    )
    assert other_client.json() == NO_SESSION
    unknown = await emu.connect_post("/link-token/check-session", {"access_token": "cat_unknown"})
    assert unknown.status_code == 200 and unknown.json() == NO_SESSION
    await emu.connect_post("/token/revoke", {"grant_id": connected["grant_id"]})
    revoked = await emu.connect_post("/link-token/check-session", {"access_token": connected["access_token"]})
    assert revoked.json() == NO_SESSION


async def test_cat_tokens_authenticate_data_calls_like_oidc_tokens(emu: Driver) -> None:
    connected = await emu.connect(scopes="openid profile users:read integrations:read")
    info = await emu.data("/v1/userinfo", connected["access_token"])
    assert info.status_code == 200
    body = info.json()
    assert body["userInfo"]["sub"].startswith("anon_")
    assert body["scopes"] == ["openid", "profile", "users:read", "integrations:read"]
    # The client headers must be the grant's client's.
    foreign = await emu.http.get(
        "/api/v1/userinfo",
        headers={**emu.data_headers(connected["access_token"]), "X-Client-Id": BASIC_CLIENT_ID,
                 "X-Client-Secret": BASIC_SECRET},
    )  # fmt: skip
    assert foreign.status_code == 401 and foreign.json() == UNAUTHORIZED
    narrow = await emu.connect(scopes="openid users:read")
    assert (await emu.data("/v1/integrations", narrow["access_token"])).status_code == 403


async def test_revoke_kills_the_token_at_once_and_drops_the_grant(emu: Driver) -> None:
    connected = await emu.connect()
    assert (await emu.data("/v1/integrations", connected["access_token"])).status_code == 200
    assert connected["grant_id"] in await _grant_ids(emu)
    response = await emu.connect_post("/token/revoke", {"grant_id": connected["grant_id"]})
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Grant revoked successfully"}
    dead = await emu.data("/v1/integrations", connected["access_token"])
    assert dead.status_code == 401 and dead.json() == UNAUTHORIZED
    assert connected["grant_id"] not in await _grant_ids(emu)
    again = await emu.connect_post("/token/revoke", {"grant_id": connected["grant_id"]})
    assert again.status_code == 404 and again.json()["code"] == "GRANT_NOT_FOUND"
    patch = await emu.patch_limit(connected["grant_id"], {"transactionLimit": 5})
    assert patch.status_code == 404 and patch.json()["code"] == "GRANT_NOT_FOUND"


async def test_revoke_errors(emu: Driver) -> None:
    unknown = await emu.connect_post("/token/revoke", {"grant_id": "cgrant_nope"})
    assert unknown.status_code == 404
    assert unknown.json() == {"success": False, "error": "Grant not found", "code": "GRANT_NOT_FOUND"}
    foreign = await emu.connect_post("/token/revoke", {"grant_id": "cgrant_guest_demo_other_app"})
    assert foreign.status_code == 403 and foreign.json()["code"] == "ACCESS_DENIED"
    unauthenticated = await emu.connect_post("/token/revoke", {"grant_id": "cgrant_guest_demo"}, secret="wrong")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["code"] == "INVALID_CLIENT"
    assert "cgrant_guest_demo" in await _grant_ids(emu)


async def test_grants_list_seeded_and_exchanged_grants(emu: Driver) -> None:
    connected = await emu.connect()
    response = await emu.http.get("/connect/token/grants", headers=emu.connect_headers())
    body = response.json()["data"]
    grants = {g["grant_id"]: g for g in body["grants"]}
    assert body["count"] == len(grants) == 5
    assert set(grants) == {
        "cgrant_guest_demo", "cgrant_guest_gustav", "cgrant_linked_lena", "cgrant_admin_ada", connected["grant_id"],
    }  # fmt: skip
    mine = grants[connected["grant_id"]]
    assert set(mine) == {"grant_id", "workspace_id", "scopes", "created_at", "expires_at"}
    assert mine["workspace_id"] == connected["workspace_id"] and mine["scopes"] == ALL_SCOPES
    created, expires = (datetime.fromisoformat(mine[k].replace("Z", "+00:00")) for k in ("created_at", "expires_at"))
    assert abs(created.timestamp() - time.time()) < 5 and created.tzinfo == UTC
    assert expires == created.replace(year=created.year + 15)  # 15 years, like the seeded grants
    other = await emu.http.get("/connect/token/grants", headers=emu.connect_headers(BASIC_CLIENT_ID, BASIC_SECRET))
    assert other.json()["data"]["count"] == 0


async def test_state_overview_shows_widget_users_and_revoked_grants(emu: Driver) -> None:
    connected = await emu.connect()
    await emu.connect_post("/token/revoke", {"grant_id": connected["grant_id"]})
    state = (await emu.http.get("/_emulator/state")).json()
    [made] = [u for u in state["users"] if u["created_in_widget"]]
    assert made["account_type"] == "guest" and made["workspace_id"] == connected["workspace_id"]
    assert made["transaction_limit"] == 1_000
    [grant] = made["grants"]
    assert grant["grant_id"] == connected["grant_id"] and grant["revoked"] is True
    await emu.http.post("/_emulator/reset")
    after = (await emu.http.get("/_emulator/state")).json()
    assert not any(u["created_in_widget"] for u in after["users"])


async def test_connect_calls_are_recorded_and_counted(emu: Driver) -> None:
    await emu.http.delete("/_emulator/requests")
    before = (await emu.http.get("/_emulator/stats")).json()["connect_api"]
    await emu.connect()
    log = (await emu.http.get("/_emulator/requests")).json()["requests"]
    assert [entry["path"] for entry in log] == [
        "/connect/link-token", "/connect/widget/guest", "/connect/widget/consent", "/connect/token/exchange",
    ]  # fmt: skip
    assert log[0]["headers"]["x-client-id"] == CLIENT_ID and "x-link-token" in log[1]["headers"]
    assert (await emu.http.get("/_emulator/stats")).json()["connect_api"] == before + 4


async def test_advance_clock_validation(emu: Driver) -> None:
    for body in ({}, {"seconds": "soon"}, {"seconds": -1}):
        assert (await emu.http.post("/_emulator/advance-clock", json=body)).status_code == 400
