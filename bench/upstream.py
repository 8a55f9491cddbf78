"""The benchmark's upstream: a fixed ~1.7 KB integrations page, the way the issue's anchor measured it.

Starlette behind uvicorn with one worker, uvloop and httptools; the body is built once at import, so the
upstream's own cost per request is routing and writing bytes. ``python -m bench.upstream --port P``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _item(n: int, provider: str, public_name: str, category: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "providerPublicName": public_name,
        "publicAddress": f"0x{n:040x}",
        "walletId": f"wal_{n:08d}_{provider}",
        "logoUrl": f"https://connect.kryptos.io/logos/{provider}.svg",
        "isContract": False,
        "alias": f"{public_name} main",
        "status": "COMPLETED",
        "lastSyncLog": {"Balances": "COMPLETED", "Transactions": "COMPLETED"},
        "lastSyncLogDetails": {"Balances": {"status": "COMPLETED"}, "Transactions": {"status": "COMPLETED"}},
        "addedOn": 1735689600000 + n,
        "lastSyncedAt": 1767225600000 + n,
        "category": category,
        "type": "api",
        "totalTransactions": 1200 + n,
    }


def _page() -> bytes:
    items = [
        _item(1, "binance", "Binance", "exchange"),
        _item(2, "coinbase", "Coinbase", "exchange"),
        _item(3, "kraken", "Kraken", "exchange"),
    ]
    body = {
        "data": items,
        "pagination": {"page": 1, "pageSize": 25, "totalCount": 3, "hasNextPage": False, "hasPreviousPage": False},
        "user_id": "user_bench",
        "timestamp": 1767225600000,
    }
    return json.dumps(body, separators=(",", ":")).encode()


BODY = _page()


async def integrations(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/v1/integrations", integrations), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
