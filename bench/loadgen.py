"""A small closed-loop HTTP/1.1 load generator, for machines without ``wrk``.

Same model as ``wrk -t1 -cN``: N keep-alive connections on one event loop (uvloop when installed), each
sending the next request as soon as the previous response is read, the cookie rotating per request as
``rotate.lua`` does; it prints the same ``BENCHJSON`` line. It is Python, so it spends several times the
CPU per request that wrk spends: on a 2-core machine shared with the servers it leaves them less CPU,
and the req/s it reports are lower than wrk's (CPU µs per request of each server stay comparable).

``python -m bench.loadgen --port P --path /x --cookies FILE --connections 32 --duration 10 [--limit N]
[--header 'Name: value' ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class _Tally:
    requests: int = 0
    bytes: int = 0
    non2xx: int = 0
    read_errors: int = 0
    connect_errors: int = 0
    next_index: int = 0
    stop: bool = False
    latencies: list[float] = field(default_factory=list)


def _build_requests(path: str, port: int, cookies: list[str], headers: list[str]) -> list[bytes]:
    base = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-CSRF: 1\r\nAccept: application/json\r\n"
    base += "".join(f"{header}\r\n" for header in headers)
    if not cookies:
        return [(base + "\r\n").encode()]
    return [(base + f"Cookie: {c}\r\n\r\n").encode() for c in cookies]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            total += size
            if size == 0:
                return status, len(head) + total
    if length < 0:
        raise ConnectionError("response without Content-Length or chunked encoding")
    await reader.readexactly(length)
    return status, len(head) + length


async def _connection(port: int, requests: list[bytes], tally: _Tally, deadline: float, limit: int) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        tally.connect_errors += 1
        return
    try:
        while not tally.stop and time.perf_counter() < deadline:
            request = requests[tally.next_index % len(requests)]
            tally.next_index += 1
            started = time.perf_counter()
            writer.write(request)
            try:
                status, size = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally.read_errors += 1
                return
            tally.latencies.append(time.perf_counter() - started)
            tally.requests += 1
            tally.bytes += size
            if not 200 <= status < 400:
                tally.non2xx += 1
            if limit and tally.requests >= limit:
                tally.stop = True
    finally:
        writer.close()


async def run(
    port: int, path: str, cookies: list[str], connections: int, duration: float, limit: int, headers: list[str]
) -> dict[str, float]:
    requests = _build_requests(path, port, cookies, headers)
    tally = _Tally()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(_connection(port, requests, tally, deadline, limit) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    lat = sorted(tally.latencies) or [0.0]

    def pct(p: float) -> int:
        return int(lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1e6)

    return {
        "requests": tally.requests,
        "duration_us": int(elapsed * 1e6),
        "bytes": tally.bytes,
        "connect": tally.connect_errors,
        "read": tally.read_errors,
        "write": 0,
        "status": tally.non2xx,
        "timeout": 0,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "max_us": int(lat[-1] * 1e6),
        "mean_us": round(sum(lat) / len(lat) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--cookies", help="file with one 'name=value' cookie per line")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--limit", type=int, default=0, help="stop after this many responses")
    parser.add_argument("--header", action="append", default=[], help="one more 'Name: value' header (repeatable)")
    args = parser.parse_args()
    cookies: list[str] = []
    if args.cookies:
        with open(args.cookies, encoding="ascii") as fh:
            cookies = [line.strip() for line in fh if line.strip()]
    main = run(args.port, args.path, cookies, args.connections, args.duration, args.limit, args.header)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main)
    else:
        result = uvloop.run(main)
    print("BENCHJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
