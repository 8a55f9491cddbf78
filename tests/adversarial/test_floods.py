"""Sign-in floods: what an anonymous client can make bff store, and how the per-address limits hold across replicas.

Every ``GET /auth/login`` stores a login state for five minutes. Without limits, a flood from one address
fills Redis at ~600 bytes a request; with them, one address gets a burst of 30 (then one every 2 s), each
browser at most 10 pending sign-ins, and a refused request writes nothing but its bucket. Addresses come
from loopback: any 127.0.0.x can be the client's local address, and a trusted proxy's ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.cookiejar
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.adversarial.conftest import PrivateRedis
from tests.support.processes import Cluster

MOBILE_REDIRECT = "com.example.app:/oauth2redirect"
BURST = 30  # BFF_RATE_LIMIT_LOGIN's default: 30 a minute, bursts of 30


def _client(local_address: str = "127.0.0.1", *, jar: bool = False) -> httpx2.AsyncClient:
    """A client bound to one loopback address; without a jar each request is a new browser (no binding cookie)."""
    cookies = None if jar else http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    transport = httpx2.AsyncHTTPTransport(local_address=local_address, limits=httpx2.Limits(max_connections=20))
    return httpx2.AsyncClient(transport=transport, cookies=cookies, timeout=15)


def _memory(private_redis: PrivateRedis) -> dict[bytes, int]:
    """Every key and its ``MEMORY USAGE``."""
    with private_redis.client() as r:
        return {key: int(r.memory_usage(key) or 0) for key in r.scan_iter(count=1000)}


def _added(before: dict[bytes, int], after: dict[bytes, int]) -> dict[bytes, int]:
    return {key: size for key, size in after.items() if key not in before}


def _kinds(keys: Iterable[bytes]) -> Counter[str]:
    def kind(key: bytes) -> str:
        if key.startswith(b"bff:login:"):
            return "login_state"
        if key.startswith(b"bff:rl:"):
            return "bucket:" + key.rsplit(b":", 1)[1].decode()
        if key.endswith(b":pending-logins"):
            return "pending"
        return key.decode()

    return Counter(kind(key) for key in keys)


def _assert_rate_limited(response: httpx2.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 300, retry_after


async def _flood(client: httpx2.AsyncClient, url: str, n: int, **kwargs: object) -> list[httpx2.Response]:
    return list(await asyncio.gather(*(client.get(url, **kwargs) for _ in range(n))))  # type: ignore[arg-type]


def _admitted(responses: list[httpx2.Response]) -> int:
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {302, 429}, statuses
    for response in responses:
        if response.status_code == 429:
            _assert_rate_limited(response)
    return statuses[302]


async def test_login_flood_from_one_address_stores_at_most_a_burst(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    replica = replicas(1).replicas[0]
    before = _memory(private_redis)
    async with _client() as client:
        started = time.monotonic()
        responses = await _flood(client, f"{replica.url}/auth/login", 200)
        took = time.monotonic() - started
    admitted = _admitted(responses)
    # The burst, plus one start for every 2 s the flood took.
    assert BURST <= admitted <= BURST + 1 + int(took / 2), (admitted, took)
    added = _added(before, _memory(private_redis))
    assert _kinds(added) == {"login_state": admitted, "bucket:login": 1}  # no binding record for new browsers
    assert not any(b"127.0.0" in key for key in added)  # the address is hashed into the bucket's name
    total = sum(added.values())
    print(f"\n200 starts from one address: {admitted} admitted, {len(added)} keys, {total} bytes")
    assert total <= admitted * 700 + 200


@pytest.mark.slow
async def test_the_limit_is_per_address_and_shared_by_replicas(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    a, b = replicas(2, BFF_TRUSTED_PROXIES="127.0.0.1/32").replicas
    before = _memory(private_redis)
    async with _client("127.0.0.5") as five, _client("127.0.0.6") as six:
        # 40 starts from one address, half to each replica: one bucket for both.
        first = await _flood(five, f"{a.url}/auth/login", 20)
        second = await _flood(five, f"{b.url}/auth/login", 20)
        assert _admitted(first) == 20
        assert BURST <= 20 + _admitted(second) <= BURST + 1
        # Another address has a bucket of its own.
        assert BURST <= _admitted(await _flood(six, f"{b.url}/auth/login", 40)) <= BURST + 1
    async with _client("127.0.0.1") as proxy, _client("127.0.0.9") as stranger:
        # Behind a trusted proxy each X-Forwarded-For client counts on its own ...
        for client_address in ("203.0.113.7", "203.0.113.8"):
            forwarded = await _flood(proxy, f"{a.url}/auth/login", 40, headers={"X-Forwarded-For": client_address})
            assert BURST <= _admitted(forwarded) <= BURST + 1
        # ... but from anyone else the header is ignored: a spoofed address per request buys nothing.
        spoofed = await asyncio.gather(
            *(stranger.get(f"{b.url}/auth/login", headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(40))
        )
        assert BURST <= _admitted(list(spoofed)) <= BURST + 1
    added = _added(before, _memory(private_redis))
    kinds = _kinds(added)
    assert kinds["bucket:login"] == 5  # 127.0.0.5, 127.0.0.6, 203.0.113.7, 203.0.113.8, 127.0.0.9
    assert 5 * BURST <= kinds["login_state"] <= 5 * (BURST + 1)
    assert not any(b"127.0.0" in key or b"203.0.113" in key or b"198.51.100" in key for key in added)


async def test_refused_requests_consume_nothing(private_redis: PrivateRedis, replicas: Callable[..., Cluster]) -> None:
    """A callback, an app's token request and a back-channel logout, each past its limit: 429 before anything."""
    cluster = replicas(1, BFF_RATE_LIMIT_CALLBACK="5", BFF_RATE_LIMIT_MOBILE_TOKEN="5", BFF_RATE_LIMIT_BACKCHANNEL="5")
    replica = cluster.replicas[0]
    async with _client(jar=True) as browser, _client("127.0.0.3") as attacker:
        start = await browser.get(f"{replica.url}/auth/login", params={"login_hint": "guest"})
        assert start.status_code == 302
        approve = await browser.get(start.headers["location"])
        callback_query = urlsplit(approve.headers["location"]).query
        state = parse_qs(callback_query)["state"][0]
        # The attacker spends its own buckets; the browser's are untouched.
        for path, method, data in (
            ("/auth/callback?state=forged&code=x", "GET", None),
            ("/auth/mobile/token", "POST", {"code": "x" * 43, "code_verifier": "v" * 43, "redirect_uri": "x"}),
            ("/auth/backchannel-logout", "POST", {"logout_token": "a.b.c"}),
        ):
            responses = [await attacker.request(method, f"{replica.url}{path}", data=data) for _ in range(7)]
            assert [r.status_code for r in responses] == [400] * 5 + [429] * 2, (path, [r.text for r in responses])
            for response in responses[5:]:
                _assert_rate_limited(response)
        before = _memory(private_redis)
        # The browser's own callback bucket: spend it with unknown states, then its real callback is refused ...
        for _ in range(5):
            assert (await browser.get(f"{replica.url}/auth/callback?state=unknown&code=x")).status_code == 400
        refused = await browser.get(f"{replica.url}/auth/callback?{callback_query}")
        _assert_rate_limited(refused)
        # ... without consuming its login state: nothing but the bucket changed.
        after = _memory(private_redis)
        assert _kinds(_added(before, after)) == {"bucket:callback": 1}
        assert set(before) <= set(after)
        with private_redis.client() as r:
            assert r.exists(f"bff:login:{hashlib.sha256(state.encode()).hexdigest()[:40]}")
        stats = await cluster.control("GET", "stats")
        assert stats["token"].get("authorization_code", {}) == {}  # and no code was redeemed


