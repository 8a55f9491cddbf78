"""The one ASGI layer every request passes before routing, in this order:

1. forwarded headers, believed only from trusted proxies (:mod:`bff.forwarded`);
2. the request id, the security headers on the way out, one access-log line and the HTTP metrics
   (:mod:`bff.observability`);
3. the path guard: non-canonical paths are refused before any routing (:func:`bff.observability.path_refusal`);
4. the CSRF header and ``Origin`` checks (:mod:`bff.csrf`).

They are one layer rather than four middlewares because this is the hot path: the headers are read
once, and each extra ASGI layer costs a coroutine and a copy of the header list per request.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.config import Settings
from bff.csrf import CsrfPolicy
from bff.forwarded import ForwardedHeaders
from bff.observability import RequestRecorder, path_refusal, request_id_for, request_id_var, response_headers


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.forwarded = ForwardedHeaders(settings.trusted_proxies)
        self.csrf = CsrfPolicy(settings.effective_allowed_origins)
        self.recorder = RequestRecorder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        self.forwarded.apply(scope, headers)
        rid = request_id_for(headers)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = response_headers(list(message.get("headers", [])), rid)
            await send(message)

        try:
            refusal = path_refusal(scope) or self.csrf.refusal(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.recorder.record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)
