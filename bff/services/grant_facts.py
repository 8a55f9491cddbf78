"""What the administrator's grant list learns: each grant's kind (Guest or Linked) and limit, from the
transaction-limit answers bff forwarded.

Kryptos's ``GET /token/grants`` carries neither, and no documented endpoint reads a grant's limit. So bff
remembers what each ``PATCH .../transaction-limit`` answer said —
200: a Guest, with its limit and limiter; 400 ``NOT_ANON_USER``: Linked — in one Redis hash (not secret), and
adds it to the list as ``known`` (null where nothing was learned yet).
"""

from __future__ import annotations

import json
from typing import Any

from bff.sessions.store import GRANT_FACTS_KEY, KeyValueStore


def data_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` object of a Connect API answer (``{success, data}``), or {} when it has none."""
    data = doc.get("data")
    return data if isinstance(data, dict) else {}


class GrantFacts:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return "GrantFacts(...)"

    async def annotate_grants(self, raw: bytes) -> bytes:
        """``GET /token/grants`` with a ``known`` object per grant: kind and limit as learned from earlier
        transaction-limit answers (Kryptos's list carries neither), null where nothing was learned yet."""
        try:
            doc = json.loads(raw)
            grants = doc["data"]["grants"]
        except (ValueError, KeyError, TypeError):
            return raw  # not the documented shape: pass it on untouched
        if not isinstance(grants, list):
            return raw
        facts = await self._store.hash_get_all(GRANT_FACTS_KEY)
        for entry in grants:
            if isinstance(entry, dict):
                known = _parse_facts(facts.get(str(entry.get("grant_id"))))
                entry["known"] = known
        return json.dumps(doc, separators=(",", ":")).encode()

    async def learn_limit(self, grant_id: str, status: int, raw: bytes) -> dict[str, Any]:
        """Remember what a transaction-limit answer said about the grant (kind, limit, limiter), and return
        what it said in a few words (its status, its error ``code``, the limit it reports) for the audit trail."""
        said: dict[str, Any] = {"status": status, "code": None}
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return said
        if not isinstance(doc, dict):
            return said
        code = str(doc.get("code"))
        facts: dict[str, Any] | None = None
        if status == 200 and doc.get("success") is True:
            data = data_of(doc)
            limit = data.get("transaction_limit")
            limiter = data.get("enable_limiter")
            facts = {
                "kind": "guest",
                "transaction_limit": limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
                "enable_limiter": limiter if isinstance(limiter, bool) else None,
            }
            said.update(transaction_limit=facts["transaction_limit"], enable_limiter=facts["enable_limiter"])
        elif doc.get("code") is not None:
            said["code"] = code[:64]
        if code == "NOT_ANON_USER":
            facts = {"kind": "linked", "transaction_limit": None, "enable_limiter": None}
        elif code == "GRANT_NOT_FOUND":
            await self._store.hash_delete(GRANT_FACTS_KEY, grant_id)
            return said
        if facts is not None:
            await self._store.hash_set(GRANT_FACTS_KEY, grant_id, json.dumps(facts, separators=(",", ":")).encode())
        return said

    async def forget(self, grant_id: str) -> None:
        await self._store.hash_delete(GRANT_FACTS_KEY, grant_id)


def _parse_facts(blob: bytes | None) -> dict[str, Any]:
    empty: dict[str, Any] = {"kind": None, "transaction_limit": None, "enable_limiter": None}
    if blob is None:
        return empty
    try:
        facts = json.loads(blob)
    except ValueError:
        return empty
    if not isinstance(facts, dict):
        return empty
    return {name: facts.get(name) for name in empty}
