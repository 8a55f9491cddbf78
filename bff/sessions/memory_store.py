"""The in-process implementation of :class:`~bff.sessions.store.KeyValueStore` for ``memory://``.

For ``bff dev`` and tests only: state lives in one process, so ``bff serve`` refuses it with more than one
worker. Expiry is checked on read against an injectable clock, like Redis's own lazy expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from bff.sessions.store import record_version


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self._sets: dict[str, tuple[dict[str, bytes], float]] = {}  # index key → ({member: value}, expires at)
        self._buckets: dict[str, float] = {}  # rate-limit key → the bucket's theoretical arrival time (GCRA)
        self._windows: dict[str, tuple[dict[str, float], float]] = {}  # key → ({member: added at}, expires at)
        self._hashes: dict[str, dict[str, bytes]] = {}
        self._schedules: dict[str, dict[str, float]] = {}

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
        self._hashes.pop(key, None)
        self._schedules.pop(key, None)

    # No awaits inside these: on one event loop each runs to completion, which makes them atomic.

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._data[key] = (value, self._clock() + ttl)
        return True

    async def replace_if_unchanged(self, key: str, expected_sha1: str, value: bytes, *, ttl: float) -> bool:
        current = self._live(key)
        if current is None or record_version(current) != expected_sha1:
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

    async def index_add(self, key: str, member: str, *, ttl: float, value: bytes = b"1") -> None:
        members, expires = self._sets.get(key, ({}, 0.0))
        if expires <= self._clock():
            members = {}
        members[member] = value
        self._sets[key] = (members, max(expires, self._clock() + ttl))

    async def index_members(self, key: str) -> list[str]:
        return sorted(await self.index_entries(key))

    async def index_entries(self, key: str) -> dict[str, bytes]:
        members, expires = self._sets.get(key, ({}, 0.0))
        return dict(members) if expires > self._clock() else {}

    async def index_get(self, key: str, member: str) -> bytes | None:
        return (await self.index_entries(key)).get(member)

    async def index_remove(self, key: str, member: str) -> bool:
        members, _ = self._sets.get(key, ({}, 0.0))
        return members.pop(member, None) is not None

    async def hash_set(self, key: str, field: str, value: bytes) -> None:
        self._hashes.setdefault(key, {})[field] = value

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        return dict(self._hashes.get(key, {}))

    async def hash_delete(self, key: str, field: str) -> None:
        self._hashes.get(key, {}).pop(field, None)

    async def schedule(self, key: str, member: str, at: float) -> None:
        self._schedules.setdefault(key, {})[member] = at

    async def due(self, key: str, until: float, *, limit: int) -> list[str]:
        entries = sorted((at, member) for member, at in self._schedules.get(key, {}).items() if at <= until)
        return [member for _, member in entries[:limit]]

    async def unschedule(self, key: str, member: str) -> None:
        self._schedules.get(key, {}).pop(member, None)

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
        self._hashes.clear()
        self._schedules.clear()

    # -- abuse limits (bff.services.ratelimit): RedisStore's scripts, on this store's clock. No awaits, so each is
    # atomic on the one event loop; entries that no longer matter are swept as the maps grow.

    async def rate_limit(self, key: str, *, interval: float, burst: int) -> float:
        now = self._clock()
        tat = max(self._buckets.get(key, now), now)
        wait = tat + interval - now - interval * max(1, burst)
        if wait > 0:
            return wait
        if key not in self._buckets and len(self._buckets) % 1024 == 1023:
            for stale in [k for k, t in self._buckets.items() if t <= now]:
                del self._buckets[stale]
        self._buckets[key] = tat + interval
        return 0.0

    async def window_add(self, key: str, member: str, *, limit: int, window: float) -> float:
        now = self._clock()
        members, expires = self._windows.get(key, ({}, 0.0))
        members = {m: t for m, t in members.items() if t > now - window} if expires > now else {}
        limit = max(1, limit)
        if len(members) >= limit:
            added = sorted(members.values())
            return max(added[len(added) - limit] + window - now, 0.001)
        if key not in self._windows and len(self._windows) % 1024 == 1023:
            for stale in [k for k, (_, exp) in self._windows.items() if exp <= now]:
                del self._windows[stale]
        members[member] = now
        self._windows[key] = (members, now + window)
        return 0.0

    async def window_remove(self, key: str, member: str) -> None:
        members, _ = self._windows.get(key, ({}, 0.0))
        members.pop(member, None)
        if not members:
            self._windows.pop(key, None)
