"""Graceful shutdown of `bff serve`: in-flight requests finish, new ones are refused, the process exits."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit

import httpx2
import pytest

from tests.support.processes import start_cluster


async def test_sigterm_lets_in_flight_requests_finish(redis_url: str) -> None:
    cluster = start_cluster(redis_url, replicas=1)
    try:
        [replica] = cluster.replicas
        async with httpx2.AsyncClient(timeout=20) as client:
            start = await client.get(f"{replica.url}/auth/login", params={"login_hint": "guest"})
            approve = await client.get(start.headers["location"])
            await client.get(f"{replica.url}/auth/callback?{urlsplit(approve.headers['location']).query}")
            await cluster.control("POST", "config", json={"data_api_failure": {"delay_seconds": 1.5, "count": 1}})
            in_flight = asyncio.create_task(client.get(f"{replica.url}/api/v1/integrations", headers={"X-CSRF": "1"}))
            for _ in range(100):  # until the upstream has the request
                if (await cluster.control("GET", "stats"))["data_api"] >= 1:
                    break
                await asyncio.sleep(0.02)
            replica.proc.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.status_code == 200
            assert response.json()["data"]
            with pytest.raises(httpx2.HTTPError):
                await client.get(f"{replica.url}/healthz")
        # Exited by itself after draining (uvicorn re-raises SIGTERM once shut down: status 143).
        assert await asyncio.to_thread(replica.proc.wait, 15) in (0, -signal.SIGTERM)
    finally:
        cluster.stop()
