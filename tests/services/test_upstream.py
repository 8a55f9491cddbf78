"""The Kryptos API client (bff.services.upstream) against a real socket server that misbehaves the way real
servers do: it answers with keep-alive and then closes the idle connection."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest
import uvicorn

from bff.errors import BadGateway
from bff.services.upstream import KEEPALIVE_SECONDS, Upstream
from tests.support.settings import minimal_settings

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class ClosingServer:
    """Answers the first request of each connection as if it would keep it open, and drops the connection when
    the next request arrives on it (an idle timeout firing just as the client reuses the connection). Counts
    the requests that arrived."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answered in (True, False):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            self.requests += 1
            if answered:
                writer.write(ANSWER)
                await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def closing_server() -> AsyncIterator[ClosingServer]:
    server = ClosingServer()
    server.server = await asyncio.start_server(server._handle, "127.0.0.1", 0)
    yield server
    server.server.close()
    await server.server.wait_closed()


async def _twice(upstream: Upstream, server: ClosingServer, method: str) -> None:
    for _ in range(2):  # the second goes out on the pooled connection, which the server drops
        answer = await upstream.send("data", method, server.url + "/v1/x", {}, b"{}" if method == "POST" else None)
        assert answer.status == 200
        await Upstream.read(answer)


async def test_an_idempotent_call_on_a_connection_the_server_closed_is_sent_again(  # by bff.services.http1
    closing_server: ClosingServer,
) -> None:
    upstream = Upstream(minimal_settings(data_api_url=closing_server.url))
    try:
        await _twice(upstream, closing_server, "GET")
    finally:
        await upstream.aclose()
    assert closing_server.requests == 3  # the second was dropped with its connection, and sent again


async def test_a_post_on_a_closed_connection_is_not_sent_twice(closing_server: ClosingServer) -> None:
    # A POST may have reached the server (a single-use public token spent): it fails as 502, once.
    upstream = Upstream(minimal_settings(data_api_url=closing_server.url))
    try:
        with pytest.raises(BadGateway):
            await _twice(upstream, closing_server, "POST")
    finally:
        await upstream.aclose()
    assert closing_server.requests == 2  # the dropped one is not sent again


def test_idle_connections_are_dropped_before_servers_drop_them() -> None:
    # uvicorn (bff serve, the emulator) closes idle connections after its timeout_keep_alive; reusing one
    # just then loses the request. The pool lets go first.
    server_idle = inspect.signature(uvicorn.Config.__init__).parameters["timeout_keep_alive"].default
    assert server_idle > KEEPALIVE_SECONDS
