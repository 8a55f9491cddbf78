"""The provider budget (:mod:`bff.oidc.budget`): one shared quota of provider calls per client, on both stores.

The Redis store times its windows with the server's ``TIME``, so these tests use real time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from email.utils import formatdate

import pytest

from bff.errors import IdpBusy
from bff.oidc.budget import ProviderBudget, parse_retry_after
from bff.sessions.store import KeyValueStore


def test_retry_after_parsing_is_bounded() -> None:
    now = time.time()
    assert parse_retry_after("2", now=now) == 2
    assert parse_retry_after("0", now=now) == 1
    assert parse_retry_after("999999", now=now) == 3600
    assert parse_retry_after(None, now=now) == 60
    assert parse_retry_after("soon", now=now) == 60
    assert 25 <= parse_retry_after(formatdate(now + 30, usegmt=True), now=now) <= 31


async def test_provider_budget_keeps_room_for_refreshes(store: KeyValueStore) -> None:
    budget = ProviderBudget(
        store,
        provider=secrets.token_hex(8),
        token_per_minute=10,
        userinfo_per_hour=2,
        exchange_share=0.7,
        clock=time.time,
    )
    for _ in range(7):
        await budget.spend("authorization_code")
    with pytest.raises(IdpBusy) as busy:
        await budget.spend("authorization_code")
    assert busy.value.status == 503 and busy.value.code == "idp_busy"
    assert 59 <= int(busy.value.headers["Retry-After"]) <= 60
    for _ in range(3):
        await budget.spend("refresh_token")
    with pytest.raises(IdpBusy):
        await budget.spend("refresh_token")
    await budget.spend("userinfo")
    await budget.spend("userinfo")
    with pytest.raises(IdpBusy):
        await budget.spend("userinfo")


async def test_provider_429_makes_everyone_wait(store: KeyValueStore) -> None:
    provider = secrets.token_hex(8)
    one = ProviderBudget(
        store, provider=provider, token_per_minute=100, userinfo_per_hour=10, exchange_share=0.7, clock=time.time
    )
    other = ProviderBudget(
        store, provider=provider, token_per_minute=100, userinfo_per_hour=10, exchange_share=0.7, clock=time.time
    )
    busy = await one.provider_said_wait("refresh_token", "1")
    assert busy.headers["Retry-After"] == "1"
    for call in ("authorization_code", "refresh_token"):
        with pytest.raises(IdpBusy) as refused:
            await other.spend(call)
        assert refused.value.headers["Retry-After"] == "1"
    await other.spend("userinfo")  # another endpoint, another quota
    await asyncio.sleep(1.05)
    await other.spend("refresh_token")


async def test_a_zero_budget_is_off(store: KeyValueStore) -> None:
    budget = ProviderBudget(
        store,
        provider=secrets.token_hex(8),
        token_per_minute=0,
        userinfo_per_hour=0,
        exchange_share=0.7,
        clock=time.time,
    )
    for _ in range(200):
        await budget.spend("authorization_code")
        await budget.spend("userinfo")
