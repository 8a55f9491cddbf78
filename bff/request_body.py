"""Reading a request body with a bound: the one way handlers here read one.

A declared ``Content-Length`` over the bound (or not a number) is refused before anything is read; a body
without one (chunked) is counted as it arrives and refused as soon as it passes the bound, so a client can
never make a process buffer more than ``limit`` bytes. Chunks are joined once, at the end (appending to a
``bytes`` object per chunk is quadratic).

A client that hangs up mid-body makes Starlette raise :class:`starlette.requests.ClientDisconnect` here; it
is deliberately not caught: :class:`bff.edge.EdgeMiddleware` turns it into a 499 access line, never a 500.
"""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is larger than the caller's bound, or its ``Content-Length`` is not a number."""


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
