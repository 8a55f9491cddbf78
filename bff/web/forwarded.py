"""``X-Forwarded-For`` / ``X-Forwarded-Proto``, believed only from ``BFF_TRUSTED_PROXIES`` (RFC 9700 §4.13).

Behind a TLS-terminating ingress the peer is the ingress, so the client address and scheme come from its
headers; from anyone else the same headers are ignored (oauth2-proxy GHSA-7x63-xv5r-3p2x). The redirect
URI and the cookie's ``Secure`` flag never depend on request headers at all: both follow from
``BFF_PUBLIC_URL``, so a spoofed header cannot change them even through a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

from bff.config import IPNetwork


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


class ForwardedHeaders:
    """Applies ``X-Forwarded-Proto`` / ``X-Forwarded-For`` to the ASGI scope when the peer is trusted."""

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self.trusted = tuple(trusted)

    def _is_trusted(self, value: str) -> bool:
        address = _address(value)
        return address is not None and any(address in net for net in self.trusted)

    def apply(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        """Whether the peer (the TCP connection's other end) is a trusted proxy; when it is, its headers are
        applied. Only a trusted peer may call ``/auth/verify`` (:mod:`bff.routes.verify`)."""
        if not self.trusted:
            return False
        client = scope.get("client")
        if not client or not self._is_trusted(client[0]):
            return False
        proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            scope["scheme"] = proto
        forwarded_for = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        # Walk from the nearest hop outwards; the first address not a trusted proxy is the client.
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            if not self._is_trusted(hop):
                if _address(hop) is not None:
                    scope["client"] = (hop.strip("[]"), 0)
                break
        return True
