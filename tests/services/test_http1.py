"""The upstream HTTP/1.1 client (bff.services.http1) against real sockets: servers that answer late, in pieces,
too much, twice, or not at all, and callers that give up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bff.services.http1 import _HIGH_WATER, Http1Pool, HttpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Server:
    """A TCP server running ``handler`` per connection; counts connections, open ones, and bytes received."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self.received = b""
        self.closed_at: list[float] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self.closed_at.append(time.monotonic())
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


async def _head(reader: asyncio.StreamReader, server: Server) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    server.received += head
    return head


def keep_answering(answer: bytes = OK) -> Callable[[Server], Handler]:
    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await _head(reader, server)
                writer.write(answer)
                await writer.drain()

        return handler

    return make


async def _started(serve: Callable[[Handler], Awaitable[Server]], make: Callable[[Server], Handler]) -> Server:
    holder: list[Server] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await make(holder[0])(reader, writer)

    server = await serve(handler)
    holder.append(server)
    return server


async def _get(pool: Http1Pool, url: str, deadline: float = 5.0) -> tuple[int, bytes]:
    answer = await pool.request("GET", url, {"Accept": "application/json"}, None, timeout=deadline, connect_timeout=2)
    try:
        return answer.status, await answer.read()
    finally:
        answer.release()


