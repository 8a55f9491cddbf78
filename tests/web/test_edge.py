"""The edge middleware's own refusals, in process (any ASGI server): the request head's bounds (431), a
client hanging up mid-body (499, never a 500), and no answer built from the Host header.

The same attacks against a real ``bff serve`` (whose protocol also bounds heads before buffering them, and
closes slowloris sockets) are in ``tests/adversarial/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from bff.app import create_app, direct_routes, routes
from bff.logs import JsonFormatter
from tests.support.settings import minimal_settings

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    # The smallest bounds the settings allow, so the tests' requests stay small.
    application = create_app(minimal_settings(max_request_headers=16, max_header_bytes=4096, max_cookie_bytes=1024))
    async with application.router.lifespan_context(application):
        yield application


def _client(app: Starlette) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://bff.internal")


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "bff.access"]


async def test_heads_over_the_bounds_are_431_before_any_work(app: Starlette, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bff.access")
    async with _client(app) as client:
        # httpx2 itself adds 5 headers (host, accept, accept-encoding, connection, user-agent).
        fits = await client.get("/healthz", headers={f"x-h{i}": "1" for i in range(11)})
        assert fits.status_code == 200
        refused = [
            await client.get("/healthz", headers={f"x-h{i}": "1" for i in range(12)}),  # 17 headers
            await client.get("/healthz", headers={"x-big": "a" * 4100}),  # 4 KiB head
            await client.get("/auth/session", headers={"X-CSRF": "1", "Cookie": "bff-session=" + "a" * 1100}),
        ]
    for r in refused:
        assert r.status_code == 431, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "request_header_fields_too_large"
    statuses = [e["status"] for e in _access(caplog)]
    assert statuses == [200, 431, 431, 431]


async def test_a_cookie_just_under_the_bound_is_read(app: Starlette) -> None:
    async with _client(app) as client:
        r = await client.get("/auth/session", headers={"X-CSRF": "1", "Cookie": "bff-session=" + "a" * 1000})
    assert r.status_code == 401  # read, not refused: an unsigned cookie is no session


async def _hang_up(app: Starlette, path: str, content_type: str) -> list[Message]:
    """Run one request whose client sends part of the body, then disconnects; returns what the app sent."""
    incoming: list[Message] = [
        {"type": "http.request", "body": b"code=abc&logout_to", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(30)  # a real server has nothing more to say
        raise AssertionError("receive() called after the disconnect")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bff.internal"), (b"content-type", content_type.encode()), (b"content-length", b"99")],
        "client": ("127.0.0.1", 4711),
        "server": ("127.0.0.1", 8000),
    }
    async with asyncio.timeout(5):
        await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/auth/mobile/token", "/auth/backchannel-logout"])
async def test_a_client_hanging_up_mid_body_is_499_not_an_error(
    app: Starlette, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sent = await _hang_up(app, path, FORM)
    assert sent == []  # nobody to answer
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [entry] = _access(caplog)
    assert (entry["route"], entry["status"], entry["outcome"]) == (path, 499, "client_closed")


async def test_a_content_length_that_is_not_a_number_is_400_on_back_channel_logout(app: Starlette) -> None:
    async with _client(app) as client:
        r = await client.post(
            "/auth/backchannel-logout",
            content=b"logout_token=x",
            headers={"Content-Type": FORM, "Content-Length": "12x"},
        )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_logout_token"
    assert "Content-Length" in r.json()["detail"]  # refused for the header, before the token is looked at


async def test_no_answer_is_built_from_the_host_header(app: Starlette) -> None:
    async with _client(app) as client:
        for path in ("/auth/login/", "/auth/session/", "/healthz/", "/api/v1/userinfo/", "/nope", "/"):
            r = await client.get(path, headers={"Host": "evil.example", "X-CSRF": "1"})
            assert r.status_code == 404, (path, r.status_code, r.headers)
            assert r.json()["code"] == "not_found"
            assert "evil.example" not in str(r.headers).lower() + r.text


async def test_the_hot_routes_are_called_by_the_edge_itself(app: Starlette, caplog: pytest.LogCaptureFixture) -> None:
    # The forwarded calls without path parameters and /auth/verify skip Starlette's router (bff.app.direct_routes):
    # with the router's own entry for the API call taken away, GET still reaches the forwarder; any other method
    # still goes to the router, which now knows no such path.
    assert {path for _, path in direct_routes(routes())} == {
        "/api/v1/integrations",
        "/api/v1/userinfo",
        "/api/developer/grants",
        "/auth/verify",
    }
    caplog.set_level(logging.INFO, logger="bff.access")
    async with _client(app) as client:
        before = await client.post("/api/v1/integrations", headers={"X-CSRF": "1"})
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/api/v1/integrations"]
        direct = await client.get("/api/v1/integrations", headers={"X-CSRF": "1"})
        routed = await client.post("/api/v1/integrations", headers={"X-CSRF": "1"})
    assert before.status_code == 405  # the router's answer
    assert set(before.headers["allow"].split(", ")) == {"GET", "HEAD"}
    # A BffError on the direct path is answered as the app's handler answers it.
    assert direct.status_code == 401
    assert direct.headers["content-type"] == "application/problem+json"
    assert direct.json()["code"] == "not_authenticated"
    assert routed.status_code == 404
    assert [(e["route"], e["status"]) for e in _access(caplog)] == [
        ("/api/v1/integrations", 405),
        ("/api/v1/integrations", 401),
        ("unmatched", 404),
    ]
