"""The route table: every Kryptos call the SPA may make through ``bff``, as data (README: "HTTP endpoints").

Adding an upstream endpoint is one :class:`ForwardRoute` entry here and a test. Nothing else is forwarded:
any other ``/api/...`` path is 404 and any other method 405 (RFC 10017 §6.1.3.6: an explicit allowlist,
strict validation of dynamic path segments, methods restricted per endpoint). The external-authorization
endpoint (:mod:`bff.routes.verify`) admits exactly the same calls, through :func:`match`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Upstream = Literal["data", "connect"]


@dataclass(frozen=True, slots=True)
class Field:
    """One query parameter or JSON body field and how to validate it."""

    name: str
    kind: Literal["int", "str", "bool"]
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class ForwardRoute:
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
    path: str  # local path; `{name}` segments must match `path_params[name]`
    upstream: Upstream
    upstream_path: str  # path under the upstream base, with the same `{name}` segments
    # user_token: the session's credential as a bearer (its Kryptos Connect grant's token when it has one, else
    # its OpenID Connect access token), plus the client headers; client: the client headers only
    credentials: Literal["user_token", "client"]
    access: Literal["signed_in", "admin"] = "signed_in"  # who may call: any signed-in user, or admins only
    query: tuple[Field, ...] = ()
    body: tuple[Field, ...] | None = None  # None: the route takes no body
    body_requires_one: bool = False  # at least one body field must be present
    path_params: dict[str, re.Pattern[str]] = field(default_factory=dict)
    # The administrator's grant routes: "learn" remembers what a transaction-limit answer says of the grant,
    # "annotate" adds it to the grant list (bff.services.grant_facts).
    grant_facts: Literal["annotate", "learn"] | None = None


GRANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RESOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # integration and sync-job ids: one plain path segment

ROUTES: tuple[ForwardRoute, ...] = (
    ForwardRoute(
        method="GET",
        path="/api/v1/integrations",
        upstream="data",
        upstream_path="/v1/integrations",
        credentials="user_token",
        query=(
            Field("page", "int", minimum=1, maximum=1_000_000),
            Field("pageSize", "int", minimum=1, maximum=200),
            Field("searchedKey", "str", max_length=200),
        ),
    ),
    ForwardRoute(
        method="GET",
        path="/api/v1/userinfo",
        upstream="data",
        upstream_path="/v1/userinfo",
        credentials="user_token",
    ),
    ForwardRoute(
        method="POST",
        path="/api/v1/integrations/{integrationId}/resync",
        upstream="data",
        upstream_path="/v1/integrations/{integrationId}/resync",
        credentials="user_token",
        path_params={"integrationId": RESOURCE_ID},
    ),
    ForwardRoute(
        method="GET",
        path="/api/v1/sync/{jobId}",
        upstream="data",
        upstream_path="/v1/sync/{jobId}",
        credentials="user_token",
        path_params={"jobId": RESOURCE_ID},
    ),
    ForwardRoute(
        method="GET",
        path="/api/developer/grants",
        upstream="connect",
        upstream_path="/token/grants",
        credentials="client",
        access="admin",
        grant_facts="annotate",
    ),
    ForwardRoute(
        method="PATCH",
        path="/api/developer/grants/{grantId}/transaction-limit",
        upstream="connect",
        upstream_path="/developer/grants/{grantId}/transaction-limit",
        credentials="client",
        access="admin",
        body=(Field("transactionLimit", "int", minimum=1, maximum=2**53 - 1), Field("enableLimiter", "bool")),
        body_requires_one=True,
        path_params={"grantId": GRANT_ID},
        grant_facts="learn",
    ),
)


_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _pattern(path: str) -> re.Pattern[str]:
    """``/api/v1/sync/{jobId}`` → a pattern matching one plain segment per ``{name}`` (validated later).

    Not Starlette's ``compile_path``: its pattern ends in ``$``, which also matches before a trailing newline,
    and an original URI's ``%0A`` decodes to one."""
    parts = _SEGMENT.split(path)  # literal, name, literal, name, ..., literal
    return re.compile(
        "".join(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)) + r"\Z"
    )


_PATTERNS: tuple[tuple[re.Pattern[str], ForwardRoute], ...] = tuple((_pattern(r.path), r) for r in ROUTES)


def match(method: str, path: str) -> tuple[ForwardRoute, dict[str, str]] | None:
    """The table's entry for this method and local path, with the path's ``{name}`` segments; None when the
    table has no such call."""
    for pattern, route in _PATTERNS:
        if route.method == method and (found := pattern.match(path)) is not None:
            return route, found.groupdict()
    return None
