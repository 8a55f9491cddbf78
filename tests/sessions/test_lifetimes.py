"""Session lifetimes over HTTP with a controllable clock, key rotation, and single flight in one process."""

from __future__ import annotations

import asyncio
import time

from bff.sessions.cookie import SignedValueCodec
from tests.support.clock import Clock
from tests.support.stack import MakeStack

CSRF = {"X-CSRF": "1"}


async def test_idle_timeout_and_remaining_time(make_stack: MakeStack) -> None:
    clock = Clock()
    stack = make_stack(clock=clock, session_idle_timeout=600, session_max_lifetime=3600)
    async with stack.client() as client:
        await stack.login(client)
        first = (await client.get(f"{stack.url}/auth/session", headers=CSRF)).json()
        assert 595 <= first["expires_in"] <= 600
        clock.advance(300)
        second = (await client.get(f"{stack.url}/auth/session", headers=CSRF)).json()
        assert 595 <= second["expires_in"] <= 600  # used after 300 s: the idle timeout slid
        clock.advance(601)
        r = await client.get(f"{stack.url}/auth/session", headers=CSRF)
        assert r.status_code == 401


async def test_absolute_lifetime_ends_an_active_session(make_stack: MakeStack) -> None:
    clock = Clock()
    stack = make_stack(clock=clock, session_idle_timeout=600, session_max_lifetime=1500)
    async with stack.client() as client:
        await stack.login(client)
        for _ in range(2):
            clock.advance(500)
            assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200
        clock.advance(499)
        info = (await client.get(f"{stack.url}/auth/session", headers=CSRF)).json()
        assert info["expires_in"] <= 2  # the absolute end, not the idle timeout, is what is left
        clock.advance(2)
        assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 401


async def test_refresh_token_lifetime_caps_the_session(make_stack: MakeStack) -> None:
    stack = make_stack(refresh_token_lifetime=900, session_max_lifetime=86400)
    async with stack.client() as client:
        await stack.login(client)
        info = (await client.get(f"{stack.url}/auth/session", headers=CSRF)).json()
        assert info["absolute_expires_at"] - time.time() <= 900


async def test_encryption_key_rotation_both_ways(make_stack: MakeStack, redis_url: str) -> None:
    old, new = "o" * 40, "n" * 40
    signing = ["s" * 40]
    first = make_stack(encryption_keys=[old], session_secrets=signing)
    async with first.client() as client:
        await first.login(client)
        cookie = client.cookies[first.settings.session_cookie_name]
    # Same Redis, same signing key: a new key added in front still reads the old sessions ...
    rotated = make_stack(encryption_keys=[new, old], session_secrets=signing)
    header = {**CSRF, "Cookie": f"{rotated.settings.session_cookie_name}={cookie}"}
    async with rotated.client() as c:
        assert (await c.get(f"{rotated.url}/auth/session", headers=header)).status_code == 200
    # ... and once the old key is removed, its sessions end cleanly (401, not 500).
    removed = make_stack(encryption_keys=[new], session_secrets=signing)
    async with removed.client() as c:
        r = await c.get(f"{removed.url}/auth/session", headers=header)
        assert r.status_code == 401
        assert r.json()["code"] == "session_expired"  # a valid cookie whose session can no longer be read
    assert SignedValueCodec(signing, salt="bff.session").unsign(cookie) is not None


async def test_concurrent_refresh_in_one_process_with_the_memory_store(make_stack: MakeStack) -> None:
    clock = Clock()
    stack = make_stack(store="memory", clock=clock, session_idle_timeout=90_000, session_max_lifetime=172_800)
    async with stack.client() as client:
        await stack.login(client)
        await stack.emulator_control("POST", "config", json={"token_delay_seconds": 0.2})
        clock.advance(86400 - 30)  # the emulator's 24 h access token is now due for refresh
        responses = await asyncio.gather(*[client.get(f"{stack.url}/api/v1/userinfo", headers=CSRF) for _ in range(20)])
        assert [r.status_code for r in responses] == [200] * 20
    stats = await stack.emulator_control("GET", "stats")
    assert stats["token"]["refresh_token"] == {"success": 1}
    assert stats["refresh_token_reuse"] == 0
