from __future__ import annotations

import asyncio

import pytest

from .conftest import Driver, jwt_claims


async def test_rotation_issues_new_tokens_each_time(emu: Driver) -> None:
    first = await emu.login("guest", nonce="n")
    response = await emu.refresh(first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    claims = jwt_claims(second["id_token"])
    assert claims["sub"] == "anon_7f3a9c21" and claims["sid"] == jwt_claims(first["id_token"])["sid"]
    assert "nonce" not in claims
    assert (await emu.introspect(first["refresh_token"]))["active"] is False  # rotated out
    assert (await emu.introspect(second["refresh_token"]))["active"] is True
    assert (await emu.introspect(first["access_token"]))["active"] is True  # rotation alone keeps it


async def test_reuse_of_rotated_out_token_revokes_the_whole_grant(emu: Driver) -> None:
    first = await emu.login("guest")
    second = (await emu.refresh(first["refresh_token"])).json()
    third = (await emu.refresh(second["refresh_token"])).json()

    reuse = await emu.refresh(first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert reuse.headers["cache-control"] == "no-store"

    # The newest refresh token and every access token of the grant are dead too (oidc-provider).
    assert (await emu.refresh(third["refresh_token"])).json()["error"] == "invalid_grant"
    for token in (first["access_token"], second["access_token"], third["access_token"], third["refresh_token"]):
        assert (await emu.introspect(token))["active"] is False
    assert (await emu.data("/v1/userinfo", third["access_token"])).status_code == 401
    stats = (await emu.http.get("/_emulator/stats")).json()
    assert stats["refresh_token_reuse"] == 1
    assert stats["token"]["refresh_token"] == {"success": 2, "invalid_grant": 2}


async def test_reuse_does_not_touch_other_grants(emu: Driver) -> None:
    mine = await emu.login("guest")
    other = await emu.login("guest")
    await emu.refresh(mine["refresh_token"])
    await emu.refresh(mine["refresh_token"])
    assert (await emu.refresh(other["refresh_token"])).status_code == 200


async def test_rotation_off_keeps_the_same_refresh_token(emu: Driver) -> None:
    await emu.configure(rotate_refresh_tokens=False)
    first = await emu.login("guest")
    for _ in range(3):
        response = await emu.refresh(first["refresh_token"])
        assert response.status_code == 200
        assert response.json()["refresh_token"] == first["refresh_token"]
    assert (await emu.http.get("/_emulator/stats")).json()["refresh_token_reuse"] == 0


async def test_expired_refresh_token(emu: Driver) -> None:
    await emu.configure(refresh_token_ttl=0)
    tokens = await emu.login("guest")
    response = await emu.refresh(tokens["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


async def test_refresh_token_bound_to_client_and_scope(emu: Driver) -> None:
    tokens = await emu.login("guest")
    wider = await emu.http.post(
        "/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid tax:read",
              "client_id": "bff-test", "client_secret": "s3cret with spaces&symbols"},
    )  # fmt: skip
    assert wider.json()["error"] == "invalid_scope"
    assert (await emu.refresh("not-a-token")).json()["error"] == "invalid_grant"


async def test_configured_access_token_ttl(emu: Driver) -> None:
    await emu.configure(access_token_ttl=60)
    tokens = await emu.login("guest")
    assert tokens["expires_in"] == 60
    issued = await emu.issue("guest", access_token_ttl=5)
    assert issued["expires_in"] == 5


async def test_token_delay_makes_the_provider_slow_without_changing_state(emu: Driver) -> None:
    tokens = await emu.issue("guest")
    await emu.configure(token_delay_seconds=30)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(emu.refresh(tokens["refresh_token"]), timeout=0.05)
    await emu.configure(token_delay_seconds=0)
    # The abandoned call never reached the state: the refresh token was not rotated out.
    assert (await emu.refresh(tokens["refresh_token"])).status_code == 200
