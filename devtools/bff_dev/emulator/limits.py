"""Transaction limits: how the effective limit is resolved, and what a sync imports under it.

Resolution follows the Developer Portal doc: per-user override → workspace default → platform default
(100,000, limiter on); the first level that defines something decides. A level that disables the limiter
decides "no cap" (`None`); a level that only enables it, without a number, lets the next level supply the
number.

What `GET /v1/integrations` shows is not recomputed from the current limit on every call: like the real
service, an integration shows what its last sync imported. `initial_imports` is the snapshot taken when a
user appears (at start-up for seeded users, at creation for users made in the widget): api imports walk in
`addedOn` order, the one that crosses the cap gets what still fits and every later one gets nothing.
`reimport` is one integration's resync: it imports that integration again, from the start, into whatever
room the user's other integrations leave under the limit. So raising a limit changes nothing visible until
a resync of the limited integration completes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bff_dev.emulator.config import PLATFORM_DEFAULT_TRANSACTION_LIMIT
from bff_dev.emulator.seed import SeedIntegration

_COUNTED = ("COMPLETED", "PARTIALLY SYNCED")


@dataclass
class LimitSetting:
    transaction_limit: int | None = None
    enable_limiter: bool | None = None


PLATFORM_DEFAULT = LimitSetting(PLATFORM_DEFAULT_TRANSACTION_LIMIT, True)


def resolve(levels: Iterable[LimitSetting]) -> int | None:
    """The effective cap from the levels, most specific first; None means no cap."""
    for level in levels:
        if level.enable_limiter is False:
            return None
        if level.transaction_limit is not None:
            return level.transaction_limit
    return PLATFORM_DEFAULT_TRANSACTION_LIMIT


@dataclass(frozen=True)
class Imported:
    """What an integration's last sync imported: the count, whether the cap stopped it, when (ms)."""

    count: int
    limited: bool
    synced_at: int | None


def counted(seed: SeedIntegration) -> bool:
    """Only api imports that ran count against the cap; csv files and failed or unsynced sources do not."""
    return seed.type == "api" and seed.sync in _COUNTED


def initial_imports(seeds: list[SeedIntegration], limit: int | None) -> dict[str, Imported]:
    """walletId -> Imported for every counted integration, walking them in `addedOn` order."""
    out: dict[str, Imported] = {}
    used = 0
    reached = False
    for seed in sorted(seeds, key=lambda s: s.added_on):
        if not counted(seed):
            continue
        available = seed.available_transactions
        if limit is not None and (reached or used + available > limit):
            # The integration that crosses the cap gets what still fits; every later one gets nothing.
            fit = 0 if reached else limit - used
            reached = True
            out[seed.wallet_id] = Imported(fit, True, seed.last_synced_at)
            used += fit
        else:
            out[seed.wallet_id] = Imported(available, False, seed.last_synced_at)
            used += available
    return out


def reimport(seed: SeedIntegration, imports: Mapping[str, Imported], limit: int | None, synced_at: int) -> Imported:
    """A resync of a counted integration: what fits beside what the user's other integrations hold."""
    available = seed.available_transactions
    if limit is None:
        return Imported(available, False, synced_at)
    others = sum(entry.count for wallet_id, entry in imports.items() if wallet_id != seed.wallet_id)
    room = max(0, limit - others)
    return Imported(min(available, room), available > room, synced_at)
