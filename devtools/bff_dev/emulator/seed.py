"""Seeded integrations (connected wallets and exchanges) of the emulator's users.

A seed describes the source, not the response: `available_transactions` is what the source holds and
`sync` is how the last sync went apart from the transaction limit. `limits.py` works out what a sync
imported under the user's effective limit, and `integrations.py` renders the documented
`GET /v1/integrations` item from both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

SyncOutcome = Literal["COMPLETED", "PARTIALLY SYNCED", "FAILED", "ONGOING", "never"]


def ms(day: str, hour: int = 12) -> int:
    """Milliseconds since the epoch for an ISO date at the given UTC hour."""
    return int(datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class SeedIntegration:
    provider: str
    public_name: str
    category: Literal["exchange", "wallet", "blockchain", "unknown"]
    type: Literal["api", "csv"]
    wallet_id: str
    alias: str
    added_on: int
    available_transactions: int
    sync: SyncOutcome = "COMPLETED"
    public_address: str | None = None
    account_name: str | None = None
    is_contract: bool = False
    last_synced_at: int | None = None
    # Stage name -> failure message, for failures unrelated to the transaction limit.
    stage_failures: dict[str, str] = field(default_factory=dict)


_NFT_FAILURE = "We have been notified of the issue with {provider} and will fix it soon. Your account will be resynced."


def _evm_address(seed: str) -> str:
    return "0x" + hashlib.sha256(seed.encode()).hexdigest()[:40]


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _solana_address(seed: str) -> str:
    """A base58 string of a 32-byte value, shaped like a Solana address."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58[digit] + out
    return out


def guest_integrations() -> list[SeedIntegration]:
    """The `guest` user's accounts: every status, api and csv; the api ones add up past 100,000."""
    return [
        SeedIntegration(
            "binance", "Binance", "exchange", "api", "wallet_bn7a21c0", "Main Trading Account",
            ms("2025-01-05"), 58_400, account_name="guest.trader", last_synced_at=ms("2026-10-30", 4),
        ),
        SeedIntegration(
            "coinbase", "Coinbase", "exchange", "api", "wallet_cb3f9e12", "Coinbase Savings",
            ms("2025-01-09"), 12_350, account_name="guest-coinbase", last_synced_at=ms("2026-10-30", 5),
        ),
        SeedIntegration(
            "kraken", "Kraken", "exchange", "csv", "wallet_kr55d0a8", "Kraken export 2024",
            ms("2025-01-12"), 3_120, last_synced_at=ms("2025-01-12", 13),
        ),
        SeedIntegration(
            "metamask", "MetaMask", "wallet", "api", "wallet_mm81b4f3", "Hot Wallet",
            ms("2025-02-01"), 1_840, public_address=_evm_address("guest-metamask"),
            last_synced_at=ms("2026-10-29", 22),
        ),
        SeedIntegration(
            "ledger", "Ledger", "wallet", "api", "wallet_lg09c7e5", "Ledger Nano X",
            ms("2025-02-14"), 460, sync="PARTIALLY SYNCED",
            public_address="bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
            last_synced_at=ms("2026-10-28", 9),
            stage_failures={"NFT Holdings": _NFT_FAILURE.format(provider="ledger")},
        ),
        SeedIntegration(
            "ethereum", "Ethereum", "blockchain", "api", "wallet_et4d2a90", "DeFi Wallet",
            ms("2025-03-03"), 24_900, public_address="0x1234567890abcdef1234567890abcdef1234abcd",
            last_synced_at=ms("2026-10-30", 6),
        ),
        SeedIntegration(
            "ethereum", "Ethereum", "blockchain", "api", "wallet_et77e1b2", "Team Safe",
            ms("2025-03-20"), 310, public_address=_evm_address("guest-safe"), is_contract=True,
            last_synced_at=ms("2026-10-30", 6),
        ),
        SeedIntegration(
            "bitcoin", "Bitcoin", "blockchain", "api", "wallet_btc0f3a6", "Cold Storage",
            ms("2025-04-07"), 0, sync="ONGOING", public_address="bc1q9h6tq4lq0v3l8r4gzk2ytd7e5wq3a8m0c2xk7p",
        ),
        SeedIntegration(
            "kucoin", "KuCoin", "exchange", "api", "wallet_kc6b8d14", "KuCoin Futures",
            ms("2025-05-18"), 0, sync="FAILED", account_name="guest-kucoin",
            stage_failures={
                "Transactions": "Invalid API key or insufficient permissions for kucoin. Please reconnect.",
                "Balances": "Invalid API key or insufficient permissions for kucoin. Please reconnect.",
            },
        ),
        SeedIntegration(
            "polygon", "Polygon", "blockchain", "api", "wallet_pl2e5c77", "Polygon Gaming",
            ms("2025-06-30"), 0, sync="never", public_address=_evm_address("guest-polygon"),
        ),
        SeedIntegration(
            "bybit", "Bybit", "exchange", "api", "wallet_by9a0f41", "Derivatives Desk",
            ms("2025-08-11"), 9_800, account_name="guest-bybit", last_synced_at=ms("2026-10-30", 7),
        ),
        SeedIntegration(
            "solana", "Solana", "blockchain", "api", "wallet_so3c7b25", "Phantom",
            ms("2025-09-02"), 2_300, public_address="7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV",
            last_synced_at=ms("2026-10-30", 8),
        ),
        SeedIntegration(
            "trezor", "Trezor", "wallet", "csv", "wallet_tz4e8a19", "Trezor history",
            ms("2025-10-01"), 120, last_synced_at=ms("2025-10-01", 14),
        ),
        SeedIntegration(
            "manual", "Manual Import", "unknown", "csv", "wallet_mi1d6f02", "OTC trades",
            ms("2025-10-15"), 45, last_synced_at=ms("2025-10-15", 10),
        ),
    ]  # fmt: skip


