"""Reading the audit trail (:mod:`bff.audit`) of real ``bff serve`` processes, and what to look for in it.

* :func:`start_split_replica`: one more ``bff serve`` of a :class:`~tests.support.processes.Cluster` whose stdout
  and stderr are kept apart (``BFF_AUDIT_LOG`` chooses between them), each readable at any time;
* :func:`audit_events`: the audit events in a process's output (one JSON object per line, ``logger`` ``bff.audit``);

What the provider handed out, to look for in it, is :class:`tests.support.emulator_tap.EmulatorTap`'s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Any

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
