"""The in-process implementation of :class:`~bff.sessions.store.KeyValueStore` for ``memory://``.

For ``bff dev`` and tests only: state lives in one process, so ``bff serve`` refuses it with more than one
worker. Expiry is checked on read against an injectable clock, like Redis's own lazy expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self._sets: dict[str, tuple[set[str], float]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._data)})"

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item[0]

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
            del self._data[key]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        if len(self._data) % 1024 == 1023:
            self._sweep()  # keeps a long-running dev server from growing without bound
        self._data[key] = (value, self._clock() + ttl)

    async def get_and_delete(self, key: str) -> bytes | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._sets.pop(key, None)

    # No awaits inside these: on one event loop each runs to completion, which makes them atomic.

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._data[key] = (value, self._clock() + ttl)
        return True

    async def expire_if_equal(self, key: str, value: bytes, *, ttl: float) -> bool:
        if self._live(key) != value:
            return False
        self._data[key] = (value, self._clock() + ttl)
        return True

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        if self._live(key) != value:
            return False
        del self._data[key]
        return True

    async def index_add(self, key: str, member: str, *, ttl: float) -> None:
        members, expires = self._sets.get(key, (set(), 0.0))
        if expires <= self._clock():
            members = set()
        members.add(member)
        self._sets[key] = (members, max(expires, self._clock() + ttl))

    async def index_members(self, key: str) -> list[str]:
        members, expires = self._sets.get(key, (set(), 0.0))
        return sorted(members) if expires > self._clock() else []

    async def publish(self, channel: str, message: bytes) -> None:
        return None  # one process: nobody else to tell

    async def subscribe(self, channel: str) -> AsyncIterator[bytes | None]:
        yield None
        await asyncio.Event().wait()  # nothing is ever published to another process

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._data.clear()
        self._sets.clear()
