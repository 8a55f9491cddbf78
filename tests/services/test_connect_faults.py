"""A Connect API that answers badly (bff.services.connect): every odd answer is a clear 502 ``connect_failed``,
and nothing is stored or forgotten on its account. A small fake Connect API on a real loopback port plays
each answer; a real Redis holds the grants."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bff.errors import BadGateway, BadRequest, Forbidden, NotFound
from bff.services.connect import ConnectService
from bff.services.grant_facts import GrantFacts
from bff.services.upstream import Upstream
from bff.sessions import SessionManager
from bff.sessions.connect import ConnectGrant, ConnectGrants
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import CONNECT_LAST_USE_KEY, CONNECT_SWEEP_LOCK_KEY, GRANT_FACTS_KEY
from tests.support.clock import Clock
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerThread
from tests.support.settings import minimal_settings

START = 2_000_000_000.0


class FakeConnectApi:
    """Answers each path with what the test put in ``answers`` (status, raw body); counts the calls."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.calls: dict[str, int] = {}
        self.server = ServerThread(Starlette(routes=[Route("/{path:path}", self._answer, methods=["POST"])]))

    async def _answer(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        self.calls[path] = self.calls.get(path, 0) + 1
        status, body = self.answers.get(path, (404, b'{"success":false,"code":"NOT_FOUND"}'))
        return Response(body, status_code=status, media_type="application/json")

    def answer(self, path: str, status: int, body: object) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (status, raw)


@pytest.fixture
def fake_api() -> Iterator[FakeConnectApi]:
    api = FakeConnectApi()
    api.server.start()
    yield api
    api.server.stop()


@contextlib.asynccontextmanager
async def _service(api: FakeConnectApi, redis_url: str) -> AsyncIterator[ConnectService]:
    settings = minimal_settings(connect_api_url=api.server.url, redis_url=redis_url)
    store = RedisStore.from_url(redis_url)
    keyring = Keyring(["k" * 32])
    clock = Clock(START)
    sessions = SessionManager(store, keyring, lifetimes=Lifetimes.from_settings(settings), clock=clock)
    upstream = Upstream(settings)
    headers = {"X-Client-Id": "c", "X-Client-Secret": "s"}
    try:
        yield ConnectService(settings, upstream, ConnectGrants(store, keyring, clock), sessions, store, headers)
    finally:
        await upstream.aclose()
        await store.aclose()


IDLE = 400 * 86400  # BFF_CONNECT_IDLE_TIMEOUT's default


def _clock(service: ConnectService) -> Clock:
    clock = service.grants.clock
    assert isinstance(clock, Clock)
    return clock


def _grant() -> ConnectGrant:
    suffix = secrets.token_hex(6)
    return ConnectGrant(f"cat_{suffix}", f"cgrant_{suffix}", "ws_1", "openid", START, START + 10**8)


ODD_ANSWERS: list[tuple[int, object]] = [
    (200, b"<html>gateway</html>"),  # not JSON
    (200, b"[1, 2]"),  # JSON, not an object
    (401, {"success": False, "error": "Invalid client credentials", "code": "INVALID_CLIENT"}),
    (500, {"success": False, "code": "INTERNAL_ERROR"}),
    (200, {"success": True, "data": {}}),  # success without the documented fields
]


@pytest.mark.parametrize(("status", "body"), ODD_ANSWERS)
async def test_odd_link_token_and_exchange_answers_are_502(
    fake_api: FakeConnectApi, redis_url: str, status: int, body: object
) -> None:
    fake_api.answer("/link-token", status, body)
    fake_api.answer("/token/exchange", status, body)
    async with _service(fake_api, redis_url) as service:
        with pytest.raises(BadGateway) as link_error:
            await service.link_token(None)
        with pytest.raises(BadGateway) as exchange_error:
            await service.exchange("public_x", sub=None)
    assert link_error.value.code == exchange_error.value.code == "connect_failed"
    assert "Invalid client credentials" not in link_error.value.detail  # Kryptos's words are not echoed
    assert fake_api.calls.get("/token/revoke", 0) == 0  # nothing was minted, nothing to revoke


async def test_an_exchange_refusal_under_a_5xx_is_not_blamed_on_the_client(
    fake_api: FakeConnectApi, redis_url: str
) -> None:
    # TOKEN_EXPIRED with a 400 is the client's problem; the same code on a 503 is Kryptos's.
    fake_api.answer("/token/exchange", 503, {"success": False, "code": "TOKEN_EXPIRED"})
    async with _service(fake_api, redis_url) as service:
        with pytest.raises(BadGateway):
            await service.exchange("public_x", sub=None)
        fake_api.answer("/token/exchange", 400, {"success": False, "code": "TOKEN_EXPIRED"})
        with pytest.raises(BadRequest) as refused:
            await service.exchange("public_x", sub=None)
        assert refused.value.code == "public_token_expired"


async def test_a_check_session_failure_keeps_the_grant(fake_api: FakeConnectApi, redis_url: str) -> None:
    async with _service(fake_api, redis_url) as service:
        grant = _grant()
        handle = service.grants.handle(await service.grants.create(grant))
        for status, body in ODD_ANSWERS[:4]:
            fake_api.answer("/link-token/check-session", status, body)
            with pytest.raises(BadGateway):
                await service.status(handle, grant)
            assert await service.grants.load(handle) is not None
        # Odd field types from check-session are not passed on.
        fake_api.answer(
            "/link-token/check-session",
            200,
            {"success": True, "data": {"has_valid_session": True, "workspace_id": 7, "workspace_name": ["x"]}},
        )
        answer = await service.status(handle, grant)
        assert answer == {"connected": True, "workspace_id": "ws_1", "workspace_name": None, "scopes": ["openid"]}
        await service.grants.forget(handle, grant.grant_id)


async def test_revocation_answers(fake_api: FakeConnectApi, redis_url: str) -> None:
    async with _service(fake_api, redis_url) as service:
        grant = _grant()
        handle = service.grants.handle(await service.grants.create(grant))
        # A grant of another client: an administrator hears 403; nothing is forgotten.
        fake_api.answer("/token/revoke", 403, {"success": False, "code": "ACCESS_DENIED"})
        with pytest.raises(Forbidden):
            await service.revoke(grant.grant_id)
        assert await service.grants.load(handle) is not None
        # Kryptos down: nothing is forgotten either.
        fake_api.answer("/token/revoke", 502, b"bad gateway")
        with pytest.raises(BadGateway):
            await service.disconnect(handle, grant)
        assert await service.grants.load(handle) is not None
        # The user disconnecting a grant Kryptos says is another client's (the client id changed): forgotten,
        # since it can serve this client no more.
        fake_api.answer("/token/revoke", 403, {"success": False, "code": "ACCESS_DENIED"})
        await service.disconnect(handle, grant)
        assert await service.grants.load(handle) is None
        # Already gone at Kryptos and unknown here: the administrator hears 404.
        fake_api.answer("/token/revoke", 404, {"success": False, "code": "GRANT_NOT_FOUND"})
        with pytest.raises(NotFound):
            await service.revoke("cgrant_nobody_" + secrets.token_hex(4))


async def test_what_the_grant_list_learns(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    service = GrantFacts(store)
    try:
        gid = "cgrant_" + secrets.token_hex(6)
        listing = json.dumps({"success": True, "data": {"grants": [{"grant_id": gid}, "odd"], "count": 2}}).encode()
        await service.learn_limit(gid, 200, b"not json")  # ignored
        await service.learn_limit(gid, 500, b'{"success":false,"code":"INTERNAL_ERROR"}')  # teaches nothing
        annotated: dict[str, Any] = json.loads(await service.annotate_grants(listing))
        assert annotated["data"]["grants"][0]["known"]["kind"] is None and annotated["data"]["grants"][1] == "odd"
        await service.learn_limit(
            gid, 200, json.dumps({"success": True, "data": {"transaction_limit": 9, "enable_limiter": False}}).encode()
        )
        annotated = json.loads(await service.annotate_grants(listing))
        assert annotated["data"]["grants"][0]["known"] == {
            "kind": "guest",
            "transaction_limit": 9,
            "enable_limiter": False,
        }
        await service.learn_limit(gid, 404, b'{"success":false,"code":"GRANT_NOT_FOUND"}')  # forgotten
        annotated = json.loads(await service.annotate_grants(listing))
        assert annotated["data"]["grants"][0]["known"]["kind"] is None
        for odd in (b"<html>", b'{"success":true}', b'{"success":true,"data":{"grants":7}}'):
            assert await service.annotate_grants(odd) == odd  # not the documented shape: passed on untouched
        assert gid not in await store.hash_get_all(GRANT_FACTS_KEY)
    finally:
        await store.aclose()


async def test_only_one_replica_sweeps_at_a_time(fake_api: FakeConnectApi, redis_url: str) -> None:
    async with _service(fake_api, redis_url) as service:
        store = RedisStore.from_url(redis_url)
        try:
            assert await store.set_if_absent(CONNECT_SWEEP_LOCK_KEY, b"another replica", ttl=30)
            assert await service.sweep_idle() == 0
            assert fake_api.calls.get("/token/revoke", 0) == 0
            assert await store.get(CONNECT_SWEEP_LOCK_KEY) == b"another replica"  # not released by us
            await store.delete_if_equal(CONNECT_SWEEP_LOCK_KEY, b"another replica")
        finally:
            await store.aclose()


async def test_the_sweep_forgets_a_grant_kryptos_says_is_another_clients(fake_api: FakeConnectApi) -> None:
    # Otherwise the oldest such grants would block every later sweep round for ever.
    server = RedisServer().start()  # the sweep ends every idle grant in its Redis: a private one
    try:
        async with _service(fake_api, server.url) as service:
            grant = _grant()
            handle = service.grants.handle(await service.grants.create(grant))
            _clock(service).advance(IDLE + 1)
            fake_api.answer("/token/revoke", 403, {"success": False, "code": "ACCESS_DENIED"})
            assert await service.sweep_idle() == 1
            assert await service.grants.load(handle) is None
            fake_api.answer("/token/revoke", 503, b"unavailable")  # a transient failure keeps the next one
            other = _grant()
            other_handle = service.grants.handle(await service.grants.create(other))
            _clock(service).advance(IDLE + 1)
            assert await service.sweep_idle() == 0
            assert await service.grants.load(other_handle) is not None
    finally:
        server.stop()


async def test_a_status_check_moves_the_idle_clock(fake_api: FakeConnectApi, redis_url: str) -> None:
    async with _service(fake_api, redis_url) as service:
        grant = _grant()
        handle = service.grants.handle(await service.grants.create(grant))
        _clock(service).advance(5 * 86400)
        fake_api.answer("/link-token/check-session", 200, {"success": True, "data": {"has_valid_session": True}})
        await service.status(handle, grant)
        raw = aioredis.from_url(redis_url)
        try:
            assert await raw.zscore(CONNECT_LAST_USE_KEY, f"{handle} {grant.grant_id}") == START + 5 * 86400
        finally:
            await raw.aclose()
        await service.grants.forget(handle, grant.grant_id)
