"""Refresh under a misbehaving provider: late answers, non-fatal errors.

A refresh token that the provider rotated but bff forgot is a dead grant: the next refresh presents the
rotated-out token and the provider revokes everything (reuse detection, as node oidc-provider and the
emulator do). So a refresh, once sent, runs to completion however late the answer; and only the OAuth
errors that really mean "this grant is gone" end a session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from tests.adversarial.conftest import Peek, cookie_headers
from tests.support.clock import Clock
from tests.support.processes import Cluster, sign_in
from tests.support.stack import Stack


async def _expire_access_token(view: Peek, cookie: str) -> None:
    """Jump the session's access token past expiry (no sleeping)."""
    session_id = view.session_id(cookie)
    session = await view.manager.load(session_id, cached=False)
    assert session is not None
    past = time.time() - 1
    assert await view.manager.save(session_id, session.with_changes(access_expires_at=past, access_refresh_at=past))


def _refresh_calls(stats: dict[str, Any]) -> dict[str, int]:
    return dict(stats["token"].get("refresh_token", {}))


@pytest.mark.slow
async def test_a_refresh_answered_after_every_caller_gave_up_is_kept(
    replicas: Callable[..., Cluster], peek: Callable[[Cluster], Peek]
) -> None:
    # Callers wait 1 s; the provider answers after 3 s (and rotates the refresh token when it does).
    cluster = replicas(1, BFF_IDP_TIMEOUT="1", BFF_REFRESH_WAIT="1")
    replica = cluster.replicas[0]
    view = peek(cluster)
    async with httpx2.AsyncClient(timeout=10) as browser, httpx2.AsyncClient(timeout=10) as api:
        cookie = await sign_in(browser, replica)
        await _expire_access_token(view, cookie)
        before = await view.manager.load(view.session_id(cookie), cached=False)
        assert before is not None
        await cluster.control("POST", "config", json={"token_delay_seconds": 3})
        started = time.monotonic()
        answered = await api.get(f"{replica.url}/api/v1/userinfo", headers=cookie_headers(cookie))
        waited = time.monotonic() - started
        assert answered.status_code == 503, answered.text
        assert answered.json()["code"] == "refresh_in_progress"
        assert int(answered.headers["retry-after"]) >= 1
        assert waited < 2.0
        # The provider finishes the rotation ~3 s after the call; bff must still be listening, and save it.
        for _ in range(80):
            if _refresh_calls(await cluster.control("GET", "stats")).get("success"):
                break
            await asyncio.sleep(0.1)
        await cluster.control("POST", "config", json={"token_delay_seconds": 0})
        for _ in range(50):
            after = await view.manager.load(view.session_id(cookie), cached=False)
            if after is not None and after.refresh_token != before.refresh_token:
                break
            await asyncio.sleep(0.1)
        assert after is not None and after.refresh_token != before.refresh_token
        again = await api.get(f"{replica.url}/api/v1/userinfo", headers=cookie_headers(cookie))
        assert again.status_code == 200, again.text
    stats = await cluster.control("GET", "stats")
    assert _refresh_calls(stats) == {"success": 1}  # one redeem, and no refresh token was ever sent twice
    assert stats["refresh_token_reuse"] == 0
    assert '"level": "error"' not in replica.output()


@pytest.mark.slow
async def test_a_late_refresh_failure_nobody_waits_for_logs_no_error(
    replicas: Callable[..., Cluster], peek: Callable[[Cluster], Peek]
) -> None:
    cluster = replicas(1, BFF_REFRESH_WAIT="0.5")
    replica = cluster.replicas[0]
    view = peek(cluster)
    async with httpx2.AsyncClient(timeout=10) as browser, httpx2.AsyncClient(timeout=10) as api:
        cookie = await sign_in(browser, replica)
        await _expire_access_token(view, cookie)
        await cluster.control("POST", "config", json={"token_delay_seconds": 1.5, "token_failure": "unavailable"})
        answered = await api.get(f"{replica.url}/api/v1/userinfo", headers=cookie_headers(cookie))
        assert answered.status_code == 503  # the caller gave up after 0.5 s; the refresh fails at 1.5 s
        await asyncio.sleep(2.0)
        await cluster.control("POST", "config", json={"token_delay_seconds": 0, "token_failure": None})
        again = await api.get(f"{replica.url}/api/v1/userinfo", headers=cookie_headers(cookie))
        assert again.status_code == 200, again.text  # an outage keeps the session
    output = replica.output()
    assert "never retrieved" not in output
    assert '"level": "error"' not in output


@pytest.mark.parametrize("error", ["invalid_request", "temporarily_unavailable", "server_error"])
async def test_a_non_fatal_refresh_error_is_an_outage_and_keeps_the_session(
    make_stack: Callable[..., Stack], error: str
) -> None:
    clock = Clock()
    stack = make_stack(clock=clock, emulator_options={"access_token_ttl": 600})
    async with stack.client() as client:
        await stack.login(client, "guest")
        clock.advance(560)  # bff's clock only: the access token is due for refresh, the session not idle
        await stack.emulator_control("POST", "config", json={"token_failure": error})
        failed = await client.get(f"{stack.url}/api/v1/userinfo", headers={"X-CSRF": "1"})
        assert failed.status_code == 502, failed.text
        assert failed.headers["content-type"].startswith("application/problem+json")
        assert failed.json()["code"] == "idp_unavailable"
        await stack.emulator_control("POST", "config", json={"token_failure": None})
        ok = await client.get(f"{stack.url}/api/v1/userinfo", headers={"X-CSRF": "1"})
        assert ok.status_code == 200, ok.text
