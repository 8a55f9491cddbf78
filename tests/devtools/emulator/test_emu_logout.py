"""RP-initiated logout and back-channel logout."""

from __future__ import annotations

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from .conftest import BACKCHANNEL_URI, BASE_URL, CLIENT_ID, POST_LOGOUT_URI, Driver, jwt_claims, jwt_header

EVENT = "http://schemas.openid.net/event/backchannel-logout"


async def test_end_session_redirects_to_registered_uri_with_state(emu: Driver) -> None:
    tokens = await emu.login("guest", scope="openid profile")
    sid = jwt_claims(tokens["id_token"])["sid"]
    params = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": POST_LOGOUT_URI, "state": "bye"}
    response = await emu.http.get("/oidc/session/end", params=params)
    assert response.status_code == 302
    assert response.headers["location"] == POST_LOGOUT_URI + "?state=bye"

    # Back-channel logout reached the relying party, signed and with the documented claims.
    assert len(emu.receiver.received) == 1
    received = emu.receiver.received[0]
    assert received["_content_type"] == "application/x-www-form-urlencoded"
    keys = KeySet.import_key_set((await emu.http.get("/oidc/jwks")).json())
    claims = jwt.decode(received["logout_token"], keys, algorithms=["RS256"]).claims
    assert jwt_header(received["logout_token"])["alg"] == "RS256"
    assert claims["iss"] == BASE_URL + "/oidc" and claims["aud"] == CLIENT_ID
    assert claims["sub"] == "anon_7f3a9c21" and claims["sid"] == sid
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims and claims["jti"]
    assert 0 < claims["exp"] - claims["iat"] <= 300

    deliveries = (await emu.http.get("/_emulator/deliveries")).json()["deliveries"]
    assert deliveries == [
        {"client_id": CLIENT_ID, "uri": BACKCHANNEL_URI, "sub": "anon_7f3a9c21", "sid": sid,
         "jti": claims["jti"], "status": 200, "error": None}
    ]  # fmt: skip
    # The grant lacked offline_access, so it ended with the session (oidc-provider).
    assert (await emu.introspect(tokens["access_token"]))["active"] is False


async def test_offline_grants_survive_logout(emu: Driver) -> None:
    tokens = await emu.login("guest")
    await emu.http.post("/oidc/session/end", data={"id_token_hint": tokens["id_token"]})
    assert (await emu.introspect(tokens["refresh_token"]))["active"] is True


async def test_end_session_without_redirect_shows_signed_out_page(emu: Driver) -> None:
    response = await emu.http.get("/oidc/session/end")
    assert response.status_code == 200 and "Signed out" in response.text
    assert emu.receiver.received == []  # no session named: nobody to notify


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": CLIENT_ID, "post_logout_redirect_uri": "http://evil.test/"},
        {"client_id": CLIENT_ID, "post_logout_redirect_uri": POST_LOGOUT_URI + "x"},
        {"post_logout_redirect_uri": POST_LOGOUT_URI},
        {"client_id": "unknown"},
        {"id_token_hint": "not-a-jwt"},
        {"client_id": "basic-only", "post_logout_redirect_uri": POST_LOGOUT_URI},
    ],
)
async def test_end_session_rejects_bad_requests(emu: Driver, params: dict[str, str]) -> None:
    response = await emu.http.get("/oidc/session/end", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_hint_must_match_client_id(emu: Driver) -> None:
    tokens = await emu.login("guest")
    response = await emu.http.get(
        "/oidc/session/end", params={"id_token_hint": tokens["id_token"], "client_id": "basic-only"}
    )
    assert response.status_code == 400


async def test_expired_hint_is_accepted_but_foreign_signatures_are_not(emu: Driver) -> None:
    await emu.configure(id_token_ttl=0)
    tokens = await emu.login("guest")
    await emu.http.post("/_emulator/rotate-keys", json={"drop_old": True})
    ok = await emu.http.get(
        "/oidc/session/end",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": POST_LOGOUT_URI},
    )
    assert ok.status_code == 302
    head, payload, _ = tokens["id_token"].split(".")
    forged = await emu.http.get("/oidc/session/end", params={"id_token_hint": f"{head}.{payload}.AAAA"})
    assert forged.status_code == 400


async def test_control_backchannel_logout_by_sub_and_sid(emu: Driver) -> None:
    tokens = await emu.issue("linked")
    sid = jwt_claims(tokens["id_token"])["sid"]
    by_sid = await emu.http.post("/_emulator/backchannel-logout", json={"sid": sid})
    assert by_sid.status_code == 200
    [delivery] = by_sid.json()["deliveries"]
    assert delivery["status"] == 200 and delivery["sid"] == sid and delivery["sub"] == "user_lena_5c1d9e"

    emu.receiver.status = 400
    by_sub = await emu.http.post("/_emulator/backchannel-logout", json={"sub": "user_lena_5c1d9e"})
    [delivery] = by_sub.json()["deliveries"]
    assert delivery["status"] == 400 and delivery["sid"] is None
    claims = jwt_claims(emu.receiver.received[-1]["logout_token"])
    assert claims["sub"] == "user_lena_5c1d9e" and "sid" not in claims
    assert (await emu.http.get("/_emulator/stats")).json()["backchannel_logouts"] == 2
    # Every logout token is unique.
    jtis = {jwt_claims(r["logout_token"])["jti"] for r in emu.receiver.received}
    assert len(jtis) == 2


async def test_control_backchannel_logout_errors(emu: Driver) -> None:
    assert (await emu.http.post("/_emulator/backchannel-logout", json={})).status_code == 400
    assert (await emu.http.post("/_emulator/backchannel-logout", json={"sid": "nope"})).status_code == 404
    assert (await emu.http.post("/_emulator/backchannel-logout", json={"sub": "nope"})).status_code == 404
    only_basic = await emu.http.post(
        "/_emulator/backchannel-logout", json={"sub": "anon_7f3a9c21", "client_id": "basic-only"}
    )
    assert only_basic.json() == {"deliveries": []}  # that client has no back-channel URI


async def test_unreachable_receiver_is_recorded(emu: Driver) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    emu.app.state.emulator.http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    response = await emu.http.post("/_emulator/backchannel-logout", json={"sub": "anon_7f3a9c21"})
    [delivery] = response.json()["deliveries"]
    assert delivery["status"] is None and "ConnectError" in delivery["error"]
    await emu.app.state.emulator.http_client.aclose()
