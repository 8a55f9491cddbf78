"""How the forwarder maps upstream, provider and Redis failures."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from bff.logs import JsonFormatter
from tests.support.clock import Clock
from tests.support.raw_http import connect, head
from tests.support.redis_server import RedisServer, free_port
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}


def _refreshes(stats: dict[str, Any]) -> int:
    return int(stats["token"].get("refresh_token", {}).get("success", 0))


async def test_upstream_401_refreshes_once_and_retries(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        await stack.emulator_control("POST", "config", json={"data_api_failure": {"status": 401, "count": 1}})
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 200, r.text
        assert _refreshes(await stack.emulator_control("GET", "stats")) == 1
        # The refreshed token is kept: the next call needs no refresh.
        assert (await client.get(f"{stack.url}/api/v1/userinfo", headers=CSRF)).status_code == 200
        assert _refreshes(await stack.emulator_control("GET", "stats")) == 1


async def test_upstream_401_twice_ends_the_session(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        await stack.emulator_control("POST", "config", json={"data_api_failure": {"status": 401, "count": 2}})
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 401 and r.json()["code"] == "session_expired"
        assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 401


async def test_refused_refresh_deletes_the_session(make_stack: MakeStack) -> None:
    clock = Clock()
    stack = make_stack(emulator_options={"access_token_ttl": 30}, clock=clock)
    async with stack.client() as client:
        await stack.login(client)
        clock.advance(20)  # a 30 s token is refreshed half-way through its life
        await stack.emulator_control("POST", "config", json={"token_failure": "invalid_grant"})
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 401 and r.json()["code"] == "session_expired"
        await stack.emulator_control("POST", "config", json={"token_failure": None})
        # Deleted, not merely refused once.
        assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 401


async def test_provider_outage_during_refresh_keeps_the_session(make_stack: MakeStack) -> None:
    clock = Clock()
    stack = make_stack(emulator_options={"access_token_ttl": 30}, clock=clock)
    async with stack.client() as client:
        await stack.login(client)
        clock.advance(20)
        await stack.emulator_control("POST", "config", json={"token_failure": "unavailable"})
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 502 and r.json()["code"] == "idp_unavailable"
        await stack.emulator_control("POST", "config", json={"token_failure": None})
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 200


async def test_upstream_429_passes_with_retry_after(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        await stack.emulator_control(
            "POST", "config", json={"data_api_failure": {"status": 429, "retry_after": 7, "count": 1}}
        )
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "7"
        assert r.json()["error"] == "rate_limit_exceeded"  # the upstream's body, unchanged


async def test_unreachable_upstream_is_502(make_stack: MakeStack) -> None:
    stack = make_stack(data_api_url=f"http://127.0.0.1:{free_port()}/api")
    async with stack.client() as client:
        await stack.login(client)
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 502
        assert r.json()["code"] == "upstream_unavailable"
        assert r.headers["content-type"] == "application/problem+json"


async def test_slow_upstream_is_504(make_stack: MakeStack) -> None:
    stack = make_stack(upstream_timeout=0.3)
    async with stack.client() as client:
        await stack.login(client)
        await stack.emulator_control("POST", "config", json={"data_api_failure": {"delay_seconds": 2, "count": 1}})
        r = await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)
        assert r.status_code == 504
        assert r.json()["code"] == "upstream_timeout"


async def test_redis_down_is_503_and_service_recovers(make_stack: MakeStack) -> None:
    redis = RedisServer().start()
    try:
        stack = make_stack(redis_url=redis.url)
        async with stack.client() as client:
            await stack.login(client)
            assert (await client.get(f"{stack.url}/api/v1/userinfo", headers=CSRF)).status_code == 200
            redis.stop()
            # A session cached in the process may serve until its change feed notices the lost
            # connection (at once: the socket closes); from then on every call needs Redis.
            for _ in range(100):
                r = await client.get(f"{stack.url}/api/v1/userinfo", headers=CSRF)
                assert r.status_code in (200, 503), r.text
                if r.status_code == 503:
                    break
                await asyncio.sleep(0.01)
            assert r.status_code == 503
            assert r.json()["code"] == "session_store_unavailable"
            assert "Traceback" not in r.text
            assert (await client.get(f"{stack.url}/readyz")).status_code == 503
            login = await client.get(f"{stack.url}/auth/login")
            assert login.status_code == 503
            redis = RedisServer(port=redis.port).start()
            assert (await client.get(f"{stack.url}/readyz")).status_code == 200
            # The server kept nothing on disk, so the old session is gone; signing in works again.
            await stack.login(client)
            assert (await client.get(f"{stack.url}/api/v1/userinfo", headers=CSRF)).status_code == 200
    finally:
        redis.stop()


async def test_a_client_hanging_up_mid_body_is_499_not_a_500(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with stack.client() as client:
        await stack.login(client, "admin")
        cookie = client.cookies[stack.settings.session_cookie_name]
    headers = {
        "Host": "127.0.0.1",
        "X-CSRF": "1",
        "Cookie": f"{stack.settings.session_cookie_name}={cookie}",
        "Content-Type": "application/json",
        "Content-Length": "200",
    }
    caplog.clear()
    with connect(stack.bff.port) as sock:  # 20 of the 200 bytes announced, then the client is gone
        sock.sendall(head("PATCH", "/api/developer/grants/g-1/transaction-limit", headers) + b'{"transactionLimit":')
        await asyncio.sleep(0.3)
    route = "/api/developer/grants/{grantId}/transaction-limit"
    for _ in range(100):  # the server thread writes the access line when the handler ends
        entries = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "bff.access"]
        if any(e["route"] == route for e in entries):
            break
        await asyncio.sleep(0.05)
    [entry] = [e for e in entries if e["route"] == route]
    assert (entry["status"], entry["outcome"]) == (499, "client_closed")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
