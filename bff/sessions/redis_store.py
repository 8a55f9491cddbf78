"""The Redis implementation of :class:`~bff.sessions.store.KeyValueStore` (redis-py asyncio), for every topology.

``BFF_REDIS_URL`` picks the topology; one :class:`RedisStore` serves them all (it only needs a client):

- ``redis://[[user]:password@]host[:6379][/db]`` — one server; ``rediss://`` for TLS.
- ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/<service>[/<db>][?sentinel_password=…]`` —
  Redis Sentinel: the sentinels are asked for the current master of ``<service>``, and asked again after a
  failover. The URL's password authenticates to the data nodes; ``sentinel_password`` to the sentinels.
  ``rediss+sentinel://`` uses TLS to the data nodes (the sentinels are spoken to in plain TCP).
- ``redis+cluster://[[user]:password@]host1:6379,host2:6379`` — Redis Cluster; the hosts are only the
  first contact, the client learns every node and slot from them. ``rediss+cluster://`` for TLS.

TLS always verifies the server's certificate, against ``BFF_REDIS_TLS_CA_FILE`` when set. The keys of one
session share a hash tag (:mod:`bff.sessions.store`), and each Lua script here touches one key, so on
Cluster every script runs on the shard that owns its key.

Every redis-py exception is translated here into :class:`~bff.errors.SessionStoreUnavailable` (503
``session_store_unavailable``), so nothing above this module knows redis-py exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException, RedisError

from bff import metrics
from bff.errors import SessionStoreUnavailable

_UNAVAILABLE = "The session store did not answer; try again shortly."


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    # RedisClusterException (no slot coverage, cluster unreachable at start) is not a RedisError.
    except (RedisError, RedisClusterException, OSError) as exc:
        metrics.redis_errors.inc()
        raise SessionStoreUnavailable(_UNAVAILABLE) from exc


# Compare-and-act in one step on the server, so a lock is renewed or released only by its owner.
_EXPIRE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# An index is a small hash (members as fields): hashes stay listpack-encoded when small on every Redis
# version, a few times smaller than a set of one member. Then lengthen (never shorten) its TTL; a script
# rather than PEXPIRE GT, which needs Redis 7.
_INDEX_ADD = """
redis.call('HSET', KEYS[1], ARGV[1], '1')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """``[user[:password]@]host[:port][,host[:port]…]`` → (user, password, [(host, port), …])."""
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts: list[tuple[str, int]] = []
    for item in filter(None, hostlist.split(",")):
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"not a host[:port]: {item!r}")
        hosts.append((host, int(port) if port else default_port))
    if not hosts:
        raise ValueError("no host in the Redis URL")
    return unquote(user) or None, unquote(password) or None, hosts


def _describe(scheme: str, hosts: Sequence[tuple[str, int]], extra: str = "") -> str:
    return f"RedisStore({scheme}://{','.join(f'{h}:{p}' for h, p in hosts)}{extra})"


class RedisStore:
    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        description: str = "RedisStore(...)",
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._redis = client
        self._description = description
        self._on_close = tuple(on_close)
        # Each script names its one key in KEYS, so RedisCluster routes it by that key's slot.
        self._expire_if_equal = client.register_script(_EXPIRE_IF_EQUAL)
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._index_add = client.register_script(_INDEX_ADD)

    @classmethod
    def from_url(cls, url: str, *, ca_file: str | None = None, timeout: float = 2.0) -> RedisStore:
        """A store for any ``BFF_REDIS_URL`` form in the module docstring; connects lazily, on first use."""
        scheme, _, _ = url.partition("://")
        base, _, topology = scheme.partition("+")
        if base not in ("redis", "rediss") or topology not in ("", "sentinel", "cluster"):
            raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
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
        if base == "rediss":
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            if ca_file:
                options["ssl_ca_certs"] = ca_file
        if topology == "sentinel":
            return cls._sentinel(url, options, tls=base == "rediss")
        if topology == "cluster":
            return cls._cluster(url, options, tls=base == "rediss")
        parts = urlsplit(url)
        description = _describe(base, [(parts.hostname or "localhost", parts.port or 6379)])
        return cls(Redis.from_url(url, **options), description=description)

    @classmethod
    def _sentinel(cls, url: str, options: dict[str, Any], *, tls: bool) -> RedisStore:
        parts = urlsplit(url)
        user, password, hosts = _hosts(parts.netloc, 26379)
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("a Sentinel URL names its service: redis+sentinel://host:26379,…/<service>[/<db>]")
        query = parse_qs(parts.query)
        sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
        if "sentinel_password" in query:
            sentinel_options["password"] = query["sentinel_password"][0]
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]  # untyped in redis-py
        client = sentinel.master_for(
            path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=user,
            password=password,
            ssl=tls,
            **options,
        )
        return cls(
            client,
            description=_describe(parts.scheme, hosts, f"/{path[0]}"),
            on_close=[s.aclose for s in sentinel.sentinels],
        )

    @classmethod
    def _cluster(cls, url: str, options: dict[str, Any], *, tls: bool) -> RedisStore:
        parts = urlsplit(url)
        user, password, hosts = _hosts(parts.netloc, 6379)
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("Redis Cluster has only database 0")
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in hosts],
            username=user,
            password=password,
            ssl=tls,
            **options,
        )
        return cls(client, description=_describe(parts.scheme, hosts))

    def __repr__(self) -> str:
        return self._description

    async def get(self, key: str) -> bytes | None:
        # The hot path: the same translation as _translated(), without a context manager per call.
        try:
            value = await self._redis.get(key)
        except (RedisError, RedisClusterException, OSError) as exc:
            metrics.redis_errors.inc()
            raise SessionStoreUnavailable(_UNAVAILABLE) from exc
        return cast("bytes | None", value)

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        async with _translated():
            await self._redis.set(key, value, px=_ms(ttl))

    async def get_and_delete(self, key: str) -> bytes | None:
        async with _translated():
            value = await self._redis.getdel(key)
        return cast("bytes | None", value)

    async def delete(self, key: str) -> None:
        async with _translated():
            await self._redis.delete(key)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        async with _translated():
            return bool(await self._redis.set(key, value, px=_ms(ttl), nx=True))

    async def expire_if_equal(self, key: str, value: bytes, *, ttl: float) -> bool:
        async with _translated():
            return bool(await self._expire_if_equal(keys=[key], args=[value, _ms(ttl)]))

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        async with _translated():
            return bool(await self._delete_if_equal(keys=[key], args=[value]))

    async def index_add(self, key: str, member: str, *, ttl: float) -> None:
        async with _translated():
            await self._index_add(keys=[key], args=[member, _ms(ttl)])

    async def index_members(self, key: str) -> list[str]:
        async with _translated():
            members = await self._redis.hkeys(key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def publish(self, channel: str, message: bytes) -> None:
        async with _translated():
            await self._redis.publish(channel, message)

    async def subscribe(self, channel: str) -> AsyncIterator[bytes | None]:
        pubsub = self._redis.pubsub()
        connection = None
        try:
            async with _translated():
                await pubsub.subscribe(channel)
            connection = pubsub.connection
            yield None
            while True:
                async with _translated():
                    # A bounded wait, so a dead connection is noticed (the read raises) even when idle.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") in ("message", "smessage"):
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
        async with _translated():
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
        for close in self._on_close:
            await close()
