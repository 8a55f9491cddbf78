"""The Kryptos APIs (data and connect) as one pooled aiohttp client: send a request, read or stream its body.

aiohttp is used on this hot path because it measured 3,200 req/s here against 735 for httpx2 (see
``bench/README.md``). Its exceptions are translated where they enter: unreachable → 502
``upstream_unavailable``, too slow → 504 ``upstream_timeout``. Redirects are never followed, cookies are
neither kept nor sent, and bodies pass through as the upstream encoded them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from bff import metrics, tracing
from bff.config import Settings
from bff.errors import BadGateway, GatewayTimeout

Answer = aiohttp.ClientResponse

# Idle pooled connections are dropped after this many seconds: sooner than servers close them (uvicorn after
# 5 s, load balancers commonly after 60 s), so a request is never sent on a connection the server is closing
# at that very moment (it would fail, and a POST cannot be retried blindly).
KEEPALIVE_SECONDS = 4.0
# (aiohttp itself sends an idempotent request once more when a reused connection turns out closed,
# RFC 9110 §9.2.2; a POST it must not, and cannot.)


class Upstream:
    """One connection pool for every call to Kryptos's APIs, opened in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.bases = {"data": settings.data_api_url, "connect": settings.connect_api_url}
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=200, limit_per_host=100, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(total=settings.upstream_timeout, connect=min(5.0, settings.upstream_timeout)),
            auto_decompress=False,  # bodies pass through as the upstream encoded them
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies are neither kept nor sent
            raise_for_status=False,
        )

    def __repr__(self) -> str:
        return f"Upstream({sorted(self.bases)})"

    async def send(self, upstream: str, method: str, url: URL, headers: dict[str, str], body: bytes | None) -> Answer:
        """The upstream's answer, its body not read yet: :meth:`read` or :meth:`stream` it (both release it)."""
        started = time.perf_counter()
        # Inside a traced request: a span until the answer's head arrives (method, host, port; not the path, which
        # holds ids, nor the query), and its traceparent on the request (bff.tracing).
        with tracing.http_span(method, url, peer=f"kryptos-{upstream}") as span:
            if span is not None:
                headers = span.headers(headers)
            try:
                response = await self._http.request(method, url, headers=headers, data=body, allow_redirects=False)
            except TimeoutError as exc:
                metrics.upstream_errors.labels(upstream=upstream, kind="timeout").inc()
                raise GatewayTimeout("Kryptos did not answer in time.") from exc
            except aiohttp.ClientError as exc:
                metrics.upstream_errors.labels(upstream=upstream, kind="unreachable").inc()
                raise BadGateway("Kryptos could not be reached.", code="upstream_unavailable") from exc
            if span is not None:
                span.answered(response.status)
        metrics.upstream_latency.labels(upstream=upstream).observe(time.perf_counter() - started)
        return response

    @staticmethod
    async def read(answer: Answer) -> bytes:
        try:
            return await answer.read()
        except TimeoutError as exc:
            raise GatewayTimeout("Kryptos did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            raise BadGateway("Kryptos closed the connection.", code="upstream_unavailable") from exc
        finally:
            answer.release()

    @staticmethod
    async def stream(answer: Answer) -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.content.iter_chunked(64 * 1024):
                yield chunk
        finally:
            answer.release()

    async def aclose(self) -> None:
        await self._http.close()
