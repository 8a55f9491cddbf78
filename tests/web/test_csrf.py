from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.support.stack import Stack


async def test_session_and_logout_require_the_csrf_header(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        r = await client.get(f"{stack.url}/auth/session")
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
        r = await client.post(f"{stack.url}/auth/logout")
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
        r = await client.get(f"{stack.url}/api/v1/userinfo")
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
        r = await client.get(f"{stack.url}/auth/session", headers={"X-CSRF": "yes"})
        assert r.status_code == 403
        # Still signed in: the refused logout changed nothing.
        assert (await client.get(f"{stack.url}/auth/session", headers={"X-CSRF": "1"})).status_code == 200


async def test_foreign_origin_cannot_log_out(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        r = await client.post(f"{stack.url}/auth/logout", headers={"X-CSRF": "1", "Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed"
        assert (await client.get(f"{stack.url}/auth/session", headers={"X-CSRF": "1"})).status_code == 200
        ok = await client.post(f"{stack.url}/auth/logout", headers={"X-CSRF": "1", "Origin": stack.url})
        assert ok.status_code == 200


async def test_navigation_logout_needs_the_session_sid(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        info = (await client.get(f"{stack.url}/auth/session", headers={"X-CSRF": "1"})).json()
        bad = await client.get(f"{stack.url}/auth/logout", params={"sid": "guessed"})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_logout_request"
        assert (await client.get(f"{stack.url}/auth/session", headers={"X-CSRF": "1"})).status_code == 200
        good = await client.get(stack.url + info["logout_url"])
        assert good.status_code == 302
        end = urlsplit(good.headers["location"])
        assert end.path.endswith("/oidc/session/end")
        assert parse_qs(end.query)["post_logout_redirect_uri"] == [f"{stack.url}/"]
        assert (await client.get(f"{stack.url}/auth/session", headers={"X-CSRF": "1"})).status_code == 401


async def test_no_cors_grant_for_foreign_preflights(stack: Stack) -> None:
    async with stack.client() as client:
        r = await client.options(
            f"{stack.url}/api/v1/integrations",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-csrf",
            },
        )
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers
