"""What handlers read from a request (:mod:`bff.web.request`), on requests built in memory: no server.

A fake request is a :class:`starlette.requests.Request` over an ASGI scope and a ``receive`` that hands out
the body in the chunks a test chooses, and counts how often it was asked.
"""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.types import Message, Scope

from bff.errors import BadRequest
from bff.web.request import (
    BodyTooLarge,
    client_address,
    media_type,
    read_limited,
    safe_return_to,
    session_authorization,
)


class Body:
    """An ASGI ``receive`` handing out ``chunks`` one message each, the last without ``more_body``."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def __call__(self) -> Message:
        self.reads += 1
        if not self.chunks:
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def _request(
    host: str | None = "203.0.113.9", headers: dict[str, str] | None = None, body: Body | None = None
) -> Request:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": (host, 1) if host is not None else None,
    }
    return Request(scope, body or Body())


# --- client_address ------------------------------------------------------------------------------------------


def test_client_address_counts_ipv6_per_64() -> None:
    assert client_address(_request("203.0.113.9")) == "203.0.113.9"
    assert client_address(_request("2001:db8:1:2:aaaa::1")) == client_address(_request("2001:db8:1:2:bbbb::2"))
    assert client_address(_request("2001:db8:1:2::1")) != client_address(_request("2001:db8:1:3::1"))
    assert client_address(_request("::ffff:203.0.113.9")) == "203.0.113.9"
    assert client_address(_request(None)) == "unknown"


def test_client_address_names_the_ipv6_block_and_passes_other_hosts_through() -> None:
    assert client_address(_request("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_address(_request("2001:0DB8::0001")) == "2001:db8::/64"
    assert client_address(_request("198.51.100.1")) == "198.51.100.1"
    assert client_address(_request("testclient")) == "testclient"  # not an address: counted under its name
    assert client_address(_request("")) == "unknown"


# --- session_authorization ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "token"),
    [
        ([], None),
        (["Bearer abc"], None),
        (["Basic dTpw", "Bearer abc"], None),
        (["Sessions abc"], None),  # another scheme, not a prefix match
        (["Session abc"], "abc"),
        (["session abc"], "abc"),  # the scheme is case-insensitive
        (["SESSION abc"], "abc"),
        (["  Session   abc  "], "abc"),
        (["Session"], ""),  # the Session scheme without a token: still the header's request, never the cookie's
        (["Session "], ""),
        (["Session a", "Session b"], ""),  # repeated
        (["Session a", "Bearer b"], ""),  # alongside another Authorization header
    ],
)
def test_session_authorization(values: list[str], token: str | None) -> None:
    assert session_authorization(values) == token


# --- safe_return_to ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/", "/"),
        ("/dashboard", "/dashboard"),
        ("/search?q=a%20b&page=2#top", "/search?q=a%20b&page=2#top"),  # returned as given, not decoded
        ("/" + "a" * 511, "/" + "a" * 511),  # 512 characters: the bound
    ],
)
def test_local_paths_are_returned(value: str | None, expected: str) -> None:
    assert safe_return_to(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example/",
        "dashboard",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "/%2F%2Fevil.example",  # "///evil.example" once decoded
        "%2F%2Fevil.example",
        "/%5Cevil.example",  # a backslash once decoded
        "/x\r\nSet-Cookie: a=b",
        "/x%0D%0ASet-Cookie:%20a=b",  # control characters once decoded
        "/tab\there",
        "/del\x7f",
        "/" + "a" * 512,
        "javascript:alert(1)",
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(BadRequest) as refused:
        safe_return_to(value)
    assert refused.value.status == 400 and refused.value.code == "invalid_return_to"


# --- media_type ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, ""),
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        (" Application/JSON ;charset=UTF-8", "application/json"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("", ""),
    ],
)
def test_media_type(content_type: str | None, expected: str) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert media_type(_request(headers=headers)) == expected


# --- read_limited ------------------------------------------------------------------------------------------


async def test_a_body_within_the_limit_is_read_whole() -> None:
    body = Body(b"abcd", b"efgh", b"ij")
    assert await read_limited(_request(body=body), 10) == b"abcdefghij"
    declared = Body(b"abcd", b"ef")
    assert await read_limited(_request(headers={"Content-Length": "6"}, body=declared), 6) == b"abcdef"
    assert await read_limited(_request(), 10) == b""


@pytest.mark.parametrize("declared", ["11", "99999999999999999999", "-1", "1e3", "0x10", " 5", "\u00b2", "1\u00b2", ""])
async def test_a_declared_length_over_the_limit_or_not_a_number_is_refused_before_reading(declared: str) -> None:
    body = Body(b"abc")
    with pytest.raises(BodyTooLarge):
        await read_limited(_request(headers={"Content-Length": declared}, body=body), 10)
    assert body.reads == 0


async def test_a_body_without_a_length_is_refused_as_soon_as_it_passes_the_limit() -> None:
    body = Body(b"abcd", b"efgh", b"ijkl", b"mnop")
    with pytest.raises(BodyTooLarge):
        await read_limited(_request(body=body), 10)
    assert body.reads == 3  # the chunk that passed the limit was the last one read


async def test_a_body_longer_than_its_declared_length_is_still_bounded() -> None:
    body = Body(b"abcd", b"efgh", b"ijkl")
    with pytest.raises(BodyTooLarge):
        await read_limited(_request(headers={"Content-Length": "4"}, body=body), 10)
