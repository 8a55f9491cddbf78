"""A Redis restart must not cost a Guest their grant: with persistence (AOF) it survives, and the control
case shows what the README warns about — without persistence the handle is gone."""

from __future__ import annotations

import pytest

from tests.support.connect import CSRF, connect, emulator_grants
from tests.support.redis_server import RedisServer, stop_process
from tests.support.stack import MakeStack

INTEGRATIONS = "/api/v1/integrations"


@pytest.mark.parametrize("persistent", [True, False], ids=["appendonly", "no-persistence"])
async def test_a_grant_survives_a_redis_restart_only_with_persistence(make_stack: MakeStack, persistent: bool) -> None:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always") if persistent else RedisServer()
    server.start()
    try:
        stack = make_stack(redis_url=server.url, session_cache_seconds=0)
        async with stack.client() as browser:
            body = await connect(stack, browser)
            grant_cookie = browser.cookies.get(stack.settings.connect_cookie_name)
            assert grant_cookie
            assert (await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)).status_code == 200

            stop_process(server.proc)  # SIGTERM: a clean shutdown, as in a rolling restart of Redis
            server.start()  # same port, same data directory

            answers = [(await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)) for _ in range(2)]
            final = answers[-1]  # the first may meet the dropped connection; the pool reconnects
            if persistent:
                assert final.status_code == 200, final.text
            else:
                assert final.status_code == 401 and final.json()["code"] == "session_expired"

        async with stack.client() as returning:  # another day: only the grant cookie is left
            returning.cookies.set(stack.settings.connect_cookie_name, grant_cookie)
            status = (await returning.get(f"{stack.url}/connect/status", headers=CSRF)).json()
            assert status["connected"] is persistent
        # Without persistence Kryptos still lists a grant bff can no longer name: the orphan the README
        # warns about (only the administrator's grant list can end it now).
        assert body["workspace_id"] in {g["workspace_id"] for g in await emulator_grants(stack)}
    finally:
        server.stop()
