"""A keep-alive HTTP/1.1 client for Kryptos's APIs: each request written as one buffer, each answer parsed by
httptools (llhttp, the parser of Node.js and of uvicorn's server side, already a dependency through
``uvicorn[standard]``).

It replaced aiohttp on the hot path because aiohttp was a quarter of bff's CPU per proxied request; the
numbers, and the candidates that lost (pyreqwest), are in ``bench/README.md`` ("Candidates"). It does what
the upstream calls need and nothing else:

- a pool of kept-alive connections per origin (LIFO, so a burst reuses the warmest), at most ``limit``
  open to one origin (callers beyond it wait their turn); an idle connection is not reused after
  ``keepalive`` seconds (:data:`bff.services.upstream.KEEPALIVE_SECONDS` says why);
- one deadline per request, from before the connection to the answer's last byte: ``TimeoutError``;
- a request that fails on a *reused* connection before any byte of its answer arrived (the server closed the
  idle connection just then) is sent once more on a new connection, only when its method is idempotent
  (RFC 9110 §9.2.2); a POST or PATCH may have reached the server, so it fails (``HttpError``);
- a caller cancelled while it waits (its own client hung up) closes the connection: the answer would
  otherwise arrive on a pooled connection and be taken for the next request's;
- bodies come back as the server encoded them (no decompression); no redirect is followed; no cookie is kept;
  no proxy is taken from the environment; HTTPS through the default trust store;
- the answer's body is buffered as it arrives; past :data:`_HIGH_WATER` unread bytes the socket is paused
  until the reader catches up, so a large answer streamed to a slow browser is never held whole;
- a header name or value, or a target, with a CR or LF is refused before anything is sent (no request
  splitting); so is ``HEAD``, whose answer's length the parser would misjudge.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_HIGH_WATER = 256 * 1024  # unread body bytes before the socket is paused
_AUTHORITY_END = re.compile(r"[/?#]")


class HttpError(Exception):
    """The request failed: the server could not be reached, the connection was lost, or what came back is not
    HTTP/1.1. (A late answer is ``TimeoutError``.)"""


class _Stale(HttpError):
    """The connection was lost before any byte of the answer arrived."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class Answer:
    """An answer whose head has arrived: ``status``, ``headers`` (lower-case names, as bytes, in order) and
    ``content_length``; its body is read with :meth:`read` or :meth:`chunks`. :meth:`release` gives up the
    rest of the body (the connection is then closed, since its next bytes would be this body's)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_finished",
        "_waiter",
        "content_length",
        "headers",
        "status",
    )

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], conn: _Connection) -> None:
        self.status = status
        self.headers = headers
        length = self.header(b"content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._finished = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self) -> bytes:
        if self._finished and not self._error and len(self._chunks) <= 1:  # the common case: already complete
            return self._chunks.popleft() if self._chunks else b""
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._conn is not None and self._buffered < _HIGH_WATER:
                    self._conn.resume()
                yield chunk
            if self._error is not None:
                raise self._error
            if self._finished:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def release(self) -> None:
        if not self._finished and self._conn is not None:
            self._conn.close()
        self._chunks.clear()

    # Fed by the connection

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._finished = True
        self._conn = None
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._finished:
            self._error = error
            self._finished = True
            self._conn = None
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._waiter = None


class _Connection(asyncio.Protocol):
    """One connection to one origin, carrying one request at a time."""

    def __init__(self, pool: Http1Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None  # until the answer's head arrives
        self._answer: Answer | None = None  # until its last byte
        self._headers: list[tuple[bytes, bytes]] = []
        self._received = False  # a byte of the current answer arrived
        self._interim = False  # the message being parsed is a 1xx
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.pool._forget(self)
        if self._waiter is not None and not self._waiter.done():
            error = HttpError("connection lost") if self._received else _Stale("connection lost")
            self._waiter.set_exception(error)
        answer, self._answer = self._answer, None
        if answer is not None:
            if answer.content_length is None and answer.header(b"transfer-encoding") is None:
                answer._finish()  # a body delimited by the end of the connection (RFC 9112 §6.3)
            else:
                answer._fail(HttpError("the connection closed before the answer's end"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None and self._answer is None:  # bytes nobody asked for: this connection is unusable
            self.close()
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken(HttpError("the answer is not HTTP/1.1"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100, 103): the real one follows on this connection
            self._interim = True
            return
        self._interim = False
        answer = self._answer = Answer(status, self._headers, self)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def on_body(self, body: bytes) -> None:
        if self._answer is not None:
            self._answer._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        answer, self._answer = self._answer, None
        self._cancel_timer()
        if answer is not None:
            answer._finish()
        if self.parser.should_keep_alive() and not self.closed:
            self.pool._put_back(self)
        else:
            self.close()

    # Used by the pool and the answer

    async def send(self, request: bytes, deadline: float) -> Answer:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._received = False
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._waiter = waiter
        self._timer = loop.call_at(deadline, self._timed_out)
        self.transport.write(request)
        try:
            return await waiter
        except asyncio.CancelledError:  # the caller gave up (its client hung up): the answer is nobody's now
            self.close()
            raise

    def _timed_out(self) -> None:
        self._timer = None
        self._broken(TimeoutError())

    def _broken(self, error: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self._waiter = None
        answer, self._answer = self._answer, None
        if answer is not None:
            answer._fail(error)
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            if self.transport is not None:
                self.transport.abort()
            self.pool._forget(self)


class Http1Pool:
    """Connections to any number of origins; :meth:`request` sends one request and returns its :class:`Answer`."""

    def __init__(self, *, limit: int = 100, keepalive: float = 4.0) -> None:
        self.limit = limit
        self.keepalive = keepalive
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._open: dict[Origin, set[_Connection]] = {}
        self._queue: dict[Origin, deque[asyncio.Future[None]]] = {}
        self._origins: dict[str, tuple[Origin, int]] = {}  # "scheme://authority" → origin, its length
        self._tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"Http1Pool(origins={len(self._open)})"

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float,  # noqa: ASYNC109 (the deadline is the connection's timer, not a wrapper around the call)
        connect_timeout: float,
    ) -> Answer:
        if method == "HEAD":  # its answer has no body whatever its Content-Length: the parser is not told so
            raise ValueError("HEAD is not supported")
        origin, target = self._split(url)
        request = _request_bytes(method, target, origin.host_header, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for attempt in (1, 2):
            conn, reused = await self._connection(origin, deadline, connect_timeout)
            try:
                return await conn.send(request, deadline)
            except _Stale:
                if not reused or attempt == 2 or method not in _IDEMPOTENT:
                    raise HttpError("the connection closed before the answer") from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for conns in list(self._open.values()):
            for conn in list(conns):
                conn.close()
        for waiters in self._queue.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(HttpError("the client is closed"))

    # Connections

    def _split(self, url: str) -> tuple[Origin, str]:
        # The origin part of a URL is one of a handful (the API bases): parsed once, then found by prefix.
        scheme_end = url.find("://")
        end = _AUTHORITY_END.search(url, scheme_end + 3) if scheme_end > 0 else None
        prefix = url if end is None else url[: end.start()]
        found = self._origins.get(prefix)
        if found is None:
            parts = urlsplit(prefix)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("only http and https URLs with a host")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found = self._origins[prefix] = (Origin(parts.scheme, parts.hostname, port), len(prefix))
        origin, length = found
        target = url[length:]
        return origin, target if target.startswith("/") else "/" + target

    async def _connection(self, origin: Origin, deadline: float, connect_timeout: float) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        idle = self._idle.setdefault(origin, deque())
        open_ = self._open.setdefault(origin, set())
        while True:
            while idle:
                conn = idle.pop()
                if not conn.closed and loop.time() - conn.idle_since < self.keepalive:
                    return conn, True
                conn.close()
            if len(open_) < self.limit:
                break
            waiter = loop.create_future()  # wait for a connection to come back or close
            self._queue.setdefault(origin, deque()).append(waiter)
            async with asyncio.timeout_at(deadline):
                await waiter
        conn = _Connection(self, origin)
        open_.add(conn)
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + connect_timeout)):
                await loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=self._tls_context() if origin.scheme == "https" else None,
                )
        except TimeoutError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            raise HttpError(f"could not connect: {type(exc).__name__}") from exc
        return conn, False

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _put_back(self, conn: _Connection) -> None:
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, deque()).append(conn)
        self._next_in_line(conn.origin)

    def _forget(self, conn: _Connection) -> None:
        self._open.get(conn.origin, set()).discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        self._next_in_line(conn.origin)

    def _next_in_line(self, origin: Origin) -> None:
        queue = self._queue.get(origin)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _request_bytes(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # Every CR and LF must be one this function wrote: one of each per line.
    if head.count("\r") != len(lines) + 1 or head.count("\n") != len(lines) + 1:
        raise ValueError("a CR or LF in the request target or a header")
    return head.encode("latin-1") + body if body else head.encode("latin-1")
