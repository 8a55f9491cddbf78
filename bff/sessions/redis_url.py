"""``BFF_REDIS_URL``, parsed by hand: every topology's form, without ever echoing a credential.

The forms (see :mod:`bff.sessions.redis_store` for what each connects to)::

    redis[s]://[[user]:password@]host[:6379][/db][?redis-py options]
    redis[s]+sentinel://[[user]:password@]host1:26379,host2:26379/<service>[/<db>][?sentinel_password=…]
    redis[s]+cluster://[[user]:password@]host1:6379,host2:6379

Credentials must be percent-encoded where RFC 3986 says so (``/``, ``?``, ``#``, ``@``); a URL that cannot
be read unambiguously is refused, and no error message quotes any part of it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode

from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

_SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a DNS name or an IPv4 address
_ENCODE_HINT = (
    "percent-encode '/', '?', '#' and '@' in the user name and password (%2F, %3F, %23, %40) and '@' in the query"
)
# Query parameters understood per topology; anything else is refused (a typo must not pass silently).
_QUERY_NAMES = {
    "": frozenset(URL_QUERY_ARGUMENT_PARSERS),  # redis-py's own URL options
    "sentinel": frozenset({"sentinel_password"}),
    "cluster": frozenset(),
}


@dataclass(frozen=True)
class RedisUrl:
    """A parsed ``BFF_REDIS_URL``. Its repr never shows the credentials or the query (``sentinel_password``)."""

    base: str  # "redis" or "rediss" (TLS)
    topology: str  # "", "sentinel" or "cluster"
    hosts: tuple[tuple[str, int], ...]
    path: tuple[str, ...]  # percent-decoded segments
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def scheme(self) -> str:
        return f"{self.base}+{self.topology}" if self.topology else self.base

    @property
    def db(self) -> int:
        number = self.path[1:2] if self.topology == "sentinel" else self.path[:1]
        return int(number[0]) if number else 0


def parse_redis_url(url: str) -> RedisUrl:
    """Split any ``BFF_REDIS_URL`` form by hand: scheme, userinfo (up to the authority's *last* ``@``, then
    percent-decoded), the comma-separated host list (``host[:port]`` or ``[IPv6]:port``), path and query.

    Not :func:`urllib.parse.urlsplit`: it refuses or mis-reads several hosts with an IPv6 literal depending on
    the Python patch release (3.11.2 raises "Invalid IPv6 URL"), and a raw ``#``, ``/`` or ``?`` in a password
    (RFC 3986 requires them percent-encoded in userinfo) silently moves part of the password into the host,
    path or fragment. Such a URL is refused here instead. No error message quotes any part of the URL.
    """
    scheme, sep, rest = url.partition("://")
    base, _, topology = scheme.partition("+")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(f"the scheme must be one of {', '.join(s + '://' for s in _SCHEMES)}")
    if any(c.isspace() or not c.isprintable() for c in rest):
        raise ValueError("must not contain spaces or control characters")
    # The authority ends at the first '/', '?' or '#'. An '@' after that point means a reserved character was
    # left raw in the password (or the query): the split would be a guess, so nothing is guessed.
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail or "#" in tail:
        raise ValueError(f"cannot be read unambiguously: {_ENCODE_HINT}; and no fragment ('#…')")
    path_part, _, query_part = tail.partition("?")
    userinfo, _, hostlist = authority.rpartition("@")
    user, _, password = userinfo.partition(":")
    default_port = 26379 if topology == "sentinel" else 6379
    items = hostlist.split(",") if hostlist else []
    hosts = tuple(_host_port(item, n, default_port) for n, item in enumerate(items, 1))
    if not hosts:
        raise ValueError("names no host")
    if not topology and len(hosts) > 1:
        raise ValueError("redis:// names one host; several are redis+sentinel:// or redis+cluster://")
    query = tuple(parse_qsl(query_part, keep_blank_values=True))
    for name, value in query:
        if name not in _QUERY_NAMES[topology]:
            raise ValueError(f"a query parameter is not one this URL form understands ({_ENCODE_HINT})")
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name) if not topology else None
        try:
            if parser is not None:
                parser(value)
        except (TypeError, ValueError):
            raise ValueError("a query parameter has an invalid value") from None
    path = tuple(unquote(p) for p in path_part.split("/") if p)
    _check_path(topology, path)
    return RedisUrl(
        base=base,
        topology=topology,
        hosts=hosts,
        path=path,
        username=unquote(user) or None,
        password=unquote(password) or None,
        query=query,
    )


def _host_port(item: str, n: int, default_port: int) -> tuple[str, int]:
    """``host[:port]`` or ``[IPv6]:port``; the error names the host's position, never its text."""
    if item.startswith("["):
        host, closed, after = item[1:].partition("]")
        port = after.removeprefix(":")
        valid = bool(closed) and (after == "" or after.startswith(":")) and _is_ipv6(host)
    else:
        host, _, port = item.partition(":")
        valid = _HOSTNAME.fullmatch(host) is not None
    if port == "" and not item.endswith(":"):
        number = default_port
    elif port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        number = int(port)
    else:
        valid = False
    if not valid:
        raise ValueError(f"host #{n} is not host[:port] or [IPv6]:port (if it is part of a password: {_ENCODE_HINT})")
    return host, number


def _check_path(topology: str, path: tuple[str, ...]) -> None:
    def number(segment: str) -> bool:
        return segment.isascii() and segment.isdigit()

    if topology == "sentinel":
        if not path or len(path) > 2 or (len(path) == 2 and not number(path[1])):
            raise ValueError("a Sentinel URL names its service: redis+sentinel://host:26379,…/<service>[/<db>]")
    elif topology == "cluster":
        if path not in ((), ("0",)):
            raise ValueError("Redis Cluster has only database 0")
    elif len(path) > 1 or (path and not number(path[0])):
        raise ValueError("the path of a redis:// URL is the database number: redis://host:6379/<db>")


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def standalone_url(parsed: RedisUrl) -> str:
    """The URL redis-py is given for one server: rebuilt from the parsed parts, every credential byte
    percent-encoded, so redis-py's own (urllib) parsing cannot mis-read it."""
    host, port = parsed.hosts[0]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    credentials = ""
    if parsed.username or parsed.password:
        credentials = quote(parsed.username or "", safe="")
        if parsed.password:
            credentials += ":" + quote(parsed.password, safe="")
        credentials += "@"
    query = urlencode(parsed.query)
    return f"{parsed.base}://{credentials}{netloc}/{parsed.db}" + (f"?{query}" if query else "")
