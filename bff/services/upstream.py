"""The Kryptos APIs (data and connect) as one pooled HTTP/1.1 client: send a request, read or stream its body.

The client is :mod:`bff.services.http1` (httptools-parsed, kept-alive connections): on this hot path it costs a
fraction of what aiohttp did, and aiohttp in its turn measured 3,200 req/s here against 735 for httpx2 (see
``bench/README.md``). Its exceptions are translated where they enter: unreachable → 502
``upstream_unavailable``, too slow → 504 ``upstream_timeout``. Redirects are never followed, cookies are
neither kept nor sent, and bodies pass through as the upstream encoded them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from bff import metrics, tracing
from bff.config import Settings
from bff.errors import BadGateway, GatewayTimeout
from bff.services.http1 import Answer, Http1Pool, HttpError

__all__ = ["KEEPALIVE_SECONDS", "Answer", "Upstream"]

# Idle pooled connections are not reused after this many seconds: sooner than servers close them (uvicorn after
# 5 s, load balancers commonly after 60 s), so a request is rarely sent on a connection the server is closing
# at that very moment (it would fail, and a POST cannot be retried blindly; an idempotent request is sent once
# more, bff.services.http1).
KEEPALIVE_SECONDS = 4.0
_CONNECTIONS_PER_ORIGIN = 100


class Upstream:
    """One connection pool for every call to Kryptos's APIs, opened in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.bases = {"data": settings.data_api_url, "connect": settings.connect_api_url}
        self._http = Http1Pool(limit=_CONNECTIONS_PER_ORIGIN, keepalive=KEEPALIVE_SECONDS)
        self._timeout = settings.upstream_timeout
        self._connect_timeout = min(5.0, settings.upstream_timeout)

    def __repr__(self) -> str:
        return f"Upstream({sorted(self.bases)})"

    async def send(
        self, upstream: str, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        """The upstream's answer, its body not read yet: :meth:`read` or :meth:`stream` it (both release it)."""
        started = time.perf_counter()
        # Inside a traced request: a span until the answer's head arrives (method, host, port; not the path, which
        # holds ids, nor the query), and its traceparent on the request (bff.tracing).
        with tracing.http_span(method, url, peer=f"kryptos-{upstream}") as span:
            if span is not None:
                headers = span.headers(headers)
            try:
                answer = await self._http.request(
                    method, url, headers, body, timeout=self._timeout, connect_timeout=self._connect_timeout
                )
            except TimeoutError as exc:
                metrics.upstream_errors.labels(upstream=upstream, kind="timeout").inc()
                raise GatewayTimeout("Kryptos did not answer in time.") from exc
            except HttpError as exc:
                metrics.upstream_errors.labels(upstream=upstream, kind="unreachable").inc()
                raise BadGateway("Kryptos could not be reached.", code="upstream_unavailable") from exc
            if span is not None:
                span.answered(answer.status)
        metrics.upstream_latency.labels(upstream=upstream).observe(time.perf_counter() - started)
        return answer

    @staticmethod
    async def read(answer: Answer) -> bytes:
        try:
            return await answer.read()
        except TimeoutError as exc:
            raise GatewayTimeout("Kryptos did not answer in time.") from exc
        except HttpError as exc:
            raise BadGateway("Kryptos closed the connection.", code="upstream_unavailable") from exc
        finally:
            answer.release()

    @staticmethod
    async def stream(answer: Answer) -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.chunks():
                yield chunk
        finally:
            answer.release()

    async def aclose(self) -> None:
        await self._http.aclose()
