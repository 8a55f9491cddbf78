"""Shared fixtures: a real Redis server, and a running emulator + bff stack per test."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from joserfc.jwk import KeyParameters, RSAKey

from bff.sessions.memory_store import MemoryStore
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore
from bff_dev.emulator.keys import KeyStore
from tests.support.redis_server import RedisServer, configured_url
from tests.support.stack import Stack, start_stack

_KEY_POOL_SIZE = 6

# Tests that run several `bff serve` processes against an emulator and assert how long things take. Under
# `-n` (the test command) each group runs on one worker, one test at a time, so that at most two of them
# share the machine's two cores at once; everything else spreads over the other workers.
_PROCESS_GROUPS = {
    "tests/adversarial/test_resurrection.py": "replicas-1",
    "tests/adversarial/test_floods.py": "replicas-1",
    "tests/adversarial/test_server_limits.py": "replicas-1",
    "tests/adversarial/test_disconnects.py": "replicas-1",
    "tests/adversarial/test_host_header.py": "replicas-1",
    "tests/adversarial/test_signing_algs.py": "replicas-1",
    "tests/adversarial/test_refresh_faults.py": "replicas-2",
    "tests/adversarial/test_provider_budget.py": "replicas-2",
    "tests/adversarial/test_redis_faults.py": "replicas-2",
    "tests/adversarial/test_logout_faults.py": "replicas-2",
    "tests/services/test_tokens.py": "replicas-2",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = _PROCESS_GROUPS.get(item.nodeid.split("::")[0])
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def emulator_keys_from_a_pool() -> Iterator[None]:
    """Every emulator (hundreds per run) signs with a key from a small pool made once per test process,
    each under a fresh ``kid``, instead of generating a 2048-bit RSA key per emulator (~50 ms of CPU each).
    Consecutive keys differ, so a rotation still changes the key material; the key store is unchanged."""
    turn = itertools.cycle([KeyStore._generate() for _ in range(_KEY_POOL_SIZE)])

    def from_pool() -> RSAKey:
        parameters: KeyParameters = {"kid": "emu-" + secrets.token_hex(6), "use": "sig", "alg": "RS256"}
        return RSAKey.import_key(next(turn).as_dict(private=True), parameters=parameters)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KeyStore, "_generate", staticmethod(from_pool))
        yield


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = configured_url()
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[KeyValueStore]:
    """Both stores behind the one protocol: each test that asks for ``store`` runs on the in-process store and
    on a real Redis."""
    s: KeyValueStore = MemoryStore() if request.param == "memory" else RedisStore.from_url(redis_url)
    yield s
    await s.aclose()


@pytest.fixture
def make_stack(redis_url: str) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def factory(*, store: str = "redis", **kwargs: Any) -> Stack:
        kwargs.setdefault("redis_url", redis_url if store == "redis" else None)
        stack = start_stack(**kwargs)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()
