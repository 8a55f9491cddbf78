"""Reading the audit trail (:mod:`bff.audit`) of real ``bff serve`` processes, and what to look for in it.

* :func:`start_split_replica`: one more ``bff serve`` of a :class:`~tests.support.processes.Cluster` whose stdout
  and stderr are kept apart (``BFF_AUDIT_LOG`` chooses between them), each readable at any time;
* :func:`audit_events`: the audit events in a process's output (one JSON object per line, ``logger`` ``bff.audit``);
* :class:`EmulatorTap`: an emulator middleware that keeps every token response and authorization code the
  provider handed out, so a test can look for them in the logs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff_dev.emulator import EmulatorConfig, create_emulator_app
from tests.support.processes import Cluster, Replica, child_env, wait_ready
from tests.support.redis_server import free_port, stop_process

# Every audit event has exactly these keys, plus some of EVENT_FIELDS (bff/audit.py, README "Audit trail").
AUDIT_KEYS = frozenset({"time", "logger", "event", "outcome", "actor", "target", "client", "request_id"})
EVENT_FIELDS = frozenset({"reason", "code", "kind", "device", "ended", "scope", "values", "upstream", "suppressed"})
TARGET_KEYS = frozenset({"sub", "session", "grant", "endpoint", "limit"})


def audit_events(output: str) -> list[dict[str, Any]]:
    """The audit events among a process's output lines, in order."""
    events: list[dict[str, Any]] = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if isinstance(entry, dict) and entry.get("logger") == "bff.audit":
            events.append(entry)
    return events


@dataclass
class SplitReplica(Replica):
    """A replica whose stderr is kept apart from its stdout (:attr:`log`, read by :meth:`output`)."""

    err: IO[bytes] | None = None

    def errors(self) -> str:
        assert self.err is not None
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def halt(self) -> None:
        """Stop the process (SIGTERM: it flushes its logs) but keep its output readable."""
        stop_process(self.proc, timeout=15)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        super().stop(sig)
        if self.err is not None:
            self.err.close()


def start_split_replica(cluster: Cluster, **env: str) -> SplitReplica:
    """One more ``bff serve`` on the cluster's settings (``env`` overrides some), stdout and stderr apart."""
    port = free_port()
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by SplitReplica.stop
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by SplitReplica.stop
    proc = subprocess.Popen(
        [sys.executable, "-m", "bff", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=child_env({**cluster.env, "BFF_METRICS_PORT": "0", **env}),
        stdout=out,
        stderr=err,
    )
    replica = SplitReplica(port, proc, out, 0, err)
    cluster.replicas.append(replica)
    wait_ready(f"{replica.url}/readyz", proc, lambda: replica.output() + replica.errors(), what="bff serve", timeout=20)
    return replica


@dataclass
class EmulatorTap:
    """What the emulated provider handed out: token responses (access, refresh and ID tokens) and the
    authorization codes of its redirects."""

    token_bodies: list[bytes] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def issued(self) -> set[str]:
        found: set[str] = set()
        for body in self.token_bodies:
            answer = json.loads(body)
            found.update(str(answer[k]) for k in ("access_token", "refresh_token", "id_token") if answer.get(k))
        return found

    def app(self, config: EmulatorConfig) -> Starlette:
        """The emulator behind this tap (``emulator_app`` of :func:`tests.support.processes.start_cluster_on`)."""
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
