"""`GET /v1/integrations` items: what each integration's last sync imported, rendered as documented, plus
the fuzzy search.

The counts and the limit's effect come from the user's import snapshot (`limits.py`, `syncs.py`), not from
the current limit: a raised limit shows only after a resync. Linked users are never limited.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Any

from bff_dev.emulator.limits import Imported
from bff_dev.emulator.seed import SeedIntegration

LIMIT_MESSAGE = "Unable to fetch transactions for {provider} due to transaction limit reached, kindly update your plan"


def _stages(seed: SeedIntegration) -> list[str]:
    if seed.type == "csv" or seed.category == "unknown":
        return ["Transactions"]
    if seed.category == "exchange":
        return ["Balances", "Transactions"]
    return ["Balances", "Defi Balances", "NFT Holdings", "Transactions"]


def _render(seed: SeedIntegration, base_url: str, imported: Imported | None) -> dict[str, Any]:
    # Integrations the limit does not count (csv, failed, never synced) have no snapshot entry.
    if imported is None:
        imported = Imported(seed.available_transactions, False, seed.last_synced_at)
    total, limited = imported.count, imported.limited
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
        lastSyncedAt=imported.synced_at,
        category=seed.category,
        type=seed.type,
        totalTransactions=total,
    )
    return item


def render_integrations(
    seeds: list[SeedIntegration], *, imports: dict[str, Imported], base_url: str
) -> list[dict[str, Any]]:
    ordered = sorted(seeds, key=lambda s: s.added_on)
    return [_render(seed, base_url, imports.get(seed.wallet_id)) for seed in ordered]


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
