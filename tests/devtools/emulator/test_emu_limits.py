"""Transaction limits: resolution, their effect on integrations, and the Connect API that changes them."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import BASIC_CLIENT_ID, BASIC_SECRET, Driver

LIMIT_MESSAGE = "Unable to fetch transactions for {} due to transaction limit reached, kindly update your plan"


async def _limit_of(emu: Driver, username: str) -> Any:
    tokens = await emu.issue(username)
    response = await emu.data("/v1/userinfo", tokens["access_token"])
    assert response.status_code == 200
    return response.json()["userInfo"]["transaction_limit"]


def _by_wallet(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["walletId"]: item for item in body["data"]}


async def test_default_guest_exceeds_the_platform_default(emu: Driver) -> None:
    items = _by_wallet(await emu.integrations("guest"))
    crossing = items["wallet_by9a0f41"]  # Bybit: 98,260 imported before it, 9,800 available
    assert crossing["status"] == "PARTIALLY SYNCED"
    assert crossing["limitExceeded"] is True
    assert crossing["totalTransactions"] == 1_740
    assert crossing["message"] == LIMIT_MESSAGE.format("bybit")
    assert crossing["lastSyncLog"]["Transactions"] == "FAILED"
    assert crossing["lastSyncLogDetails"]["Transactions"] == {
        "status": "FAILED", "message": LIMIT_MESSAGE.format("bybit"), "limitExceeded": True,
    }  # fmt: skip
    later = items["wallet_so3c7b25"]
    assert later["limitExceeded"] is True and later["totalTransactions"] == 0
    limited = {wallet for wallet, item in items.items() if item.get("limitExceeded")}
    assert limited == {"wallet_by9a0f41", "wallet_so3c7b25"}
    imported = sum(i["totalTransactions"] for i in items.values() if i["type"] == "api" and i["status"] != "ONGOING")
    assert imported == 100_000
    assert items["wallet_bn7a21c0"]["status"] == "COMPLETED" and items["wallet_bn7a21c0"]["totalTransactions"] == 58_400


@pytest.mark.parametrize("username", ["guest", "guest2", "linked", "admin"])
async def test_limit_exceeded_is_never_false(emu: Driver, username: str) -> None:
    body = await emu.integrations(username, pageSize=200)
    for item in body["data"]:
        assert item.get("limitExceeded", True) is True
        for stage in item.get("lastSyncLogDetails", {}).values():
            assert stage.get("limitExceeded", True) is True


async def test_linked_users_are_never_limited(emu: Driver) -> None:
    assert await _limit_of(emu, "linked") is None
    assert await _limit_of(emu, "admin") is None
    body = await emu.integrations("linked")
    assert sum(item["totalTransactions"] for item in body["data"]) == 257_150
    assert all(item["status"] == "COMPLETED" for item in body["data"])


async def test_resolution_order(emu: Driver) -> None:
    assert await _limit_of(emu, "guest") == 100_000  # platform default
    await emu.configure(workspace_limit={"transaction_limit": 50_000})
    assert await _limit_of(emu, "guest") == 50_000  # workspace default
    assert (await emu.patch_limit("cgrant_guest_demo", {"transactionLimit": 250_000})).status_code == 200
    assert await _limit_of(emu, "guest") == 250_000  # per-user override, not capped
    assert await _limit_of(emu, "guest2") == 50_000  # other guests keep the workspace default


async def test_disabling_the_limiter_at_any_level_removes_the_cap(emu: Driver) -> None:
    await emu.configure(workspace_limit={"enable_limiter": False})
    assert await _limit_of(emu, "guest") is None
    assert (await emu.patch_limit("cgrant_guest_demo", {"transactionLimit": 1_000})).status_code == 200
    assert await _limit_of(emu, "guest") == 1_000  # the user's level decides first
    await emu.patch_limit("cgrant_guest_demo", {"enableLimiter": False})
    assert await _limit_of(emu, "guest") is None
    # Changed since limits became snapshots: what was imported shows until the limited integrations resync.
    tokens = await emu.issue("guest")
    for wallet in ("wallet_by9a0f41", "wallet_so3c7b25"):
        assert await emu.resync(tokens["access_token"], wallet) == "completed"
    items = (await emu.integrations("guest"))["data"]
    assert not any("limitExceeded" in item for item in items)


async def test_workspace_default_is_capped(emu: Driver) -> None:
    response = await emu.http.post("/_emulator/config", json={"workspace_limit": {"transaction_limit": 100_001}})
    assert response.status_code == 400
    assert await _limit_of(emu, "guest") == 100_000


async def test_userinfo_shape_and_scopes(emu: Driver) -> None:
    tokens = await emu.issue("guest")
    body = (await emu.data("/v1/userinfo", tokens["access_token"])).json()
    assert body["message"]
    assert body["userInfo"] == {
        "sub": "anon_7f3a9c21", "name": "Guest Demo", "email": "guest.demo@guest.kryptos.io",
        "email_verified": True, "preferred_username": "guest", "language": "en", "transaction_limit": 100_000,
    }  # fmt: skip
    assert body["scopes"] == tokens["scope"].split()
    narrow = await emu.issue("guest", scope="openid users:read")
    info = (await emu.data("/v1/userinfo", narrow["access_token"])).json()["userInfo"]
    assert info == {"sub": "anon_7f3a9c21"}  # no profile: no transaction_limit


async def test_patch_changes_the_limit_at_once_and_the_imports_at_the_next_sync(emu: Driver) -> None:
    # Until limits became snapshots this asserted that the integrations changed with the PATCH alone.
    response = await emu.patch_limit("cgrant_guest_demo", {"transactionLimit": 200_000})
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "data": {"grant_id": "cgrant_guest_demo", "user_id": "anon_7f3a9c21", "transaction_limit": 200_000,
                 "enable_limiter": True},
    }  # fmt: skip
    assert await _limit_of(emu, "guest") == 200_000
    items = _by_wallet(await emu.integrations("guest"))
    assert {w for w, item in items.items() if item.get("limitExceeded")} == {"wallet_by9a0f41", "wallet_so3c7b25"}

    tokens = await emu.issue("guest")
    assert await emu.resync(tokens["access_token"], "wallet_by9a0f41") == "completed"
    items = _by_wallet(await emu.integrations("guest"))
    assert items["wallet_by9a0f41"]["status"] == "COMPLETED"
    assert items["wallet_by9a0f41"]["totalTransactions"] == 9_800
    assert "message" not in items["wallet_by9a0f41"] and "limitExceeded" not in items["wallet_by9a0f41"]
    assert items["wallet_so3c7b25"]["limitExceeded"] is True  # not resynced yet

    # Lowering the limit: a resync imports only what fits beside what the other integrations already hold.
    lower = await emu.patch_limit("cgrant_guest_demo", {"transactionLimit": 60_000, "enableLimiter": True})
    assert lower.json()["data"]["transaction_limit"] == 60_000
    assert _by_wallet(await emu.integrations("guest"))["wallet_cb3f9e12"]["totalTransactions"] == 12_350
    assert await emu.resync(tokens["access_token"], "wallet_cb3f9e12") == "partially_synced"
    coinbase = _by_wallet(await emu.integrations("guest"))["wallet_cb3f9e12"]
    assert coinbase["limitExceeded"] is True and coinbase["totalTransactions"] == 0
    assert coinbase["status"] == "PARTIALLY SYNCED"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "At least one"),
        ({"transactionLimit": 0}, "positive integer"),
        ({"transactionLimit": -5}, "positive integer"),
        ({"transactionLimit": 1.5}, "positive integer"),
        ({"transactionLimit": "100"}, "positive integer"),
        ({"transactionLimit": True}, "positive integer"),
        ({"transactionLimit": None}, "positive integer"),
        ({"enableLimiter": "false"}, "boolean"),
        ([1, 2], "JSON object"),
    ],
)
async def test_patch_validation(emu: Driver, body: Any, fragment: str) -> None:
    response = await emu.patch_limit("cgrant_guest_demo", body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False and payload["code"] == "VALIDATION_ERROR"
    assert fragment in payload["error"]
    assert await _limit_of(emu, "guest") == 100_000


async def test_patch_rejects_non_json(emu: Driver) -> None:
    response = await emu.http.patch(
        "/connect/developer/grants/cgrant_guest_demo/transaction-limit",
        content=b"{nope",
        headers={**emu.connect_headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["code"] == "VALIDATION_ERROR"


async def test_patch_error_codes(emu: Driver) -> None:
    linked = await emu.patch_limit("cgrant_linked_lena", {"transactionLimit": 10})
    assert linked.status_code == 400
    assert linked.json() == {
        "success": False,
        "error": "User is not a Guest account. Limits only apply to Guest users.",
        "code": "NOT_ANON_USER",
    }
    foreign = await emu.patch_limit("cgrant_guest_demo_other_app", {"transactionLimit": 10})
    assert foreign.status_code == 403 and foreign.json()["code"] == "ACCESS_DENIED"
    missing = await emu.patch_limit("cgrant_nope", {"transactionLimit": 10})
    assert missing.status_code == 404 and missing.json()["code"] == "GRANT_NOT_FOUND"
    unauthenticated = await emu.http.patch(
        "/connect/developer/grants/cgrant_guest_demo/transaction-limit",
        json={"transactionLimit": 10},
        headers=emu.connect_headers(secret="wrong"),
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.json() == {"success": False, "error": "Invalid client credentials", "code": "INVALID_CLIENT"}
    assert await _limit_of(emu, "guest") == 100_000


async def test_grants_lists_only_the_callers_grants(emu: Driver) -> None:
    response = await emu.http.get("/connect/token/grants", headers=emu.connect_headers())
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    grants = body["data"]["grants"]
    assert body["data"]["count"] == len(grants) == 4
    assert {g["grant_id"] for g in grants} == {
        "cgrant_guest_demo", "cgrant_guest_gustav", "cgrant_linked_lena", "cgrant_admin_ada",
    }  # fmt: skip
    for grant in grants:
        assert set(grant) == {"grant_id", "workspace_id", "scopes", "created_at", "expires_at"}
        assert grant["created_at"].endswith("Z") and "openid" in grant["scopes"].split()
    other = await emu.http.get("/connect/token/grants", headers=emu.connect_headers(BASIC_CLIENT_ID, BASIC_SECRET))
    assert other.json()["data"] == {"grants": [], "count": 0}
    anonymous = await emu.http.get("/connect/token/grants")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "INVALID_CLIENT"