_GUEST2_PROVIDERS: tuple[tuple[str, str, Literal["exchange", "wallet", "blockchain", "unknown"]], ...] = (
    ("binance", "Binance", "exchange"),
    ("ethereum", "Ethereum", "blockchain"),
    ("metamask", "MetaMask", "wallet"),
    ("coinbase", "Coinbase", "exchange"),
    ("solana", "Solana", "blockchain"),
    ("kraken", "Kraken", "exchange"),
    ("ledger", "Ledger", "wallet"),
    ("bitcoin", "Bitcoin", "blockchain"),
    ("arbitrum", "Arbitrum", "blockchain"),
    ("okx", "OKX", "exchange"),
)


def guest2_integrations() -> list[SeedIntegration]:
    """Sixty small accounts (well under the limit) so that paging has several pages to walk."""
    items: list[SeedIntegration] = []
    for i in range(60):
        provider, name, category = _GUEST2_PROVIDERS[i % len(_GUEST2_PROVIDERS)]
        digest = hashlib.sha256(f"guest2-{i}".encode()).hexdigest()
        on_chain = category in ("wallet", "blockchain")
        outcome: SyncOutcome = "FAILED" if i % 17 == 16 else "never" if i % 23 == 22 else "COMPLETED"
        failures = {"Transactions": f"Sync of {provider} timed out. It will be retried."} if outcome == "FAILED" else {}
        items.append(
            SeedIntegration(
                provider,
                name,
                category,
                "csv" if i % 7 == 6 else "api",
                f"wallet_g2{digest[:6]}",
                f"{name} account {i + 1:02d}",
                ms("2025-01-01") + i * 86_400_000,
                0 if outcome != "COMPLETED" else 100 + (i * 37) % 900,
                sync=outcome,
                public_address=_evm_address(f"guest2-{i}") if on_chain else None,
                account_name=None if on_chain else f"gustav-{provider}-{i + 1:02d}",
                last_synced_at=None if outcome == "never" else ms("2026-10-30") - i * 3_600_000,
                stage_failures=failures,
            )
        )
    return items


def linked_integrations() -> list[SeedIntegration]:
    """A Linked user's accounts: far past 100,000 transactions, never limited."""
    return [
        SeedIntegration(
            "binance", "Binance", "exchange", "api", "wallet_ln01a9b3", "Binance Spot",
            ms("2024-11-02"), 140_000, account_name="lena.linked", last_synced_at=ms("2026-10-30", 3),
        ),
        SeedIntegration(
            "ethereum", "Ethereum", "blockchain", "api", "wallet_ln02c4d8", "Lena Main",
            ms("2024-11-03"), 85_000, public_address=_evm_address("lena-main"),
            last_synced_at=ms("2026-10-30", 3),
        ),
        SeedIntegration(
            "coinbase", "Coinbase", "exchange", "api", "wallet_ln03e7f1", "Coinbase",
            ms("2024-12-10"), 30_000, account_name="lena@example.com", last_synced_at=ms("2026-10-30", 4),
        ),
        SeedIntegration(
            "metamask", "MetaMask", "wallet", "api", "wallet_ln04b2a6", "Browser Wallet",
            ms("2025-01-20"), 2_150, public_address=_evm_address("lena-metamask"),
            last_synced_at=ms("2026-10-30", 4),
        ),
    ]  # fmt: skip


def admin_integrations() -> list[SeedIntegration]:
    return [
        SeedIntegration(
            "kraken", "Kraken", "exchange", "api", "wallet_ad01f3c2", "Treasury",
            ms("2024-10-01"), 4_200, account_name="ops-treasury", last_synced_at=ms("2026-10-30", 2),
        ),
        SeedIntegration(
            "bitcoin", "Bitcoin", "blockchain", "api", "wallet_ad02d9e4", "Reserve",
            ms("2024-10-05"), 95, public_address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            last_synced_at=ms("2026-10-30", 2),
        ),
    ]  # fmt: skip


_DAY_MS = 86_400_000


def widget_integrations(tag: str, now_ms: int) -> list[SeedIntegration]:
    """The starter accounts of a user created in the Connect widget, added over the last three days.

    1,970 api transactions in all, Binance alone 1,250: past the widget Guests' default limit of 1,000, so a
    new Guest sees Binance cut at 580 and Solana at 0 (`limitExceeded`) until a higher limit and a resync.
    """
    return [
        SeedIntegration(
            "metamask", "MetaMask", "wallet", "api", f"wallet_{tag}mm", "Browser Wallet",
            now_ms - 3 * _DAY_MS, 420, public_address=_evm_address(f"{tag}-metamask"),
            last_synced_at=now_ms - 3 * _DAY_MS,
        ),
        SeedIntegration(
            "binance", "Binance", "exchange", "api", f"wallet_{tag}bn", "Binance Spot",
            now_ms - 2 * _DAY_MS, 1_250, account_name=f"{tag}-binance", last_synced_at=now_ms - 2 * _DAY_MS,
        ),
        SeedIntegration(
            "solana", "Solana", "blockchain", "api", f"wallet_{tag}so", "Phantom",
            now_ms - _DAY_MS, 300, public_address=_solana_address(f"{tag}-solana"), last_synced_at=now_ms - _DAY_MS,
        ),
        SeedIntegration(
            "kraken", "Kraken", "exchange", "csv", f"wallet_{tag}kr", "Kraken export",
            now_ms - _DAY_MS, 75, last_synced_at=now_ms - _DAY_MS,
        ),
    ]  # fmt: skip
