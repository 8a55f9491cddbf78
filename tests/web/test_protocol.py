"""``bff serve``'s protocol (bff.web.protocol) driven in process over a recording transport: what reaches the
socket, and in how many writes."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from bff.web.protocol import BoundedHttpToolsProtocol, _OneWrite


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _buffered(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _streamed(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for chunk in (b"one", b"two"):
        await asyncio.sleep(0.01)  # each chunk in a later iteration of the loop
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _serve_one(app: Any, request: bytes) -> RecordingTransport:
    config = Config(app=app, log_config=None, lifespan="off")
    config.load()
    protocol = BoundedHttpToolsProtocol(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.gather(*list(protocol.server_state.tasks))
    await asyncio.sleep(0.05)  # what is held goes out at the end of the loop's iteration
    protocol.connection_lost(None)
    return transport


async def test_a_buffered_answer_leaves_in_one_write() -> None:
    transport = await _serve_one(_buffered, b"GET / HTTP/1.1\r\nHost: bff\r\n\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n{}")


async def test_a_streamed_answer_is_not_held_back() -> None:
    # The head goes out at the end of its iteration, before the first chunk exists; each chunk as it comes (the
    # last with the end of the body, written in the same iteration).
    transport = await _serve_one(_streamed, b"GET / HTTP/1.1\r\nHost: bff\r\n\r\n")
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n")
    assert transport.writes[1:] == [b"3\r\none\r\n", b"3\r\ntwo\r\n0\r\n\r\n"]


async def test_closing_sends_what_is_held_first() -> None:
    transport = RecordingTransport()
    one = _OneWrite(transport, asyncio.get_running_loop())
    one.write(b"head")
    one.write(b"body")
    assert transport.writes == []
    one.close()
    assert transport.writes == [b"headbody"]
    assert transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
    assert transport.writes == [b"headbody"]
