"""``X-Forwarded-For`` / ``X-Forwarded-Proto`` (:mod:`bff.web.forwarded`): believed only from trusted proxies.

The class on its own first (an ASGI scope in, the scope it leaves), then the whole app in process, where
the access line shows which client address it settled on.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

import httpx2
import pytest
from starlette.types import Scope

from bff.app import create_app
from bff.config import Settings
from bff.logs import JsonFormatter
from bff.web.forwarded import ForwardedHeaders
from tests.support.settings import minimal_settings

TRUSTED = ForwardedHeaders([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])


def _applied(
    forwarded: ForwardedHeaders, peer: str | None, *, xff: str | None = None, proto: str | None = None
) -> Scope:
    """The scope of a request from ``peer`` after ``forwarded`` has looked at its headers."""
    scope: Scope = {"type": "http", "scheme": "http", "client": (peer, 4711) if peer else None}
    headers: dict[bytes, bytes] = {}
    if xff is not None:
        headers[b"x-forwarded-for"] = xff.encode()
    if proto is not None:
        headers[b"x-forwarded-proto"] = proto.encode()
    forwarded.apply(scope, headers)
    return scope


# --- ForwardedHeaders on its own ------------------------------------------------------------------------------


def test_a_trusted_peer_names_the_client_and_the_scheme() -> None:
    scope = _applied(TRUSTED, "10.0.0.5", xff="203.0.113.9", proto="https")
    assert scope["client"] == ("203.0.113.9", 0)
    assert scope["scheme"] == "https"


def test_the_client_is_the_nearest_hop_that_is_not_a_trusted_proxy() -> None:
    # A client can put anything at the left; only what the trusted proxies appended counts.
    scope = _applied(TRUSTED, "10.0.0.5", xff="198.51.100.66, 203.0.113.9, 10.1.2.3,  , 10.9.9.9")
    assert scope["client"] == ("203.0.113.9", 0)


def test_ipv6_hops_may_be_bracketed_and_are_matched_against_ipv6_ranges() -> None:
    assert _applied(TRUSTED, "fd00::1", xff="[2001:db8::7]")["client"] == ("2001:db8::7", 0)
    assert _applied(TRUSTED, "10.0.0.5", xff="2001:db8::7, [fd00::2]")["client"] == ("2001:db8::7", 0)


def test_an_untrusted_peer_changes_nothing() -> None:
    scope = _applied(TRUSTED, "192.0.2.44", xff="203.0.113.9", proto="https")
    assert scope["client"] == ("192.0.2.44", 4711)
    assert scope["scheme"] == "http"
    assert _applied(TRUSTED, None, xff="203.0.113.9", proto="https") == {
        "type": "http",
        "scheme": "http",
        "client": None,
    }


def test_nothing_is_believed_without_trusted_proxies() -> None:
    scope = _applied(ForwardedHeaders([]), "10.0.0.5", xff="203.0.113.9", proto="https")
    assert scope["client"] == ("10.0.0.5", 4711)
    assert scope["scheme"] == "http"


def test_hops_that_leave_no_client_keep_the_peer() -> None:
    assert _applied(TRUSTED, "10.0.0.5", xff="10.1.2.3, 10.2.3.4")["client"] == ("10.0.0.5", 4711)  # all proxies
    assert _applied(TRUSTED, "10.0.0.5", xff="")["client"] == ("10.0.0.5", 4711)
    # The first hop that is not a trusted proxy is not an address: the walk stops, nothing further out counts.
    assert _applied(TRUSTED, "10.0.0.5", xff="203.0.113.9, unknown, 10.1.2.3")["client"] == ("10.0.0.5", 4711)


@pytest.mark.parametrize(("proto", "scheme"), [("HTTPS", "https"), ("https, http", "https"), ("http", "http")])
def test_the_first_forwarded_proto_sets_the_scheme(proto: str, scheme: str) -> None:
    assert _applied(TRUSTED, "10.0.0.5", proto=proto)["scheme"] == scheme


@pytest.mark.parametrize("proto", ["ftp", "", "javascript", "http s"])
def test_a_forwarded_proto_other_than_http_or_https_is_ignored(proto: str) -> None:
    assert _applied(TRUSTED, "10.0.0.5", proto=proto)["scheme"] == "http"


# --- the app in process -------------------------------------------------------------------------------------


async def _logged_client(
    settings: Settings, peer: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, Any], httpx2.Response]:
    app = create_app(settings)
    caplog.set_level(logging.INFO, logger="bff.access")
    caplog.clear()
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app, client=(peer, 4711))
        async with httpx2.AsyncClient(transport=transport, base_url="http://bff.internal") as client:
            response = await client.get("/auth/login?return_to=/x", headers=headers)
    [record] = [r for r in caplog.records if r.name == "bff.access"]
    return json.loads(JsonFormatter().format(record)), response


SPOOF = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}


async def test_forwarded_headers_are_believed_from_a_trusted_proxy(caplog: pytest.LogCaptureFixture) -> None:
    settings = minimal_settings(trusted_proxies=["10.0.0.0/8"])
    headers = {**SPOOF, "X-Forwarded-For": "203.0.113.9, 10.1.2.3"}  # client, then an inner proxy hop
    entry, _ = await _logged_client(settings, "10.0.0.5", headers, caplog)
    assert entry["client"] == "203.0.113.9"


async def test_spoofed_forwarded_headers_from_anyone_else_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    settings = minimal_settings(trusted_proxies=["10.0.0.0/8"])
    spoofed, spoofed_response = await _logged_client(settings, "192.0.2.44", SPOOF, caplog)
    plain, plain_response = await _logged_client(settings, "192.0.2.44", {}, caplog)
    assert spoofed["client"] == plain["client"] == "192.0.2.44"
    # The redirect URI comes from BFF_PUBLIC_URL, never from Host or X-Forwarded-Host.
    for response in (spoofed_response, plain_response):
        assert response.status_code in (302, 502)  # 502 when the (absent) provider is needed first
        assert "evil.example" not in response.headers.get("location", "")


async def test_without_trusted_proxies_no_forwarded_header_is_believed(caplog: pytest.LogCaptureFixture) -> None:
    entry, _ = await _logged_client(minimal_settings(), "10.0.0.5", SPOOF, caplog)
    assert entry["client"] == "10.0.0.5"