async def test_pending_sign_ins_per_browser_are_capped(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    cluster = replicas(1)
    replica = cluster.replicas[0]
    before = _memory(private_redis)
    async with _client(jar=True) as browser:
        starts = [await browser.get(f"{replica.url}/auth/login", params={"login_hint": "guest"}) for _ in range(12)]
        assert [r.status_code for r in starts] == [302] * 10 + [429] * 2
        _assert_rate_limited(starts[10])
        assert 290 <= int(starts[10].headers["retry-after"]) <= 300  # until the oldest recorded one expires
        added = _added(before, _memory(private_redis))
        assert _kinds(added) == {"login_state": 10, "pending": 1, "bucket:login": 1}
        pending = next(size for key, size in added.items() if key.endswith(b":pending-logins"))
        # Finishing one sign-in makes room for another.
        approve = await browser.get(starts[5].headers["location"])
        done = await browser.get(f"{replica.url}/auth/callback?{urlsplit(approve.headers['location']).query}")
        assert done.status_code == 302, done.text
        again = await browser.get(f"{replica.url}/auth/login", params={"login_hint": "guest"})
        assert again.status_code == 302, again.text
        _assert_rate_limited(await browser.get(f"{replica.url}/auth/login"))
    print(f"\npending sign-ins of one browser: 9 recorded in one key of {pending} bytes")
    assert pending < 1000


def _challenge() -> str:
    verifier = secrets.token_urlsafe(48)
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def test_redis_bytes_per_anonymous_sign_in_start(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    """The cost of one ``GET /auth/login`` from a new browser, as ``MEMORY USAGE`` of the keys it adds."""
    replica = replicas(1, BFF_MOBILE_REDIRECT_URIS=MOBILE_REDIRECT).replicas[0]
    app_state = "".join(
        secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") for _ in range(512)
    )
    cases = {
        "browser, return_to=/": {},
        "browser, 512-char return_to": {"return_to": "/" + "r" * 511},
        "mobile, 512-char state": {
            "client": "mobile",
            "redirect_uri": MOBILE_REDIRECT,
            "code_challenge": _challenge(),
            "code_challenge_method": "S256",
            "state": app_state,
        },
    }
    measured: dict[str, int] = {}
    for i, (name, params) in enumerate(cases.items()):
        async with _client(f"127.0.0.{20 + i}") as client:
            before = _memory(private_redis)
            first = await client.get(f"{replica.url}/auth/login", params=params)
            assert first.status_code == 302, first.text
            added = _added(before, _memory(private_redis))
            assert _kinds(added) == {"login_state": 1, "bucket:login": 1}
            before = _memory(private_redis)
            second = await client.get(f"{replica.url}/auth/login", params=params)
            assert second.status_code == 302, second.text
            added_again = _added(before, _memory(private_redis))
            assert _kinds(added_again) == {"login_state": 1}  # the address's bucket exists already
            measured[name] = sum(added_again.values())
            with private_redis.client() as r:  # a login state, and the browser's binding cookie, live 5 minutes
                assert all(0 < r.pttl(key) <= 300_000 for key in added_again)
            assert "Max-Age=300;" in second.headers["set-cookie"]
            bucket = sum(size for key, size in added.items() if key.startswith(b"bff:rl:"))
            print(f"\n{name}: {measured[name]} bytes per start (+ {bucket} bytes once per address for its bucket)")
    assert measured["browser, return_to=/"] < 700
    assert measured["browser, 512-char return_to"] < 1300
    assert measured["mobile, 512-char state"] < 1400
    async with _client("127.0.0.30") as client:
        too_long = await client.get(f"{replica.url}/auth/login", params={"return_to": "/" + "r" * 512})
        assert too_long.status_code == 400
        assert too_long.json()["code"] == "invalid_return_to"