async def test_connections_are_kept_alive_and_reused(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    server = await _started(serve, keep_answering())
    pool = Http1Pool()
    try:
        for _ in range(5):
            assert await _get(pool, server.url + "/v1/x?page=1") == (200, b"{}")
    finally:
        await pool.aclose()
    assert server.accepted == 1
    assert server.received.count(b"GET /v1/x?page=1 HTTP/1.1\r\n") == 5
    assert f"Host: {server.url.removeprefix('http://')}".encode() in server.received


async def test_an_idle_connection_is_not_reused_after_keepalive(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    server = await _started(serve, keep_answering())
    pool = Http1Pool(keepalive=0.2)
    try:
        await _get(pool, server.url + "/a")
        await asyncio.sleep(0.4)
        await _get(pool, server.url + "/b")
    finally:
        await pool.aclose()
    assert server.accepted == 2


@pytest.mark.parametrize(
    ("where", "headers", "target"),
    [
        ("value", {"Accept": "x\r\nX-Injected: 1"}, "/v1/x"),
        ("value LF", {"Accept": "x\nX-Injected: 1"}, "/v1/x"),
        ("name", {"X-A\r\nX-Injected": "1"}, "/v1/x"),
        ("target", {}, "/v1/x HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /"),
    ],
)
async def test_request_splitting_is_refused_before_a_byte_is_sent(
    serve: Callable[[Handler], Awaitable[Server]], where: str, headers: dict[str, str], target: str
) -> None:
    server = await _started(serve, keep_answering())
    pool = Http1Pool()
    try:
        with pytest.raises(ValueError, match="CR or LF"):
            await pool.request("GET", server.url + target, headers, None, timeout=2, connect_timeout=2)
    finally:
        await pool.aclose()
    assert server.accepted == 0
    assert server.received == b""


async def test_head_is_refused(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    server = await _started(serve, keep_answering())
    pool = Http1Pool()
    with pytest.raises(ValueError, match="HEAD"):
        await pool.request("HEAD", server.url + "/", {}, None, timeout=2, connect_timeout=2)
    await pool.aclose()
    assert server.accepted == 0


async def test_a_server_that_never_answers_times_out_and_its_connection_is_closed(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # until the client closes

    server = await serve(silent)
    pool = Http1Pool()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await _get(pool, server.url + "/", deadline=0.5)
    waited = time.monotonic() - started
    await asyncio.sleep(0.2)
    await pool.aclose()
    print(f"timed out after {waited:.3f} s")
    assert 0.5 <= waited < 3.0
    assert server.closed_at and server.closed_at[0] - started < 3.0  # the client hung up, not the server


async def test_a_caller_that_gives_up_closes_its_connection(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    # The late answer must not arrive on a pooled connection, to be read as the next request's: the connection
    # goes, and the server sees it go.
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader, server)
        await reader.read()  # b"" once the client closes; the answer would come later

    server = await serve(slow)
    pool = Http1Pool()
    call = asyncio.create_task(_get(pool, server.url + "/slow"))
    await asyncio.sleep(0.2)
    cancelled_at = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(50):
        if server.closed_at:
            break
        await asyncio.sleep(0.02)
    await pool.aclose()
    assert server.closed_at, "the abandoned connection was left open"
    print(f"closed {server.closed_at[0] - cancelled_at:.3f} s after the cancel")
    assert server.closed_at[0] - cancelled_at < 1.0


async def test_a_large_answer_is_not_buffered_whole_while_nobody_reads_it(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    size = 8 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    server = await serve(big)
    pool = Http1Pool()
    answer = await pool.request("GET", server.url + "/big", {}, None, timeout=10, connect_timeout=2)
    await asyncio.sleep(0.5)  # the server keeps writing; nobody reads
    buffered = answer._buffered
    total = 0
    async for chunk in answer.chunks():
        total += len(chunk)
    answer.release()
    await pool.aclose()
    print(f"buffered while unread: {buffered:,} bytes of {size:,}")
    assert _HIGH_WATER <= buffered < 2 * _HIGH_WATER
    assert total == size


async def test_connections_to_one_origin_are_capped(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def slowish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _head(reader, server)
            await asyncio.sleep(0.1)
            writer.write(OK)
            await writer.drain()

    server = await serve(slowish)
    pool = Http1Pool(limit=2)
    try:
        results = await asyncio.gather(*(_get(pool, server.url + f"/{i}") for i in range(6)))
    finally:
        await pool.aclose()
    assert results == [(200, b"{}")] * 6
    assert server.most_open == 2
    assert server.accepted == 2


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, b"{}"),
    ],
    ids=["chunked", "interim 103"],
)
async def test_answers_in_other_shapes(
    serve: Callable[[Handler], Awaitable[Server]], answer: bytes, body: bytes
) -> None:
    server = await _started(serve, keep_answering(answer))
    pool = Http1Pool()
    try:
        assert await _get(pool, server.url + "/") == (200, body)
        assert await _get(pool, server.url + "/") == (200, body)
    finally:
        await pool.aclose()
    assert server.accepted == 1


async def test_a_body_ended_by_closing_the_connection(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    server = await serve(close_delimited)
    pool = Http1Pool()
    try:
        assert await _get(pool, server.url + "/") == (200, b"all of it")
        assert await _get(pool, server.url + "/") == (200, b"all of it")
    finally:
        await pool.aclose()
    assert server.accepted == 2


async def test_a_body_cut_short_is_an_error(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    server = await serve(short)
    pool = Http1Pool()
    with pytest.raises(HttpError):
        await _get(pool, server.url + "/")
    await pool.aclose()


async def test_what_is_not_http_is_an_error(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    server = await _started(serve, keep_answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    pool = Http1Pool()
    with pytest.raises(HttpError):
        await _get(pool, server.url + "/")
    await pool.aclose()


async def test_bytes_on_an_idle_connection_make_it_unusable(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    # A server that sends more than its answer (a second answer nobody asked for) must not have those bytes read
    # as the next request's answer.
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstale!"

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _head(reader, server)
            writer.write(OK)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(extra)
            await writer.drain()

    server = await serve(chatty)
    pool = Http1Pool()
    try:
        assert await _get(pool, server.url + "/1") == (200, b"{}")
        await asyncio.sleep(0.2)
        assert await _get(pool, server.url + "/2") == (200, b"{}")
    finally:
        await pool.aclose()
    assert server.accepted == 2


async def test_an_unreachable_server_is_an_http_error() -> None:
    pool = Http1Pool()
    with pytest.raises(HttpError):
        await _get(pool, "http://127.0.0.1:9/")  # discard: nothing listens there
    await pool.aclose()
