"""An emulator with a tap: what its provider handed out, and what it was sent.

:class:`EmulatorTap` sits in front of the emulator as ASGI middleware (``EmulatorTap().app`` is an
``emulator_app`` for :func:`tests.support.processes.start_cluster_on`) and keeps:

* every successful token response (access, refresh and ID tokens), so a test can look for them in logs,
  traces or audit lines;
* the authorization codes of its redirects;
* each request's path and ``traceparent``, so a test can see which trace a call belonged to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff_dev.emulator import EmulatorConfig, create_emulator_app


@dataclass
class EmulatorTap:
    token_bodies: list[bytes] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, traceparent)

    def issued(self) -> set[str]:
        """Every token the provider handed out."""
        found: set[str] = set()
        for body in self.token_bodies:
            answer = json.loads(body)
            found.update(str(answer[k]) for k in ("access_token", "refresh_token", "id_token") if answer.get(k))
        return found

    def traceparents(self, path_end: str) -> list[str]:
        return [tp for path, tp in self.seen if path.endswith(path_end) and tp is not None]

    def app(self, config: EmulatorConfig) -> Starlette:
        """The emulator behind this tap."""
        app = create_emulator_app(config)
        app.add_middleware(_Tap, tap=self)
        return app


class _Tap:
    def __init__(self, app: ASGIApp, tap: EmulatorTap) -> None:
        self.app = app
        self.tap = tap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        traceparent = dict(scope["headers"]).get(b"traceparent")
        self.tap.seen.append((path, traceparent.decode() if traceparent else None))
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        query = parse_qs(urlsplit(value.decode("latin-1")).query)
                        self.tap.codes.extend(query.get("code", []))
            elif message["type"] == "http.response.body" and path.endswith("/token"):
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = b"".join(chunks)
                    if body.startswith(b"{") and b"access_token" in body:
                        self.tap.token_bodies.append(body)
            await send(message)

        await self.app(scope, receive, keep)
