"""The Redis implementation of :class:`~bff.sessions.store.KeyValueStore` (redis-py asyncio), for every topology.

``BFF_REDIS_URL`` picks the topology; one :class:`RedisStore` serves them all (it only needs a client):

- ``redis://[[user]:password@]host[:6379][/db]`` — one server; ``rediss://`` for TLS.
- ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/<service>[/<db>][?sentinel_password=…]`` —
  Redis Sentinel: the sentinels are asked for the current master of ``<service>``, and asked again after a
  failover. The URL's password authenticates to the data nodes; ``sentinel_password`` to the sentinels.
  ``rediss+sentinel://`` uses TLS to the data nodes (the sentinels are spoken to in plain TCP).
- ``redis+cluster://[[user]:password@]host1:6379,host2:6379`` — Redis Cluster; the hosts are only the
  first contact, the client learns every node and slot from them. ``rediss+cluster://`` for TLS.

The URL itself is parsed by :mod:`bff.sessions.redis_url`.

TLS always verifies the server's certificate, against ``BFF_REDIS_TLS_CA_FILE`` when set. The keys of one
session share a hash tag (:mod:`bff.sessions.store`), and each Lua script here touches one key, so on
Cluster every script runs on the shard that owns its key.

Every call is bounded by what is left of the request's Redis budget (:class:`~bff.sessions.store.RedisBudget`),
and every redis-py exception is translated here into :class:`~bff.errors.SessionStoreUnavailable` (503
``session_store_unavailable``), so nothing above this module knows redis-py exists. When tracing is on
(:mod:`bff.tracing`), each call made for a request is a span named by its Redis command, never its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from bff import metrics, tracing
from bff.errors import SessionStoreUnavailable
from bff.sessions.redis_url import RedisUrl, parse_redis_url, standalone_url
from bff.sessions.store import redis_budget

_UNAVAILABLE = "The session store did not answer; try again shortly."


# RedisClusterException (no slot coverage, cluster unreachable at start) is not a RedisError; TimeoutError is
# the request's Redis budget (or the store's own timeout) running out.
_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


# Compare-and-act in one step on the server, so a lock is renewed or released only by its owner.
_EXPIRE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# An index is a small hash (members as fields, each with a short value): hashes stay listpack-encoded while
# small (by default up to 128 fields of at most 64 bytes) on every Redis version, a few times smaller than a
# set of one member. Then lengthen (never shorten) its TTL; a script
# rather than PEXPIRE GT, which needs Redis 7.
_INDEX_ADD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
# Compare-and-set: write only while the key holds the very value the caller read (by its SHA-1), so an update
# from a stale copy (another replica's cache, a logout that landed in between) changes nothing.
_REPLACE_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if current and redis.sha1hex(current) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


FEED_PING_INTERVAL = 1.0  # seconds between PINGs on the pub/sub connection
FEED_DEADLINE = 3.0  # seconds without hearing anything (a PONG, a message) before the feed counts as dead
_FEED_PING = "bff-feed"


class _ReconnectWatch:
    """Told by redis-py whenever the pub/sub connection connects again (it keeps only a weak reference to a
    bound method, so this small object lives as long as the subscription)."""

    def __init__(self) -> None:
        self.reconnected = False

    async def on_connect(self, connection: object) -> None:
        self.reconnected = True


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _describe(scheme: str, hosts: Sequence[tuple[str, int]], extra: str = "") -> str:
    return f"RedisStore({scheme}://{','.join(f'{h}:{p}' for h, p in hosts)}{extra})"


class RedisStore:
    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        description: str = "RedisStore(...)",
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
        timeout: float = 2.0,
    ) -> None:
        self._redis = client
        self._timeout = timeout
        self._description = description
        self._on_close = tuple(on_close)
        # Each script names its one key in KEYS, so RedisCluster routes it by that key's slot.
        self._expire_if_equal = client.register_script(_EXPIRE_IF_EQUAL)
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._index_add = client.register_script(_INDEX_ADD)
        self._replace_if_unchanged = client.register_script(_REPLACE_IF_UNCHANGED)

    @classmethod
    def from_url(cls, url: str, *, ca_file: str | None = None, timeout: float = 2.0) -> RedisStore:
        """A store for any ``BFF_REDIS_URL`` form in the module docstring; connects lazily, on first use."""
        parsed = parse_redis_url(url)
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One quick retry covers a dropped pooled connection (and, behind Sentinel, re-asks the
            # sentinels for the master after a failover); more would only delay the 503. The asyncio Retry:
            # the synchronous one, given to an asyncio client, returns the coroutine and never retries.
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
            "health_check_interval": 30,
            "max_connections": 256,
        }
        if parsed.base == "rediss":
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            if ca_file:
                options["ssl_ca_certs"] = ca_file
        if parsed.topology == "sentinel":
            return cls._sentinel(parsed, options, timeout=timeout)
        if parsed.topology == "cluster":
            return cls._cluster(parsed, options, timeout=timeout)
        standalone = standalone_url(parsed)
        description = _describe(parsed.base, parsed.hosts)
        return cls(Redis.from_url(standalone, **options), description=description, timeout=timeout)

    @classmethod
    def _sentinel(cls, parsed: RedisUrl, options: dict[str, Any], *, timeout: float) -> RedisStore:
        service = parsed.path[0]
        query = dict(parsed.query)
        sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
        if "sentinel_password" in query:
            sentinel_options["password"] = query["sentinel_password"]
        hosts = list(parsed.hosts)
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]  # untyped in redis-py
        client = sentinel.master_for(
            service,
            db=parsed.db,
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.base == "rediss",
            **options,
        )
        return cls(
            client,
            description=_describe(parsed.scheme, hosts, f"/{service}"),
            on_close=[s.aclose for s in sentinel.sentinels],
            timeout=timeout,
        )

    @classmethod
    def _cluster(cls, parsed: RedisUrl, options: dict[str, Any], *, timeout: float) -> RedisStore:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.base == "rediss",
            **options,
        )
        return cls(client, description=_describe(parsed.scheme, parsed.hosts), timeout=timeout)

    def __repr__(self) -> str:
        return self._description

    @asynccontextmanager
    async def _guarded(self, command: str, script: str | None = None) -> AsyncIterator[None]:
        """One store call: bounded by what is left of the request's Redis budget (else the store's timeout),
        every failure translated into 503 ``session_store_unavailable``; inside a traced request, a span named
        by the Redis ``command`` (and the ``script``'s name), never by the key or the value."""
        budget = redis_budget.get()
        limit = self._timeout if budget is None else min(budget.left, self._timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if limit <= 0:
                raise TimeoutError("the request's Redis budget is spent")
            with tracing.redis_span(command, script):
                async with asyncio.timeout(limit):
                    yield
        except _FAILURES as exc:
            metrics.redis_errors.inc()
            raise SessionStoreUnavailable(_UNAVAILABLE) from exc
        finally:
            if budget is not None:
                budget.left -= loop.time() - started

    async def get(self, key: str) -> bytes | None:
        async with self._guarded("GET"):
            value = await self._redis.get(key)
        return cast("bytes | None", value)

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        async with self._guarded("SET"):
            await self._redis.set(key, value, px=_ms(ttl))

    async def get_and_delete(self, key: str) -> bytes | None:
        async with self._guarded("GETDEL"):
            value = await self._redis.getdel(key)
        return cast("bytes | None", value)

    async def delete(self, key: str) -> None:
        async with self._guarded("DEL"):
            await self._redis.delete(key)

    async def replace_if_unchanged(self, key: str, expected_sha1: str, value: bytes, *, ttl: float) -> bool:
        async with self._guarded("EVALSHA", "replace_if_unchanged"):
            return bool(await self._replace_if_unchanged(keys=[key], args=[expected_sha1, value, _ms(ttl)]))

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        async with self._guarded("SET"):
            return bool(await self._redis.set(key, value, px=_ms(ttl), nx=True))

    async def expire_if_equal(self, key: str, value: bytes, *, ttl: float) -> bool:
        async with self._guarded("EVALSHA", "expire_if_equal"):
            return bool(await self._expire_if_equal(keys=[key], args=[value, _ms(ttl)]))

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        async with self._guarded("EVALSHA", "delete_if_equal"):
            return bool(await self._delete_if_equal(keys=[key], args=[value]))

    async def index_add(self, key: str, member: str, *, ttl: float, value: bytes = b"1") -> None:
        async with self._guarded("EVALSHA", "index_add"):
            await self._index_add(keys=[key], args=[member, _ms(ttl), value])

    async def index_entries(self, key: str) -> dict[str, bytes]:
        return await self.hash_get_all(key)

    async def index_get(self, key: str, member: str) -> bytes | None:
        async with self._guarded("HGET"):
            value = await self._redis.hget(key, member)
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    async def index_members(self, key: str) -> list[str]:
        async with self._guarded("HKEYS"):
            members = await self._redis.hkeys(key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def index_remove(self, key: str, member: str) -> bool:
        async with self._guarded("HDEL"):
            return bool(await self._redis.hdel(key, member))

    async def hash_set(self, key: str, field: str, value: bytes) -> None:
        async with self._guarded("HSET"):
            await self._redis.hset(key, field, value)

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        async with self._guarded("HGETALL"):
            items = await self._redis.hgetall(key)
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in items.items()
        }

    async def hash_delete(self, key: str, field: str) -> None:
        async with self._guarded("HDEL"):
            await self._redis.hdel(key, field)

    async def schedule(self, key: str, member: str, at: float) -> None:
        async with self._guarded("ZADD"):
            await self._redis.zadd(key, {member: at})

    async def due(self, key: str, until: float, *, limit: int) -> list[str]:
        async with self._guarded("ZRANGEBYSCORE"):
            members = await self._redis.zrangebyscore(key, "-inf", until, start=0, num=limit)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def unschedule(self, key: str, member: str) -> None:
        async with self._guarded("ZREM"):
            await self._redis.zrem(key, member)

    async def publish(self, channel: str, message: bytes) -> None:
        async with self._guarded("PUBLISH"):
            await self._redis.publish(channel, message)

    async def subscribe(self, channel: str) -> AsyncIterator[bytes | None]:
        """Messages on ``channel``; None whenever the subscription is (re-)established.

        A subscription is trusted only while it is heard from: a PING goes out every
        :data:`FEED_PING_INTERVAL` seconds and its PONG must be back within :data:`FEED_DEADLINE`, else this
        raises (a connection that died silently — a host gone, packets dropped — sends no FIN and would
        otherwise look alive for minutes). redis-py reconnects and resubscribes a dropped pub/sub connection
        on its own; messages published in between are lost, so every reconnect yields None again and the
        caller treats it as a gap (it empties its cache).
        """
        pubsub = self._redis.pubsub()
        watch = _ReconnectWatch()
        connection = None
        loop = asyncio.get_running_loop()
        try:
            async with self._guarded("SUBSCRIBE"):
                await pubsub.subscribe(channel)
            connection = pubsub.connection
            if connection is not None:
                connection.register_connect_callback(watch.on_connect)
            yield None
            heard = pinged = loop.time()
            while True:
                now = loop.time()
                if now - heard > FEED_DEADLINE:
                    metrics.redis_errors.inc()
                    raise SessionStoreUnavailable("The session change feed stopped answering.")
                async with self._guarded("PING"):
                    if now - pinged >= FEED_PING_INTERVAL:
                        await pubsub.ping(_FEED_PING)
                        pinged = now
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if watch.reconnected:
                    watch.reconnected = False
                    heard = loop.time()
                    yield None
                if message is None:
                    continue
                heard = loop.time()
                if message.get("type") in ("message", "smessage"):
                    data = message["data"]
                    yield data if isinstance(data, bytes) else str(data).encode()
        finally:
            # After a failover the connection may be half-dead, and redis-py may already have dropped its
            # reference to it: close the socket we subscribed on all the same, or it leaks until GC.
            connection = connection or pubsub.connection
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):  # never let a dead server hold up shutdown
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)

    async def ping(self) -> None:
        async with self._guarded("PING"):
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
        for close in self._on_close:
            await close()

    # -- abuse limits (bff.services.ratelimit): one script on one key each, timed by the server's TIME so that every
    # replica agrees on "now" -------------------------------------------------------------------------------

    # GCRA: the key holds the bucket's theoretical arrival time (µs) and expires once the bucket is full again;
    # a refused request writes nothing.
    _RATE_LIMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '') or 0, now)
