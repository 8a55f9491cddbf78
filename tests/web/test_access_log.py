"""The access line :mod:`bff.web.access_log` records per request, as :mod:`bff.logs` formats it."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from bff.logs import JsonFormatter
from tests.support.stack import Stack

CSRF = {"X-CSRF": "1"}


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
