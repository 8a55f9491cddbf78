"""The adversarial suite: attacks and faults run against real processes.

Each test gets its own ``redis-server`` (so keys and bytes added by an attack can be counted exactly and a
fault such as ``SIGSTOP`` touches nobody else), the Kryptos emulator, and ``bff serve`` replicas as separate
OS processes (:mod:`tests.support.processes`). Every protection here has a test that fails without it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from bff.sessions import SessionManager
from bff.sessions.cookie import SignedValueCodec
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from tests.support.processes import Cluster, start_cluster
from tests.support.redis_server import RedisServer

LIFETIMES = Lifetimes(idle_timeout=1800, max_lifetime=86400, refresh_token_lifetime=30 * 86400)

CSRF = {"X-CSRF": "1"}


@dataclass
class PrivateRedis:
    server: RedisServer

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.server.port, socket_timeout=5)

    def keys_and_bytes(self) -> tuple[int, int]:
        """How many keys Redis holds and the bytes they take (``MEMORY USAGE``, the same figure the README quotes)."""
        with self.client() as r:
            keys = list(r.scan_iter(count=1000))
            return len(keys), sum(int(r.memory_usage(k) or 0) for k in keys)

    def freeze(self) -> None:
        """Stop the server outright (``SIGSTOP``): sockets stay open, nothing answers, like a hung host."""
        assert self.server.proc is not None
        os.kill(self.server.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.server.proc is not None
        os.kill(self.server.proc.pid, signal.SIGCONT)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = RedisServer().start()
    handle = PrivateRedis(server)
    try:
        yield handle
    finally:
        handle.thaw()  # a test that froze it and failed must not leave a stopped process behind
        server.stop()


@pytest.fixture
def replicas(private_redis: PrivateRedis) -> Iterator[Callable[..., Cluster]]:
    """``replicas(n=2, **BFF_env)``: an emulator and ``n`` ``bff serve`` processes on the private Redis."""
    started: list[Cluster] = []

    def factory(n: int = 2, **env: str) -> Cluster:
        cluster = start_cluster(private_redis.url, replicas=n, metrics=False, **env)
        started.append(cluster)
        return cluster

    yield factory
    for cluster in started:
        cluster.stop()


def cookie_headers(cookie: str, **extra: str) -> dict[str, Any]:
    return {**CSRF, "Cookie": f"bff-session={cookie}", **extra}


@dataclass
class Peek:
    """The replicas' own view of their sessions, from the test's side: bff's own code on the same Redis and
    keys (to move a session's clock or look at a record without going through HTTP)."""

    manager: SessionManager
    codec: SignedValueCodec
    store: RedisStore

    def session_id(self, cookie: str) -> str:
        session_id = self.codec.unsign(cookie)
        assert session_id is not None
        return session_id


@pytest.fixture
async def peek(private_redis: PrivateRedis) -> Any:
    stores: list[RedisStore] = []

    def factory(cluster: Cluster) -> Peek:
        store = RedisStore.from_url(cluster.redis_url)
        stores.append(store)
        manager = SessionManager(
            store, Keyring([cluster.env["BFF_ENCRYPTION_KEYS"]]), lifetimes=LIFETIMES, clock=time.time
        )
        return Peek(manager, SignedValueCodec([cluster.env["BFF_SESSION_SECRETS"]], salt="bff.session"), store)

    yield factory
    for store in stores:
        await store.aclose()


@pytest.fixture
def recorded() -> Iterator[list[dict[str, Any]]]:
    """The audit events recorded in this process (``record.audit``), in order."""
    events: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(record.audit)  # type: ignore[attr-defined]

    handler = Keep()
    logger = logging.getLogger("bff.audit")
    logger.addHandler(handler)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