local wait = tat + interval - now - interval * tonumber(ARGV[2])
if wait > 0 then return wait end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', string.format('%d', math.ceil((tat - now) / 1000)))
return 0
"""
    # A sliding window: members scored by the time (ms) they were added, forgotten after the window; full
    # means "count >= limit", and the answer is then when the member that makes room falls out.
    _WINDOW_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if count >= limit then
  local edge = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return math.max(1, tonumber(edge[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

    @functools.cached_property
    def _rate_limit_script(self) -> AsyncScript:
        return self._redis.register_script(self._RATE_LIMIT)

    @functools.cached_property
    def _window_add_script(self) -> AsyncScript:
        return self._redis.register_script(self._WINDOW_ADD)

    async def rate_limit(self, key: str, *, interval: float, burst: int) -> float:
        args = [max(1, round(interval * 1_000_000)), max(1, burst)]
        async with self._guarded("EVALSHA", "rate_limit"):
            wait_us = await self._rate_limit_script(keys=[key], args=args)
        return int(wait_us) / 1_000_000

    async def window_add(self, key: str, member: str, *, limit: int, window: float) -> float:
        async with self._guarded("EVALSHA", "window_add"):
            wait_ms = await self._window_add_script(keys=[key], args=[member, max(1, limit), _ms(window)])
        return int(wait_ms) / 1000

    async def window_remove(self, key: str, member: str) -> None:
        async with self._guarded("ZREM"):
            await self._redis.zrem(key, member)
