"""Metrics, access logs and forwarded headers (issue: production deployment, behind the ingress)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx2
import pytest
from prometheus_client import REGISTRY, generate_latest

from bff.app import create_app
from bff.config import Settings
from bff.logs import JsonFormatter
from tests.support.settings import minimal_settings
from tests.support.stack import Stack

CSRF = {"X-CSRF": "1"}


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_requests_upstreams_refreshes_and_sessions(stack: Stack) -> None:
    route = {"route": "/api/v1/integrations", "method": "GET", "status": "200"}
    before = {
        "requests": _value("bff_http_requests_total", **route),
        "upstream": _value("bff_upstream_request_duration_seconds_count", upstream="data"),
        "idp": _value("bff_upstream_request_duration_seconds_count", upstream="idp"),
        "refreshed": _value("bff_token_refreshes_total", outcome="refreshed"),
        "csrf": _value("bff_errors_total", code="csrf_required"),
    }
    async with stack.client() as client:
        await stack.login(client)
        for _ in range(3):
            assert (await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)).status_code == 200
        await stack.emulator_control("POST", "config", json={"data_api_failure": {"status": 401, "count": 1}})
        assert (await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)).status_code == 200
        assert (await client.get(f"{stack.url}/api/v1/integrations")).status_code == 403
    assert _value("bff_http_requests_total", **route) - before["requests"] == 4
    assert _value("bff_upstream_request_duration_seconds_count", upstream="data") - before["upstream"] == 5
    assert _value("bff_upstream_request_duration_seconds_count", upstream="idp") > before["idp"]
    assert _value("bff_token_refreshes_total", outcome="refreshed") - before["refreshed"] == 1
    assert _value("bff_errors_total", code="csrf_required") - before["csrf"] == 1
    exposition = generate_latest().decode()
    # Labels carry templates and codes only: no token, secret or session id can be in there.
    for secret in [*stack.idp.issued_secrets(), stack.client_secret]:
        assert secret not in exposition


async def test_access_log_fields(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bff.access")
    async with stack.client() as client:
        await stack.login(client)
        caplog.clear()
        r = await client.get(f"{stack.url}/api/v1/userinfo", headers={**CSRF, "X-Request-ID": "trace-42"})
        assert r.status_code == 200
    # The access line is written after the last byte is sent, so the client can have the response a moment
    # before the server (another thread) has logged it: wait for ours, matched by its request id.
    deadline = time.monotonic() + 5
    while True:
        entries = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "bff.access"]
        ours = [e for e in entries if e["request_id"] == "trace-42"]
        if ours or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    [entry] = ours
    assert entry["route"] == "/api/v1/userinfo"
    assert entry["status"] == 200
    assert entry["upstream_status"] == 200
    assert entry["duration_ms"] > 0
    assert entry["client"] == "127.0.0.1"
    assert len(entry["session_hash"]) == 12
    cookie = client.cookies[stack.settings.session_cookie_name]
    assert entry["session_hash"] not in cookie


async def _logged_client(
    settings: Settings, peer: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, Any], httpx2.Response]:
    app = create_app(settings)
    caplog.set_level(logging.INFO, logger="bff.access")
    caplog.clear()
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app, client=(peer, 4711))
        async with httpx2.AsyncClient(transport=transport, base_url="http://bff.internal") as client:
            response = await client.get("/auth/login?return_to=/x", headers=headers)
    [record] = [r for r in caplog.records if r.name == "bff.access"]
    return json.loads(JsonFormatter().format(record)), response


SPOOF = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}


async def test_forwarded_headers_are_believed_from_a_trusted_proxy(caplog: pytest.LogCaptureFixture) -> None:
    settings = minimal_settings(trusted_proxies=["10.0.0.0/8"])
    headers = {**SPOOF, "X-Forwarded-For": "203.0.113.9, 10.1.2.3"}  # client, then an inner proxy hop
    entry, _ = await _logged_client(settings, "10.0.0.5", headers, caplog)
    assert entry["client"] == "203.0.113.9"


async def test_spoofed_forwarded_headers_from_anyone_else_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    settings = minimal_settings(trusted_proxies=["10.0.0.0/8"])
    spoofed, spoofed_response = await _logged_client(settings, "192.0.2.44", SPOOF, caplog)
    plain, plain_response = await _logged_client(settings, "192.0.2.44", {}, caplog)
    assert spoofed["client"] == plain["client"] == "192.0.2.44"
    # The redirect URI comes from BFF_PUBLIC_URL, never from Host or X-Forwarded-Host.
    for response in (spoofed_response, plain_response):
        assert response.status_code in (302, 502)  # 502 when the (absent) provider is needed first
        assert "evil.example" not in response.headers.get("location", "")


async def test_without_trusted_proxies_no_forwarded_header_is_believed(caplog: pytest.LogCaptureFixture) -> None:
    entry, _ = await _logged_client(minimal_settings(), "10.0.0.5", SPOOF, caplog)
    assert entry["client"] == "10.0.0.5"


async def test_access_lines_are_batched_other_records_and_shutdown_flush() -> None:
    import io

    from bff.logs import BatchingStreamHandler, TextFormatter

    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval=60)
    handler.setFormatter(TextFormatter())

    def record(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.makeLogRecord(
            {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": msg}
        )

    for i in range(3):
        handler.handle(record("bff.access", logging.INFO, f"line {i}"))
    assert stream.getvalue() == ""  # batched: nothing written yet
    handler.handle(record("uvicorn.error", logging.INFO, "Shutting down"))  # any other record: written at once
    written = [line.split("] ", 1)[1].strip() for line in stream.getvalue().splitlines()]
    assert written == ["line 0", "line 1", "line 2", "Shutting down"]  # in order
    handler.handle(record("bff.access", logging.INFO, "last request"))
    handler.flush()  # what the lifespan does at shutdown (and logging.shutdown at exit)
    assert stream.getvalue().splitlines()[-1].endswith("last request")
