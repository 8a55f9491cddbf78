"""A deliberately ill-behaved upstream for the forwarder's header tests: it echoes what it received and
answers with headers that must never reach the browser (Set-Cookie, hop-by-hop)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


async def echo(request: Request) -> Response:
    body = {"path": request.url.path, "query": request.url.query, "headers": dict(request.headers)}
    return JSONResponse(
        body,
        headers={
            "Set-Cookie": "upstream_session=stolen; Path=/",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5",
            "X-Upstream-Internal": "should-not-pass",
            "Retry-After": "3",
        },
    )


async def big(request: Request) -> Response:
    chunk = b"x" * 65536

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MiB, streamed without a length
            yield chunk

    return StreamingResponse(gen(), media_type="application/octet-stream")


def echo_app() -> Starlette:
    return Starlette(routes=[Route("/v1/integrations", echo), Route("/v1/userinfo", big)])
