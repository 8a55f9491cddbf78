"""The HTTP/1.1 protocol of ``bff serve``: uvicorn's httptools protocol plus the bounds it lacks.

uvicorn (0.54, httptools/llhttp) sets no limit on a request head: any size (``h11_max_incomplete_event_size``
applies to h11 only), any number of headers, and no deadline between accepting a connection (or the first
byte of the next request on a kept-alive one) and the end of the head, so a client sending one header byte
now and then holds a socket for ever (slowloris). ``limit_concurrency`` would not help: it counts such
sockets against everyone else's requests. This subclass adds, per connection:

- a head deadline, ``BFF_HEADER_TIMEOUT`` (10 s): from the accept, or from the first byte after the previous
  request, to the end of the headers; then 408 (when a request had begun) and the connection is closed;
- a head size bound, ``BFF_MAX_HEADER_BYTES`` (16 KiB), counted as the bytes arrive, so no more than that
  plus one socket read is ever buffered for a head: 431 and close;
- a header count bound, ``BFF_MAX_REQUEST_HEADERS`` (100): 431 and close;
- ``scope["extensions"]["bff.client"]["gone"]``, a callable telling :mod:`bff.web.edge` that the client hung up before
  its answer was sent (an access line with status 499, not a 200 nobody received);
- one ``send()`` per answer instead of two: uvicorn writes an answer's head and its body separately, and on the
  hot path each write is a system call; the head is held (:class:`_OneWrite`) until the body's first bytes or the
  end of the event loop's iteration, whichever comes first.

The app never sees a refused request. The answer is problem+json like every error here, with
``Connection: close``; it is counted in ``bff_connections_refused_total{reason}`` and ``bff_errors_total{code}``
and not logged (whoever sends such requests must not be able to fill the logs).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bff import metrics
from bff.config import Settings
from bff.errors import PROBLEM_JSON, BffError, HeaderFieldsTooLarge, RequestTimeout, problem_body


@dataclass(frozen=True)
class HeadLimits:
    max_headers: int = 100
    max_bytes: int = 16 * 1024
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(settings.max_request_headers, settings.max_header_bytes, settings.header_timeout)


class _OneWrite:
    """What uvicorn's request cycle writes to: bytes written in one event-loop iteration leave in one write.

    The head of an answer and its body are written by two ASGI messages handled in a row; held here, they go out
    joined at the second write, or on their own at the end of the iteration (``call_soon``), so nothing waits
    longer than the loop already would. Closing sends what is held first. Everything else is the transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = held + data

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's own
        return getattr(self._transport, name)


class _HeadTooLarge(Exception):
    """Raised from a parser callback: it stops the parser (httptools re-raises it as the error's context)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeadLimits = HeadLimits(),
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._awaiting_head = True  # the next bytes belong to a request head
        self._head_begun = False  # a byte of that head has been parsed
        self._head_bytes = 0  # bytes received for it before the current read
        self._read_size = 0  # bytes in the current read
        self._head_timer: asyncio.TimerHandle | None = None
        self._one_write: _OneWrite | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._one_write = _OneWrite(transport, self.loop)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, plus the refusals below (its version answers every parser error 400 with a warning).
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self._arm_head_timer()
        self._read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse_head_too_large()
            else:
                self._invalid_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._invalid_request()
            return
        if self._awaiting_head and self._head_begun:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_bytes:
                self._refuse_head_too_large()

    def _invalid_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_head = self._head_begun = True
        self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own (a call to it would cost more than the check), then the count: stop parsing at once.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        if len(self.headers) > self.limits.max_headers:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        # The head is at most what arrived since it began, this read included: add it up only when that could
        # be over the bound (a head arriving in one small read costs nothing here).
        if self._head_bytes + self._read_size > self.limits.max_bytes and self._head_size() > self.limits.max_bytes:
            raise _HeadTooLarge
        self._awaiting_head = self._head_begun = False
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not after a WebSocket upgrade
            self.scope.setdefault("extensions", {})["bff.client"] = {"gone": lambda: cycle.disconnected}
            cycle.transport = self._one_write  # type: ignore[assignment]

    def _head_size(self) -> int:
        # "METHOD target HTTP/1.1\r\n" (16 bytes besides the target at most), each "name: value\r\n", "\r\n".
        return len(self.url) + 16 + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True  # whatever arrives next begins another request

    # The head deadline and the refusals

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self._response_in_progress():  # a pipelined head: its turn comes after this answer
            self._arm_head_timer()
            return
        metrics.connections_refused.labels(reason="header_timeout").inc()
        if self._head_begun:
            detail = f"The request's headers did not arrive within {self.limits.timeout:g} seconds."
            self._refuse(RequestTimeout(detail))
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _refuse_head_too_large(self) -> None:
        metrics.connections_refused.labels(reason="headers_too_large").inc()
        detail = (
            f"The request's headers are too large: at most {self.limits.max_headers} headers "
            f"and {self.limits.max_bytes} bytes."
        )
        self._refuse(HeaderFieldsTooLarge(detail))

    def _response_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, exc: BffError) -> None:
        self._cancel_head_timer()
        self._awaiting_head = False
        if self._response_in_progress():  # bytes written now would land inside another answer
            self.transport.close()
            return
        body = problem_body(exc)
        head = (
            f"HTTP/1.1 {exc.status} {exc.title}\r\n"
            f"content-type: {PROBLEM_JSON}\r\n"
            f"content-length: {len(body)}\r\n"
            "cache-control: no-store\r\n"
            "x-content-type-options: nosniff\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
