"""Raw HTTP/1.1 over loopback sockets: for requests no HTTP client library would send (half a head, half a
body, a hang-up, a forged Host), and for reading what a server does with them, byte for byte."""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.body)
        return data


def connect(port: int, *, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def head(method: str, target: str, headers: dict[str, str] | list[tuple[str, str]], *, end: bool = True) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in items)]
    return ("\r\n".join(lines) + ("\r\n\r\n" if end else "\r\n")).encode("latin-1")


def parse_response(data: bytes) -> RawResponse | None:
    """The first response in ``data`` (headers, then a Content-Length body), or None when incomplete."""
    top, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return RawResponse(int(status_line.split()[1]), headers, rest[:length])


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``timeout`` seconds; True when it closed (or reset) the connection."""
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def request(port: int, raw: bytes, *, timeout: float = 5.0) -> RawResponse:
    """Send one raw request on a fresh connection and read the response (the connection may then close)."""
    with connect(port, timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        deadline = time.monotonic() + timeout
        while (response := parse_response(data)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete response within {timeout} s: {data[:300]!r}")
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before a complete response: {data[:300]!r}")
            data += chunk
        return response
