"""The `/_emulator` controls and mounting under a path prefix."""

from __future__ import annotations

import httpx2
from starlette.applications import Starlette
from starlette.routing import Mount

from bff_dev.emulator import create_emulator_app

from .conftest import CLIENT_ID, Driver, jwt_claims, make_config


async def test_stats_count_token_calls_by_grant_type_and_outcome(emu: Driver) -> None:
    tokens = await emu.login("guest")
    await emu.refresh(tokens["refresh_token"])
    await emu.refresh("bogus")
    code, _ = await emu.authorize("guest")
    await emu.exchange(code, "x" * 43)
    stats = (await emu.http.get("/_emulator/stats")).json()
    assert stats["token"] == {
        "authorization_code": {"success": 1, "invalid_grant": 1},
        "refresh_token": {"success": 1, "invalid_grant": 1},
    }
    assert stats["refresh_token_reuse"] == 0 and stats["revocations"] == 0


async def test_config_validation_changes_nothing_on_error(emu: Driver) -> None:
    before = (await emu.http.get("/_emulator/config")).json()
    for body in (
        {"access_token_ttl": "soon"},
        {"nonsense": 1},
        {"token_failure": "boom"},
        {"access_token_ttl": 5, "data_api_failure": {"status": 429, "bogus": 1}},
        {"rotate_refresh_tokens": "yes"},
        {"workspace_limit": {"client_id": "nobody", "transaction_limit": 5}},
    ):
        response = await emu.http.post("/_emulator/config", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert (await emu.http.get("/_emulator/config")).json() == before


async def test_reset_restores_defaults_and_keeps_keys(emu: Driver) -> None:
    kid = (await emu.http.get("/oidc/jwks")).json()["keys"][0]["kid"]
    tokens = await emu.issue("guest")
    await emu.configure(access_token_ttl=5, token_failure="unavailable")
    await emu.patch_limit("cgrant_guest_demo", {"transactionLimit": 5})
    reset = await emu.http.post("/_emulator/reset")
    assert reset.status_code == 200 and reset.json()["published_kids"] == [kid]
    config = (await emu.http.get("/_emulator/config")).json()
    assert config["access_token_ttl"] == 86400 and config["token_failure"] is None
    assert (await emu.introspect(tokens["access_token"]))["active"] is False  # tokens are gone
    assert (await emu.http.get("/_emulator/stats")).json()["introspections"] == 1
    fresh = await emu.issue("guest")
    info = (await emu.data("/v1/userinfo", fresh["access_token"])).json()["userInfo"]
    assert info["transaction_limit"] == 100_000
    new_keys = await emu.http.post("/_emulator/reset", json={"keys": True})
    assert new_keys.json()["published_kids"] != [kid]


async def test_issue_tokens(emu: Driver) -> None:
    tokens = await emu.issue("guest2", scope="openid integrations:read", access_token_ttl=120)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 120
    assert tokens["scope"] == "openid integrations:read offline_access"
    assert tokens["refresh_token"]
    assert jwt_claims(tokens["id_token"])["sub"] == "anon_2b8e4d10"
    assert (await emu.refresh(tokens["refresh_token"])).status_code == 200
    bad = await emu.http.post("/_emulator/issue-tokens", json={"username": "nobody"})
    assert bad.status_code == 400
    bad_client = await emu.http.post("/_emulator/issue-tokens", json={"username": "guest", "client_id": "x"})
    assert bad_client.status_code == 400


async def test_expire_access_tokens_forces_a_refresh(emu: Driver) -> None:
    tokens = await emu.issue("guest")
    assert (await emu.data("/v1/integrations", tokens["access_token"])).status_code == 200
    assert (await emu.http.post("/_emulator/expire-access-tokens")).json() == {"expired": 1}
    assert (await emu.data("/v1/integrations", tokens["access_token"])).status_code == 401
    assert (await emu.introspect(tokens["access_token"]))["active"] is False
    new = (await emu.refresh(tokens["refresh_token"])).json()
    assert (await emu.data("/v1/integrations", new["access_token"])).status_code == 200


async def test_state_overview(emu: Driver) -> None:
    tokens = await emu.issue("guest")
    await emu.refresh(tokens["refresh_token"])
    await emu.refresh(tokens["refresh_token"])
    state = (await emu.http.get("/_emulator/state")).json()
    guest = next(u for u in state["users"] if u["username"] == "guest")
    assert guest["account_type"] == "guest" and guest["transaction_limit"] == 100_000
    assert {g["grant_id"] for g in guest["grants"]} == {"cgrant_guest_demo", "cgrant_guest_demo_other_app"}
    [grant] = state["oidc_grants"]
    assert grant["revoked"] is True and "reuse" in grant["revoked_reason"]


async def test_index_lists_urls_and_users(emu: Driver) -> None:
    body = (await emu.http.get("/")).json()
    assert body["issuer"] == "http://emulator.test/oidc"
    assert {u["username"] for u in body["users"]} >= {"guest", "guest2", "linked", "admin"}


async def test_works_mounted_under_a_prefix() -> None:
    config = make_config()
    config.base_url = "http://localhost:8000/_kryptos"
    outer = Starlette(routes=[Mount("/_kryptos", app=create_emulator_app(config))])
    transport = httpx2.ASGITransport(app=outer)
    async with httpx2.AsyncClient(transport=transport, base_url="http://other-host.test") as http:
        emu = Driver(http, outer, None)  # type: ignore[arg-type]
        emu.http = http
        doc = (await http.get("/_kryptos/oidc/.well-known/openid-configuration")).json()
        assert doc["issuer"] == "http://localhost:8000/_kryptos/oidc"  # from base_url, not Host
        assert doc["token_endpoint"] == "http://localhost:8000/_kryptos/oidc/token"

        params, verifier = emu.auth_params(login_hint="guest")
        redirect = await http.get("/_kryptos/oidc/auth", params=params)
        location = httpx2.URL(redirect.headers["location"])
        assert location.params["iss"] == "http://localhost:8000/_kryptos/oidc"
        page = await http.get("/_kryptos/oidc/auth", params={**params, "login_hint": ""})
        assert 'action="http://localhost:8000/_kryptos/oidc/auth"' in page.text

        token = await http.post(
            "/_kryptos/oidc/token",
            data={"grant_type": "authorization_code", "code": location.params["code"],
                  "redirect_uri": params["redirect_uri"], "code_verifier": verifier,
                  "client_id": CLIENT_ID, "client_secret": "s3cret with spaces&symbols"},
        )  # fmt: skip
        access = token.json()["access_token"]
        assert jwt_claims(access)["iss"] == "http://localhost:8000/_kryptos/oidc"
        body = (
            await http.get("/_kryptos/api/v1/integrations", headers=emu.data_headers(access), params={"pageSize": 1})
        ).json()
        assert body["data"][0]["logoUrl"].startswith("http://localhost:8000/_kryptos/logos/")
        assert (await http.get("/_kryptos/logos/binance.svg")).status_code == 200
        log = (await http.get("/_kryptos/_emulator/requests")).json()["requests"]
        assert log[-1]["path"] == "/api/v1/integrations"
        assert log[-1]["full_path"] == "/_kryptos/api/v1/integrations"
