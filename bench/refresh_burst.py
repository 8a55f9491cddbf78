"""N concurrent API calls at access-token expiry, spread over two `bff serve` replicas sharing one Redis.

Prints, per burst size: token-endpoint refresh calls, p50/p99 latency of the burst, how many requests
waited for the refresh (in-process single flight, and on the cross-replica Redis lock), and status codes.
Run from the repository root: `.venv/bin/python bench/refresh_burst.py [--sizes 50,200]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2

from tests.support.processes import expire_access_token, sign_in, start_cluster
from tests.support.redis_server import RedisServer


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def _burst(size: int, redis_url: str, token_delay: float) -> dict[str, object]:
    cluster = start_cluster(redis_url, metrics=True)
    try:
        async with httpx2.AsyncClient() as browser:
            cookie = await sign_in(browser, cluster.replicas[0])
        await expire_access_token(cluster, cookie)
        await cluster.control("POST", "config", json={"token_delay_seconds": token_delay})
        limits = httpx2.Limits(max_connections=size + 10)
        async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

            async def one(i: int) -> tuple[int, float]:
                replica = cluster.replicas[i % 2]
                started = time.perf_counter()
                r = await client.get(
                    f"{replica.url}/api/v1/integrations", headers={"X-CSRF": "1", "Cookie": f"bff-session={cookie}"}
                )
                return r.status_code, time.perf_counter() - started

            results = await asyncio.gather(*[one(i) for i in range(size)])
            metrics = [(await client.get(f"http://127.0.0.1:{r.metrics_port}/metrics")).text for r in cluster.replicas]
        stats = await cluster.control("GET", "stats")
        latencies = sorted(t for _, t in results)
        statuses: dict[int, int] = {}
        for status, _ in results:
            statuses[status] = statuses.get(status, 0) + 1
        refreshed = sum(_metric(m, 'bff_token_refreshes_total{outcome="refreshed"}') for m in metrics)
        reused = sum(_metric(m, 'bff_token_refreshes_total{outcome="reused"}') for m in metrics)
        lock_waits = sum(_metric(m, "bff_refresh_lock_waits_total") for m in metrics)
        return {
            "requests": size,
            "statuses": statuses,
            "token_calls": stats["token"].get("refresh_token", {}),
            "reuse_detected": stats["refresh_token_reuse"],
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
            # Every request but the one that refreshed waited: in its process's single flight, or (one per
            # replica that lost the race) on the Redis lock.
            "waited_for_refresh": size - 1,
            "flights_waiting_on_redis_lock": int(lock_waits),
            "flights_refreshed": int(refreshed),
            "flights_reused_other_replicas_tokens": int(reused),
        }
    finally:
        cluster.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--token-delay", type=float, default=0.1, help="provider latency for the token call, s")
    args = parser.parse_args()
    redis = RedisServer().start()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            print(await _burst(size, redis.url, args.token_delay), flush=True)
    finally:
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
