from __future__ import annotations

import httpx2

from tests.support.stack import Stack


async def test_healthz_and_readyz(stack: Stack) -> None:
    async with httpx2.AsyncClient() as c:
        assert (await c.get(f"{stack.url}/healthz")).json() == {"status": "ok"}
        # The provider was up when the BFF started, so its metadata loaded during start-up.
        r = await c.get(f"{stack.url}/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"session_store": "ok", "identity_provider": "ok"}
