from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from .conftest import BASE_URL, CLIENT_ID, Driver, jwt_claims, jwt_header

ISSUER = BASE_URL + "/oidc"


@pytest.mark.parametrize("spelling", ["openid-configuration", "openid_configuration"])
async def test_discovery_both_spellings(emu: Driver, spelling: str) -> None:
    response = await emu.http.get(f"/oidc/.well-known/{spelling}")
    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == ISSUER
    assert doc["authorization_endpoint"] == ISSUER + "/auth"
    assert doc["token_endpoint"] == ISSUER + "/token"
    assert doc["userinfo_endpoint"] == ISSUER + "/userinfo"
    assert doc["jwks_uri"] == ISSUER + "/jwks"
    assert doc["revocation_endpoint"] == ISSUER + "/token/revocation"
    assert doc["introspection_endpoint"] == ISSUER + "/token/introspection"
    assert doc["end_session_endpoint"] == ISSUER + "/session/end"
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_post", "client_secret_basic"}
    assert "users:read" in doc["scopes_supported"] and "offline_access" in doc["scopes_supported"]
    assert len(doc["scopes_supported"]) == 12
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    assert "sid" in doc["claims_supported"] and doc["subject_types_supported"] == ["public"]


async def test_tokens_verify_against_published_jwks(emu: Driver) -> None:
    tokens = await emu.login("guest", nonce="n-1")
    keys = KeySet.import_key_set((await emu.http.get("/oidc/jwks")).json())
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    assert id_token.claims["aud"] == CLIENT_ID
    assert jwt_header(tokens["access_token"])["typ"] == "at+jwt"
    jwt.decode(tokens["access_token"], keys, algorithms=["RS256"])


async def test_rotation_keeps_old_key_published_unless_dropped(emu: Driver) -> None:
    before = (await emu.http.get("/oidc/jwks")).json()["keys"]
    assert len(before) == 1 and before[0]["kty"] == "RSA" and "d" not in before[0]
    old_kid = before[0]["kid"]
    old_token = (await emu.issue("guest"))["id_token"]

    rotated = (await emu.http.post("/_emulator/rotate-keys", json={})).json()
    kids = [k["kid"] for k in (await emu.http.get("/oidc/jwks")).json()["keys"]]
    assert rotated["kid"] != old_kid and kids == [old_kid, rotated["kid"]]
    new_token = (await emu.issue("guest"))["id_token"]
    assert jwt_header(new_token)["kid"] == rotated["kid"]

    dropped = (await emu.http.post("/_emulator/rotate-keys", json={"drop_old": True})).json()
    published = (await emu.http.get("/oidc/jwks")).json()
    assert [k["kid"] for k in published["keys"]] == [dropped["kid"]]
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(old_token, KeySet.import_key_set(published), algorithms=["RS256"])


async def test_access_token_claims(emu: Driver) -> None:
    tokens = await emu.login("guest")
    claims = jwt_claims(tokens["access_token"])
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "anon_7f3a9c21"
    assert claims["client_id"] == CLIENT_ID
    assert claims["aud"] == BASE_URL + "/api"
    assert claims["scope"] == tokens["scope"]
    assert claims["exp"] - claims["iat"] == 86400 == tokens["expires_in"]
    assert claims["jti"]
    assert claims["workspaceId"] == "ws_guest_7f3a9c21"
    assert claims["workspaceName"] == "Guest Demo"
    assert claims["workspaceType"] == "guest"
    assert claims["role"] == "owner"
