"""The transaction limit and its effect on `GET /v1/integrations` items, plus the fuzzy search.

Limit resolution follows the Developer Portal doc: per-user override → workspace default → platform
default (100,000, limiter on); the first level that defines something decides. A level that disables the
limiter decides "no cap" (`None`); a level that only enables it, without a number, lets the next level
supply the number. Linked users are never limited.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Any

from bff_dev.emulator.config import PLATFORM_DEFAULT_TRANSACTION_LIMIT
from bff_dev.emulator.seed import SeedIntegration
from bff_dev.emulator.state import ConnectGrant, EmulatorState, LimitSetting

LIMIT_MESSAGE = "Unable to fetch transactions for {provider} due to transaction limit reached, kindly update your plan"
_PLATFORM_DEFAULT = LimitSetting(PLATFORM_DEFAULT_TRANSACTION_LIMIT, True)
_COUNTED = ("COMPLETED", "PARTIALLY SYNCED")


def connect_grant_for(state: EmulatorState, sub: str, client_id: str) -> ConnectGrant | None:
    """The user's Connect grant with this client, else any of theirs (the override lives on the grant)."""
    mine = [g for g in state.connect_grants.values() if g.sub == sub]
    return next((g for g in mine if g.client_id == client_id), mine[0] if mine else None)


def effective_limit(state: EmulatorState, sub: str, client_id: str) -> int | None:
    """The user's effective transaction import cap; None means no cap."""
    user = state.users_by_sub[sub]
    if not user.is_guest:
        return None
    grant = connect_grant_for(state, sub, client_id)
    levels = [
        grant.limit if grant is not None else LimitSetting(),
        state.workspace_limits.get(client_id, LimitSetting()),
        _PLATFORM_DEFAULT,
    ]
    for level in levels:
        if level.enable_limiter is False:
            return None
        if level.transaction_limit is not None:
            return level.transaction_limit
    return PLATFORM_DEFAULT_TRANSACTION_LIMIT


def _imported(seeds: list[SeedIntegration], limit: int | None) -> dict[str, tuple[int, bool]]:
    """walletId -> (transactions imported, limit exceeded), walking api imports in `addedOn` order."""
    out: dict[str, tuple[int, bool]] = {}
    used = 0
    reached = False
    for seed in sorted(seeds, key=lambda s: s.added_on):
        if seed.type != "api" or seed.sync not in _COUNTED:
            continue
        if limit is None:
            out[seed.wallet_id] = (seed.available_transactions, False)
            continue
        if reached or used + seed.available_transactions > limit:
            # The integration that crosses the cap gets what still fits; every later one gets nothing.
            fit = 0 if reached else limit - used
            reached = True
            out[seed.wallet_id] = (fit, True)
            used += fit
        else:
            out[seed.wallet_id] = (seed.available_transactions, False)
            used += seed.available_transactions
    return out


def _stages(seed: SeedIntegration) -> list[str]:
    if seed.type == "csv" or seed.category == "unknown":
        return ["Transactions"]
    if seed.category == "exchange":
        return ["Balances", "Transactions"]
    return ["Balances", "Defi Balances", "NFT Holdings", "Transactions"]


def _render(seed: SeedIntegration, base_url: str, imported: tuple[int, bool] | None) -> dict[str, Any]:
    total, limited = imported if imported is not None else (seed.available_transactions, False)
    item: dict[str, Any] = {
        "provider": seed.provider,
        "providerPublicName": seed.public_name,
        "publicAddress": seed.public_address,
        "walletId": seed.wallet_id,
        "logoUrl": f"{base_url}/logos/{seed.provider}.svg",
        "isContract": seed.is_contract,
        "alias": seed.alias,
    }
    if seed.sync == "never":
        item["status"] = "active"
    else:
        details: dict[str, dict[str, Any]] = {}
        for stage in _stages(seed):
            if stage in seed.stage_failures:
                details[stage] = {"status": "FAILED", "message": seed.stage_failures[stage]}
            elif seed.sync == "ONGOING" and stage == "Transactions":
                details[stage] = {"status": "ONGOING"}
            else:
                details[stage] = {"status": "COMPLETED"}
        status: str = seed.sync
        message = next((details[s]["message"] for s in reversed(_stages(seed)) if "message" in details[s]), None)
        if limited:
            message = LIMIT_MESSAGE.format(provider=seed.provider)
            details["Transactions"] = {"status": "FAILED", "message": message, "limitExceeded": True}
            status = "PARTIALLY SYNCED"
        item["status"] = status
        if message is not None:
            item["message"] = message
        item["lastSyncLog"] = {stage: detail["status"] for stage, detail in details.items()}
        item["lastSyncLogDetails"] = details
    if limited:
        item["limitExceeded"] = True  # documented as omitted, never false, when the limit was not hit
    item.update(
        addedOn=seed.added_on,
        lastSyncedAt=seed.last_synced_at,
        category=seed.category,
        type=seed.type,
        totalTransactions=total,
    )
    return item


def render_integrations(seeds: list[SeedIntegration], *, limit: int | None, base_url: str) -> list[dict[str, Any]]:
    imported = _imported(seeds, limit)
    ordered = sorted(seeds, key=lambda s: s.added_on)
    return [_render(seed, base_url, imported.get(seed.wallet_id)) for seed in ordered]


_SPLIT = re.compile(r"[\s_\-./:@]+")
FUZZY_RATIO = 0.75


def matches(seed: SeedIntegration, key: str) -> bool:
    """Fuzzy match over alias, address, accountName, walletId, public name and exchange (provider).

    The rule: case-insensitive; a field matches when it contains the key. Names (alias, account name,
    public name, exchange) also match with typos: every word of the key must be contained in, or similar
    to (difflib ratio >= 0.75, one or two typos: "binanse", "metamsk", "etherum"), some word of the field,
    and words shorter than four characters must be contained exactly. Identifiers (address, walletId)
    match by containment only, so "Hot Wallet" does not match every `wallet_…` id.
    """
    needle = key.strip().lower()
    if not needle:
        return True
    identifiers = (seed.public_address, seed.wallet_id)
    if any(value and needle in value.lower() for value in identifiers):
        return True
    needle_words = [w for w in _SPLIT.split(needle) if w]
    for value in (seed.alias, seed.account_name, seed.public_name, seed.provider):
        if not value:
            continue
        text = value.lower()
        if needle in text:
            return True
        words = [w for w in _SPLIT.split(text) if w]
        if needle_words and all(_word_matches(n, words) for n in needle_words):
            return True
    return False


def _word_matches(needle: str, words: list[str]) -> bool:
    if any(needle in word for word in words):
        return True
    return len(needle) >= 4 and any(SequenceMatcher(None, needle, word).ratio() >= FUZZY_RATIO for word in words)
