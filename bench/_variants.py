"""``bff serve`` with parts swapped, for :mod:`bench.candidates`: ``python -m bench._variants NAME[,NAME] serve ...``.

The variants are measured, not shipped: each changes one thing in the running process and leaves the rest
of bff as it is, so a side-by-side run prices that one thing.

- ``no-hiredis``: redis-py's pure-Python RESP parser even when ``hiredis`` is installed (redis-py picks
  hiredis on its own whenever it can be imported).
- ``pyreqwest``: the upstream client (:class:`bff.services.upstream.Upstream`) on pyreqwest (Rust: reqwest
  and hyper) instead of :mod:`bff.services.http1`, answering the forwarder through the same methods.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any


def _block_hiredis() -> None:
    sys.modules["hiredis"] = None  # type: ignore[assignment]  # import hiredis now raises ImportError


class _Answer:
    """What the forwarder reads of an upstream answer (:class:`bff.services.http1.Answer`'s names)."""

    __slots__ = ("body", "content_length", "headers", "status")

    def __init__(self, response: Any) -> None:
        self.body = b""
        self.status: int = response.status
        self.headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in response.headers.items()]
        length = response.headers.get("content-length")
        self.content_length = int(length) if length is not None else None

    def release(self) -> None:
        pass


def _pyreqwest_upstream() -> None:
    from pyreqwest.client import ClientBuilder
    from pyreqwest.exceptions import PyreqwestError, ReadTimeoutError, RequestTimeoutError

    from bff import metrics
    from bff.errors import BadGateway, GatewayTimeout
    from bff.services import upstream

    def __init__(self: Any, settings: Any) -> None:
        self.bases = {"data": settings.data_api_url, "connect": settings.connect_api_url}
        self._http = (
            ClientBuilder()
            .timeout(timedelta(seconds=settings.upstream_timeout))
            .pool_idle_timeout(timedelta(seconds=upstream.KEEPALIVE_SECONDS))
            .http1_only()
            .build()
        )

    async def send(self: Any, name: str, method: str, url: Any, headers: dict[str, str], body: bytes | None) -> Any:
        request = self._http.request(method, str(url)).headers(headers)
        if body is not None:
            request = request.body_bytes(body)
        try:
            response = await request.build().send()
        except (ReadTimeoutError, RequestTimeoutError) as exc:
            raise GatewayTimeout("Kryptos did not answer in time.") from exc
        except PyreqwestError as exc:
            metrics.upstream_errors.labels(upstream=name, kind="unreachable").inc()
            raise BadGateway("Kryptos could not be reached.", code="upstream_unavailable") from exc
        answer = _Answer(response)
        answer.body = bytes(await response.bytes())  # a built (not streamed) request has read it whole
        return answer

    async def read(answer: Any) -> bytes:
        return bytes(answer.body)

    async def stream(answer: Any) -> AsyncIterator[bytes]:
        yield bytes(answer.body)

    async def aclose(self: Any) -> None:
        await self._http.close()

    cls = upstream.Upstream
    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.send = send  # type: ignore[method-assign,assignment]
    cls.read = staticmethod(read)  # type: ignore[method-assign]
    cls.stream = staticmethod(stream)  # type: ignore[method-assign]
    cls.aclose = aclose  # type: ignore[method-assign]


VARIANTS = {"no-hiredis": _block_hiredis, "pyreqwest": _pyreqwest_upstream}


def main() -> int:
    names, *rest = sys.argv[1:]
    for name in names.split(","):
        VARIANTS[name]()
    from bff.cli import main as bff_main

    return bff_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
