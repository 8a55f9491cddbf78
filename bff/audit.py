"""The audit trail: one JSON line per security-relevant action, on its own logger (``bff.audit``).

Schema (README "Audit trail"): every event has the same keys, ``null`` where it does not apply::

    {"time": "2026-11-30T08:15:18.123Z", "logger": "bff.audit", "event": "sign_out", "outcome": "success",
     "actor": "<sub of who did it>", "target": {"sub": …, "session": …}, "client": "203.0.113.7",
     "request_id": "…", …the event's own fields}

``client`` and ``request_id`` come from the request being served (:mod:`bff.web.edge` sets them), so the
code that records an event passes only what it knows. What an event may carry is closed: the keys in
:data:`_FIELDS` and :data:`_TARGET` and nothing else (anything else is dropped, as :mod:`bff.logs` does), and
none of them is ever a token, a cookie, a secret or a session id: a session is named by its public handle
(:func:`bff.sessions.store.public_handle`), which rebuilds nothing.

The logger ignores ``BFF_LOG_LEVEL`` (an operator quietening the service keeps the trail), and its lines
go to the stream ``BFF_AUDIT_LOG`` names (:func:`bff.logs.configure_logging`), so they can be routed apart.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any, Literal

from bff.logs import request_id_var

audit_log = logging.getLogger("bff.audit")
audit_log.setLevel(logging.INFO)
client_var: ContextVar[str | None] = ContextVar("bff_audit_client", default=None)

Outcome = Literal["success", "failure", "denied", "authorized"]
EVENTS = frozenset(
    {
        "sign_in",
        "sign_out",
        "session_ended",
        "refresh_refused",
        "backchannel_logout",
        "transaction_limit_changed",
        "rate_limited",
    }
)
# The event-specific keys, each a short word, a number, or a small object of both.
_FIELDS = frozenset({"reason", "code", "kind", "device", "ended", "scope", "values", "upstream", "suppressed"})
_TARGET = frozenset({"sub", "session", "grant", "endpoint", "limit"})


def _now() -> str:
    # Wall-clock time, as in every log line: an audit trail is read against other systems' clocks.
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


def record(
    event: str,
    *,
    outcome: Outcome = "success",
    actor: str | None = None,
    target: dict[str, Any] | None = None,
    in_request: bool = True,
    **fields: Any,
) -> None:
    """Write one audit event. ``actor`` is the ``sub`` of whoever did it (None: bff itself, or nobody known);
    ``in_request=False`` for an event about no request in particular (no client, no request id)."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    rid = request_id_var.get() if in_request else "-"
    entry: dict[str, Any] = {
        "time": _now(),
        "logger": audit_log.name,
        "event": event,
        "outcome": outcome,
        "actor": actor or None,
        "target": {k: v for k, v in target.items() if k in _TARGET} if target else None,
        "client": client_var.get() if in_request else None,
        "request_id": None if rid == "-" else rid,
    }
    entry.update((k, v) for k, v in fields.items() if k in _FIELDS)
    audit_log.info(event, extra={"audit": entry})
