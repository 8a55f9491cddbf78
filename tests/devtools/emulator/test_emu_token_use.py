"""Revocation, introspection and userinfo."""

from __future__ import annotations

import pytest

from .conftest import BASE_URL, BASIC_CLIENT_ID, BASIC_SECRET, CLIENT_ID, CLIENT_SECRET, Driver

AUTH = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_revoking_either_token_revokes_the_grant(emu: Driver, kind: str) -> None:
    tokens = await emu.login("guest")
    other = await emu.login("guest")
    response = await emu.http.post("/oidc/token/revocation", data={"token": tokens[kind], **AUTH})
    assert response.status_code == 200
    assert (await emu.introspect(tokens["access_token"]))["active"] is False
    assert (await emu.introspect(tokens["refresh_token"]))["active"] is False
    assert (await emu.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await emu.introspect(other["access_token"]))["active"] is True
    assert (await emu.http.get("/_emulator/stats")).json()["revocations"] == 1


async def test_revocation_rules(emu: Driver) -> None:
    unknown = await emu.http.post("/oidc/token/revocation", data={"token": "nope", "token_type_hint": "x", **AUTH})
    assert unknown.status_code == 200
    missing = await emu.http.post("/oidc/token/revocation", data=AUTH)
    assert missing.json()["error"] == "invalid_request"
    bad_client = await emu.http.post("/oidc/token/revocation", data={"token": "x", "client_id": CLIENT_ID})
    assert bad_client.status_code == 401
    tokens = await emu.login("guest")
    foreign = await emu.http.post(
        "/oidc/token/revocation", data={"token": tokens["access_token"]}, auth=(BASIC_CLIENT_ID, BASIC_SECRET)
    )
    assert foreign.status_code == 400
    assert (await emu.introspect(tokens["access_token"]))["active"] is True


async def test_introspection_of_access_and_refresh_tokens(emu: Driver) -> None:
    tokens = await emu.login("admin")
    access = await emu.introspect(tokens["access_token"])
    assert access["active"] is True
    assert access["sub"] == "user_admin_ada" and access["client_id"] == CLIENT_ID
    assert access["scope"] == tokens["scope"] and access["token_type"] == "Bearer"
    assert access["iss"] == BASE_URL + "/oidc" and access["aud"] == BASE_URL + "/api"
    assert access["exp"] - access["iat"] == 86400
    assert access["workspaceId"] == "ws_ada_ops" and access["role"] == "admin"
    refresh = await emu.introspect(tokens["refresh_token"])
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    assert refresh["exp"] - refresh["iat"] == 30 * 86400 and refresh["sub"] == "user_admin_ada"
    assert await emu.introspect("garbage") == {"active": False}
    other_client = await emu.http.post(
        "/oidc/token/introspection", data={"token": tokens["access_token"]}, auth=(BASIC_CLIENT_ID, BASIC_SECRET)
    )
    assert other_client.json() == {"active": False}
    unauthenticated = await emu.http.post("/oidc/token/introspection", data={"token": tokens["access_token"]})
    assert unauthenticated.status_code == 401
    assert (await emu.http.get("/_emulator/stats")).json()["introspections"] == 4


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid", {"sub"}),
        ("openid profile", {"sub", "name", "preferred_username", "language", "updated_at"}),
        ("openid email", {"sub", "email", "email_verified"}),
        (
            "openid profile email",
            {"sub", "name", "preferred_username", "language", "updated_at", "email", "email_verified"},
        ),
    ],
)
async def test_userinfo_claims_per_scope(emu: Driver, scope: str, expected: set[str]) -> None:
    code, verifier = await emu.authorize("linked", scope=scope)
    tokens = (await emu.exchange(code, verifier)).json()
    response = await emu.http.get("/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == expected
    assert body["sub"] == "user_lena_5c1d9e"
    if "name" in body:
        assert body["name"] == "Lena Linked" and body["language"] == "sv"


async def test_userinfo_by_post_body(emu: Driver) -> None:
    tokens = await emu.issue("guest")
    response = await emu.http.post("/oidc/userinfo", data={"access_token": tokens["access_token"]})
    assert response.status_code == 200 and response.json()["sub"] == "anon_7f3a9c21"


async def test_userinfo_rejects_bad_expired_and_revoked_tokens(emu: Driver) -> None:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    for headers in ({}, bearer("garbage")):
        response = await emu.http.get("/oidc/userinfo", headers=headers)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    expiring = await emu.issue("guest")
    assert (await emu.http.post("/_emulator/expire-access-tokens")).json()["expired"] >= 1
    expired = await emu.http.get("/oidc/userinfo", headers=bearer(expiring["access_token"]))
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["www-authenticate"]

    revoked = await emu.issue("guest")
    await emu.http.post("/oidc/token/revocation", data={"token": revoked["refresh_token"], **AUTH})
    response = await emu.http.get("/oidc/userinfo", headers=bearer(revoked["access_token"]))
    assert response.status_code == 401
    assert (await emu.http.get("/_emulator/stats")).json()["userinfo"] == 4
