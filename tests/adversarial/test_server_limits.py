"""Request-head bounds and the slowloris deadline of a real ``bff serve`` (hardening D12).

Before: a 1 MB cookie was read and answered, 10,000 headers were accepted, and sockets sending one header
byte now and then stayed open indefinitely. Now the server (bff.web.protocol) stops reading a head at
``BFF_MAX_HEADER_BYTES`` / ``BFF_MAX_REQUEST_HEADERS`` with 431, and closes a connection whose head is not
complete within ``BFF_HEADER_TIMEOUT`` (408 when a request had begun). The numbers measured are printed.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx2
import pytest

from tests.adversarial.conftest import PrivateRedis
from tests.support.processes import Cluster, Replica
from tests.support.raw_http import connect, head, parse_response, read_until_closed, request

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HEADER_TIMEOUT = 2.0  # seconds; the default is 10, shortened so the test stays short


def _start(replicas: Any) -> Replica:
    cluster: Cluster = replicas(0, BFF_LOG_LEVEL="info", BFF_HEADER_TIMEOUT=str(HEADER_TIMEOUT))
    return cluster.start_replica(metrics=True)


def _refused(replica: Replica, reason: str) -> float:
    text = httpx2.get(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=5).text
    prefix = f'bff_connections_refused_total{{reason="{reason}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def _assert_431(data: bytes) -> None:
    response = parse_response(data)
    assert response is not None, data[:300]
    assert response.status == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    assert response.json()["code"] == "request_header_fields_too_large"


def test_oversized_heads_and_too_many_headers_are_431(replicas: Any, private_redis: PrivateRedis) -> None:
    replica = _start(replicas)
    base = {"Host": "127.0.0.1", "X-CSRF": "1"}

    # A 9 KiB cookie in a small head: the Cookie bound (8 KiB), answered before any work (the edge).
    r = request(replica.port, head("GET", "/auth/session", {**base, "Cookie": "bff-session=" + "a" * 9 * 1024}))
    assert r.status == 431 and r.json()["code"] == "request_header_fields_too_large"

    # 150 tiny headers (under 2 KiB in all): the count bound (100), in the server's parser.
    many = [*base.items(), *((f"x-h{i}", "1") for i in range(150))]
    r = request(replica.port, head("GET", "/auth/session", many))
    assert r.status == 431 and r.headers.get("connection") == "close"  # the server's refusal, not the app's

    # 10,000 headers and a 1 MB cookie, each sent as a head that never ends: the server must stop reading at
    # the byte bound (16 KiB) and close, long before the sender is done.
    attacks = {
        "10,000 headers": b"".join(f"x-header-{i:05d}: 0123456789\r\n".encode() for i in range(10_000)),
        "1 MB cookie": b"Cookie: bff-session=" + b"a" * 1024 * 1024 + b"\r\n",
    }
    for name, payload in attacks.items():
        with connect(replica.port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            sock.sendall(head("GET", "/auth/session", base, end=False))
            started, sent = time.monotonic(), 0
            try:
                for offset in range(0, len(payload), 4096):
                    sent += sock.send(payload[offset : offset + 4096])
            except (BrokenPipeError, ConnectionResetError):
                pass
            data, closed = read_until_closed(sock, 3)
            elapsed = time.monotonic() - started
        print(
            f"\n{name}: the server closed after {sent:,} of {len(payload):,} bytes were sent, in {elapsed:.2f} s "
            f"({'431 received' if data else 'reset before the 431 was read'})"
        )
        assert closed
        assert elapsed < 1.0  # at the byte bound, not at the head deadline
        assert sent < len(payload) / 2
        if data:  # the 431 is sent first; a reset may beat it to the client when unread bytes were still queued
            _assert_431(data)
    assert _refused(replica, "headers_too_large") >= 3
    assert httpx2.get(f"{replica.url}/healthz").status_code == 200


def test_slowloris_sockets_are_closed_within_the_head_deadline(replicas: Any, private_redis: PrivateRedis) -> None:
    replica = _start(replicas)
    sockets = 20
    closed_after: list[float] = []
    answers: list[bytes] = []
    lock = threading.Lock()

    def slowloris(drip: bool) -> None:
        # Half a head, then one more byte every 0.5 s (drip), or nothing at all after connecting (idle).
        with connect(replica.port, timeout=10) as sock:
            started = time.monotonic()
            if drip:
                sock.sendall(head("GET", "/auth/session", {"Host": "127.0.0.1"}, end=False) + b"X-Slow: ")
            data = b""
            while time.monotonic() - started < 10:
                data_now, closed = read_until_closed(sock, 0.5)
                data += data_now
                if closed:
                    with lock:
                        closed_after.append(time.monotonic() - started)
                        answers.append(data)
                    return
                if drip:
                    try:
                        sock.sendall(b"a")
                    except (BrokenPipeError, ConnectionResetError):
                        continue

    threads = [threading.Thread(target=slowloris, args=(i % 4 != 0,)) for i in range(sockets)]
    for t in threads:
        t.start()
    # Meanwhile the server answers everyone else at once.
    time.sleep(0.5)
    began = time.monotonic()
    assert httpx2.get(f"{replica.url}/healthz", timeout=2).status_code == 200
    normal = time.monotonic() - began
    for t in threads:
        t.join(timeout=15)
    assert len(closed_after) == sockets, f"{len(closed_after)} of {sockets} sockets closed by the server in 10 s"
    print(
        f"\nslowloris: {len(closed_after)}/{sockets} sockets closed by the server after "
        f"{min(closed_after):.2f}-{max(closed_after):.2f} s (deadline {HEADER_TIMEOUT} s); "
        f"a normal request meanwhile took {normal * 1000:.1f} ms"
    )
    assert all(HEADER_TIMEOUT - 0.2 <= t <= HEADER_TIMEOUT + 1.5 for t in closed_after), closed_after
    dripping = [a for a in answers if a]
    assert len(dripping) == 15  # idle sockets are closed silently; begun requests are told 408
    for data in dripping:
        response = parse_response(data)
        assert response is not None and response.status == 408
        assert response.json()["code"] == "request_timeout"
    assert _refused(replica, "header_timeout") == sockets


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(
    replicas: Any, private_redis: PrivateRedis
) -> None:
    replica = _start(replicas)
    with connect(replica.port, timeout=10) as sock:
        sock.sendall(head("GET", "/healthz", {"Host": "127.0.0.1"}))
        data = b""
        while parse_response(data) is None:
            data += sock.recv(65536)
        assert parse_response(data).status == 200  # type: ignore[union-attr]
        # Then half of the next head, and a byte more every 0.5 s (each one also resets uvicorn's 5 s
        # keep-alive timer, which is all that ran on such a connection before).
        started = time.monotonic()
        sock.sendall(head("GET", "/healthz", {"Host": "127.0.0.1"}, end=False) + b"X-Slow: ")
        closed, answer = False, b""
        while not closed and time.monotonic() - started < 8:
            more, closed = read_until_closed(sock, 0.5)
            answer += more
            if not closed:
                sock.sendall(b"a")
        elapsed = time.monotonic() - started
    print(f"\nkept-alive slowloris closed after {elapsed:.2f} s")
    assert closed
    assert HEADER_TIMEOUT - 0.2 <= elapsed <= HEADER_TIMEOUT + 1.5
    response = parse_response(answer)
    assert response is not None and response.status == 408
