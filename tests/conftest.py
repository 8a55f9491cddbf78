"""Shared fixtures: a real Redis server, and a running emulator + bff stack per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.redis_server import RedisServer, configured_url
from tests.support.stack import Stack, start_stack


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
