"""A short-lived in-process copy of sessions read from Redis, correct across replicas.

Reading a session is a Redis round trip plus decryption on every API call; most calls of a user come in
bursts, so each process keeps what it read for a few seconds. It stays correct across replicas because
every change to a session anywhere (save, refresh, logout, back-channel logout, expiry) is published on
one Redis channel, and every process drops its copy when it hears of it
(:meth:`~bff.sessions.manager.SessionManager.follow_changes`):

* the cache is used only while this process's subscription is known to be live. It is trusted only while
  it is heard from: a PING goes out every second and its PONG must come back within three
  (:data:`~bff.sessions.redis_store.FEED_DEADLINE`), so a connection that died silently (no FIN: a host
  gone, packets dropped, Redis frozen) is given up within seconds, not when TCP notices minutes later. A
  closed connection is noticed at the next read;
* redis-py re-establishes a dropped subscription by itself, and what was published in between is lost: every
  re-subscription therefore empties the cache (a gap), as does losing the feed, after which the cache is
  bypassed until the subscription is back;
* a read that raced with a change is not cached: every drop bumps an epoch, and a copy is stored only if
  no drop happened while it was being read;
* an entry lives at most ``ttl`` seconds (``BFF_SESSION_CACHE_SECONDS``, at most 60) even if all else failed;
* refreshing tokens (under the refresh lock) always reads Redis, never this cache;
* a stale copy can never be written back: session updates are compare-and-set against the version read,
  and an ended session leaves a tombstone (:mod:`bff.sessions.manager`).

The remaining window is the publish latency (well under a millisecond on a LAN) or, for a feed that died
silently, the PONG deadline: a request arriving on another replica within it may still see a session that
was just ended. Its tokens are already revoked at the provider by then, so an upstream call with them fails
and ends in 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bff.sessions.model import Session


class SessionCache:
    def __init__(self, *, ttl: float, max_entries: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[Session, float]] = {}
        self.epoch = 0
        self.live = False  # set while the invalidation subscription is up

    def __repr__(self) -> str:
        return f"SessionCache(entries={len(self._entries)}, live={self.live})"

    def get(self, key: str) -> Session | None:
        if not self.live:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: str, session: Session, *, epoch: int) -> None:
        """Keep ``session`` unless anything was dropped since ``epoch`` was read (a racing change)."""
        if not self.live or epoch != self.epoch:
            return
        if len(self._entries) >= self.max_entries:
            # Insertion order is age order: drop the older half.
            for old in list(self._entries)[: self.max_entries // 2]:
                del self._entries[old]
        self._entries[key] = (session, self._clock() + self.ttl)

    def drop(self, key: str) -> None:
        self.epoch += 1
        self._entries.pop(key, None)

    def clear(self, *, live: bool) -> None:
        self.epoch += 1
        self._entries.clear()
        self.live = live
