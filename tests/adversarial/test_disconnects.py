"""A client that hangs up is not a server error (hardening D11).

Against a real ``bff serve``: raw sockets send a head and part of the body, then close, on every endpoint
that reads a body (a forwarded PATCH, the mobile token exchange, back-channel logout); another closes while
the upstream call is in flight. Anyone can do this, so none of it may page the on-call: no error-level line,
no traceback, no ``status="500"`` in the metrics. The access line says what happened: status 499,
``outcome: client_closed``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
import pytest

from tests.adversarial.conftest import PrivateRedis, cookie_headers
from tests.support.processes import Cluster, Replica, sign_in
from tests.support.raw_http import connect, head

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PATCH_ROUTE = "/api/developer/grants/{grantId}/transaction-limit"


def _access_lines(replica: Replica) -> list[dict[str, Any]]:
    lines = []
    for line in replica.output().splitlines():
        if '"logger": "bff.access"' in line:
            lines.append(json.loads(line))
    return lines


def _wait_for_access_line(replica: Replica, route: str, status: int, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _access_lines(replica) if e["route"] == route and e["status"] == status]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no access line {route} {status} within {timeout} s:\n{replica.output()[-3000:]}")


def _hang_up_mid_body(replica: Replica, method: str, path: str, headers: dict[str, str]) -> None:
    """Declare 200 bytes, send 20, wait until the handler is reading the body, then close the socket."""
    with connect(replica.port) as sock:
        sock.sendall(head(method, path, {"Host": "127.0.0.1", **headers, "Content-Length": "200"}) + b"x" * 20)
        time.sleep(0.3)


def _samples(replica: Replica, name: str) -> list[str]:
    text = httpx2.get(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def _assert_nothing_went_wrong(replica: Replica) -> None:
    output = replica.output()
    errors = [line for line in output.splitlines() if '"level": "error"' in line or '"level": "critical"' in line]
    assert errors == [], errors
    assert "Traceback" not in output
    assert [s for s in _samples(replica, "bff_http_requests_total") if 'status="500"' in s] == []


def _start(replicas: Any) -> tuple[Cluster, Replica]:
    cluster: Cluster = replicas(
        0,
        BFF_LOG_LEVEL="info",
        BFF_ADMIN_SUBJECTS="user_admin_ada",
        BFF_MOBILE_REDIRECT_URIS="com.example.app:/oauth2redirect",
    )
    return cluster, cluster.start_replica(metrics=True)


async def test_hanging_up_mid_body_is_499_on_every_body_reader(replicas: Any, private_redis: PrivateRedis) -> None:
    _, replica = _start(replicas)
    async with httpx2.AsyncClient(timeout=10) as client:
        admin = await sign_in(client, replica, "admin")
    patch = {k: v for k, v in cookie_headers(admin).items() if k != "Cookie"}
    patch.update({"Cookie": f"bff-session={admin}", "Content-Type": "application/json"})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases = [
        ("PATCH", "/api/developer/grants/g-1/transaction-limit", patch, PATCH_ROUTE),
        ("POST", "/auth/mobile/token", form, "/auth/mobile/token"),
        ("POST", "/auth/backchannel-logout", form, "/auth/backchannel-logout"),
    ]
    for method, path, headers, route in cases:
        started = time.monotonic()
        _hang_up_mid_body(replica, method, path, headers)
        entry = _wait_for_access_line(replica, route, 499)
        assert entry["outcome"] == "client_closed"
        print(f"\n{method} {path}: 499 client_closed logged {time.monotonic() - started:.2f} s after the request began")
    _assert_nothing_went_wrong(replica)
    closed = [s for s in _samples(replica, "bff_http_requests_total") if 'status="499"' in s]
    assert {route for *_, route in cases} == {s.split('route="')[1].split('"')[0] for s in closed}
    assert replica.proc.poll() is None
    assert httpx2.get(f"{replica.url}/healthz").status_code == 200


async def test_hanging_up_while_the_upstream_call_is_in_flight(replicas: Any, private_redis: PrivateRedis) -> None:
    cluster, replica = _start(replicas)
    async with httpx2.AsyncClient(timeout=10) as client:
        cookie = await sign_in(client, replica)
    delay = 1.5
    await cluster.control("POST", "config", json={"data_api_failure": {"delay_seconds": delay, "count": 1}})
    headers = {"Host": "127.0.0.1", "X-CSRF": "1", "Cookie": f"bff-session={cookie}"}
    started = time.monotonic()
    with connect(replica.port) as sock:
        sock.sendall(head("GET", "/api/v1/userinfo", headers))
        await asyncio.sleep(0.3)  # the forwarder is now waiting for the (slow) data API
    entry = _wait_for_access_line(replica, "/api/v1/userinfo", 499, timeout=delay + 5)
    waited = time.monotonic() - started
    assert entry["outcome"] == "client_closed"
    assert entry["upstream_status"] == 200  # the upstream answered; nobody was there to receive it
    assert waited >= delay - 0.3
    print(f"\nupstream in flight: 499 client_closed logged after {waited:.2f} s (upstream delay {delay} s)")
    _assert_nothing_went_wrong(replica)
