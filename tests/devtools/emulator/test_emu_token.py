from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest

from .conftest import (
    BASE_URL,
    BASIC_CLIENT_ID,
    BASIC_SECRET,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    Driver,
    jwt_claims,
)


def _basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


async def test_code_exchange_returns_documented_fields(emu: Driver) -> None:
    code, verifier = await emu.authorize("guest", nonce="nonce-42")
    response = await emu.exchange(code, verifier)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    assert body["scope"] == "openid profile email offline_access integrations:read users:read"
    assert body["refresh_token"] and "." not in body["refresh_token"]  # opaque
    claims = jwt_claims(body["id_token"])
    assert claims["iss"] == BASE_URL + "/oidc" and claims["aud"] == CLIENT_ID
    assert claims["sub"] == "anon_7f3a9c21" and claims["nonce"] == "nonce-42"
    assert claims["sid"] and claims["auth_time"] <= claims["iat"] < claims["exp"]
    assert claims["name"] == "Guest Demo" and claims["preferred_username"] == "guest"
    assert claims["email"] == "guest.demo@guest.kryptos.io" and claims["email_verified"] is True


async def test_id_token_claims_follow_scopes(emu: Driver) -> None:
    code, verifier = await emu.authorize("linked", scope="openid")
    claims = jwt_claims((await emu.exchange(code, verifier)).json()["id_token"])
    assert claims["sub"] == "user_lena_5c1d9e"
    assert "name" not in claims and "email" not in claims and "nonce" not in claims


@pytest.mark.parametrize("verifier", [None, "x" * 42, "a" * 43, "é" * 50])
async def test_pkce_is_verified(emu: Driver, verifier: str | None) -> None:
    code, _ = await emu.authorize("guest")
    extra = {"code_verifier": verifier} if verifier is not None else {"code_verifier": ""}
    response = await emu.exchange(code, "unused", **extra)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_code_is_single_use_and_replay_revokes_tokens(emu: Driver) -> None:
    code, verifier = await emu.authorize("guest")
    first = (await emu.exchange(code, verifier)).json()
    assert (await emu.introspect(first["access_token"]))["active"] is True

    replay = await emu.exchange(code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await emu.introspect(first["access_token"]))["active"] is False
    assert (await emu.introspect(first["refresh_token"]))["active"] is False
    assert (await emu.refresh(first["refresh_token"])).status_code == 400
    assert (await emu.http.get("/_emulator/stats")).json()["code_replay"] == 1


async def test_code_is_bound_to_redirect_uri_and_client(emu: Driver) -> None:
    code, verifier = await emu.authorize("guest")
    wrong_uri = await emu.exchange(code, verifier, redirect_uri=REDIRECT_URI + "?x=1")
    assert wrong_uri.json()["error"] == "invalid_grant"
    other_client = await emu.http.post(
        "/oidc/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
              "code_verifier": verifier},
        headers={"Authorization": _basic(BASIC_CLIENT_ID, BASIC_SECRET)},
    )  # fmt: skip
    assert other_client.json()["error"] == "invalid_grant"
    assert (await emu.exchange(code, verifier)).status_code == 200  # failed attempts did not consume it


async def test_expired_code(emu: Driver) -> None:
    await emu.configure(code_ttl=0)
    code, verifier = await emu.authorize("guest")
    response = await emu.exchange(code, verifier)
    assert response.json()["error"] == "invalid_grant"


async def test_client_secret_basic_is_form_urlencoded(emu: Driver) -> None:
    code, verifier = await emu.authorize("guest")
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    response = await emu.http.post(
        "/oidc/token", data=data, headers={"Authorization": _basic(CLIENT_ID, CLIENT_SECRET)}
    )
    assert response.status_code == 200, response.text
    # The raw secret (not form-encoded) contains a space and '&': it must not match.
    code, verifier = await emu.authorize("guest")
    raw = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET.replace(' ', '%')}".encode()).decode()
    data.update(code=code, code_verifier=verifier)
    rejected = await emu.http.post("/oidc/token", data=data, headers={"Authorization": "Basic " + raw})
    assert rejected.status_code == 401


async def test_auth_method_not_registered_is_invalid_client(emu: Driver) -> None:
    response = await emu.http.post(
        "/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": BASIC_CLIENT_ID,
              "client_secret": BASIC_SECRET},
    )  # fmt: skip
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ({"client_id": CLIENT_ID, "client_secret": "wrong"}, {}, 401, "invalid_client"),
        ({"client_id": "nobody", "client_secret": "x"}, {}, 401, "invalid_client"),
        ({"client_id": CLIENT_ID}, {}, 401, "invalid_client"),
        ({"client_secret": CLIENT_SECRET}, {"Authorization": _basic(CLIENT_ID, CLIENT_SECRET)}, 400, "invalid_request"),
        ({}, {"Authorization": _basic(CLIENT_ID, "wrong")}, 401, "invalid_client"),
        ({}, {"Authorization": "Basic !!!"}, 401, "invalid_client"),
    ],
)
async def test_client_authentication_failures(
    emu: Driver, data: dict[str, str], headers: dict[str, str], status: int, error: str
) -> None:
    response = await emu.http.post(
        "/oidc/token", data={"grant_type": "refresh_token", "refresh_token": "x", **data}, headers=headers
    )
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]


async def test_grant_type_errors(emu: Driver) -> None:
    auth = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    unsupported = await emu.http.post("/oidc/token", data={"grant_type": "client_credentials", **auth})
    assert unsupported.status_code == 400 and unsupported.json()["error"] == "unsupported_grant_type"
    missing = await emu.http.post("/oidc/token", data=auth)
    assert missing.json()["error"] == "invalid_request"
    stats = (await emu.http.get("/_emulator/stats")).json()
    assert stats["token"]["other"]["unsupported_grant_type"] == 1


async def test_injected_token_failures(emu: Driver) -> None:
    tokens = await emu.issue("guest")
    await emu.configure(token_failure="invalid_grant")
    assert (await emu.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    await emu.configure(token_failure="unavailable")
    assert (await emu.refresh(tokens["refresh_token"])).status_code == 503
    await emu.configure(token_failure=None)
    assert (await emu.refresh(tokens["refresh_token"])).status_code == 200
