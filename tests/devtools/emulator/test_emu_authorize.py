from __future__ import annotations

import httpx2
import pytest

from bff_dev.emulator import EmulatorConfig, EmulatorUser, create_emulator_app

from .conftest import BASE_URL, REDIRECT_URI, Driver, make_config

ISSUER = BASE_URL + "/oidc"


def _query(response: httpx2.Response) -> httpx2.QueryParams:
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    return httpx2.URL(location).params


async def test_login_hint_auto_approves_with_iss_and_state(emu: Driver) -> None:
    params, _ = emu.auth_params(login_hint="linked")
    response = await emu.http.get("/oidc/auth", params=params)
    assert response.status_code == 302
    query = _query(response)
    assert query["iss"] == ISSUER and query["state"] == "st-123" and len(query["code"]) >= 32
    assert response.headers["cache-control"] == "no-store"


async def test_chooser_page_lists_users_and_carries_the_request(emu: Driver) -> None:
    params, _ = emu.auth_params(login_hint="nobody")
    response = await emu.http.get("/oidc/auth", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for name in ("Guest Demo", "Lena Linked", "Ada Admin", "Gustav Guest"):
        assert name in page
    assert 'class="badge guest">Guest<' in page and 'class="badge linked">Linked<' in page
    assert f'action="{ISSUER}/auth"' in page
    assert f'name="code_challenge" value="{params["code_challenge"]}"' in page
    assert 'name="deny"' in page
    assert "<link" not in page and "<script" not in page  # self-contained, no external resources


async def test_page_escapes_everything() -> None:
    evil = EmulatorUser(
        username="x<y",
        sub="sub-1",
        name='<script>alert("n")</script>',
        email="a@b.c",
        account_type="guest",
        workspace_id="w",
        workspace_name="w",
        workspace_type="guest",
    )
    config: EmulatorConfig = make_config(users=[evil])
    app = create_emulator_app(config)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE_URL) as http:
        driver = Driver(http, app, None)  # type: ignore[arg-type]
        params, _ = driver.auth_params(state='"><script>alert(1)</script>')
        page = (await http.get("/oidc/auth", params=params)).text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;n&quot;)&lt;/script&gt;" in page
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert 'value="x&lt;y"' in page


async def test_form_post_approves_with_303(emu: Driver) -> None:
    params, verifier = emu.auth_params(nonce="abc")
    response = await emu.http.post("/oidc/auth", data={**params, "username": "admin"})
    assert response.status_code == 303
    query = _query(response)
    assert query["iss"] == ISSUER and query["state"] == "st-123"
    token = await emu.exchange(query["code"], verifier)
    assert token.status_code == 200


async def test_form_post_deny_is_access_denied(emu: Driver) -> None:
    params, _ = emu.auth_params()
    response = await emu.http.post("/oidc/auth", data={**params, "deny": "1"})
    assert response.status_code == 303
    query = _query(response)
    assert query["error"] == "access_denied" and query["state"] == "st-123" and query["iss"] == ISSUER
    assert "code" not in query


async def test_form_post_is_revalidated(emu: Driver) -> None:
    params, _ = emu.auth_params()
    tampered = await emu.http.post(
        "/oidc/auth", data={**params, "redirect_uri": "http://evil.test/cb", "username": "guest"}
    )
    assert tampered.status_code == 400 and "location" not in tampered.headers
    no_pkce = await emu.http.post("/oidc/auth", data={**params, "code_challenge_method": "plain", "username": "guest"})
    assert _query(no_pkce)["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "profile email"}, "invalid_request"),
        ({"prompt": "none"}, "login_required"),
    ],
)
async def test_redirectable_errors(emu: Driver, change: dict[str, str | None], error: str) -> None:
    params, _ = emu.auth_params(login_hint="guest")
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    response = await emu.http.get("/oidc/auth", params=params)
    assert response.status_code == 302
    query = _query(response)
    assert query["error"] == error
    assert query["error_description"]
    assert query["state"] == "st-123" and query["iss"] == ISSUER
    assert "code" not in query


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "unknown"},
        {"redirect_uri": "http://evil.test/cb"},
        {"redirect_uri": REDIRECT_URI + "/"},  # exact match only
    ],
)
async def test_unknown_client_or_redirect_uri_never_redirects(emu: Driver, change: dict[str, str]) -> None:
    params, _ = emu.auth_params(login_hint="guest")
    params.update(change)
    response = await emu.http.get("/oidc/auth", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


async def test_unknown_scopes_are_dropped_from_the_grant(emu: Driver) -> None:
    code, verifier = await emu.authorize("guest", scope="openid email wallets:write")
    body = (await emu.exchange(code, verifier)).json()
    assert body["scope"] == "openid email"
    assert "refresh_token" not in body  # no offline_access, no refresh token
