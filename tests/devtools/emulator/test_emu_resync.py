"""Resync jobs on the data API, and how they make a changed limit visible in `GET /v1/integrations`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.clock import Clock

from .conftest import Driver


def _by_alias(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["alias"]: item for item in body["data"]}


async def _resync(emu: Driver, token: str, wallet_id: str) -> Any:
    return await emu.http.post(f"/api/v1/integrations/{wallet_id}/resync", headers=emu.data_headers(token))


@pytest.fixture
def clock(emu: Driver, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The emulator's clock, standing still until moved."""
    frozen = Clock(start=time.time())
    monkeypatch.setattr(emu.app.state.emulator, "now", frozen)
    return frozen


async def test_a_job_moves_from_queued_through_ongoing_to_completed(emu: Driver, clock: Clock) -> None:
    token = (await emu.issue("guest"))["access_token"]
    queued = await _resync(emu, token, "wallet_bn7a21c0")
    assert queued.status_code == 202
    body = queued.json()
    assert body["success"] is True
    job = body["data"]
    assert set(job) == {"job_id", "status", "integration_id"}
    assert job["job_id"].startswith("sync_") and job["status"] == "queued"
    assert job["integration_id"] == "wallet_bn7a21c0"

    async def status() -> str:
        response = await emu.data(f"/v1/sync/{job['job_id']}", token)
        assert response.status_code == 200
        data = response.json()["data"]
        assert set(data) == {"job_id", "integration_id", "status"} and data["integration_id"] == "wallet_bn7a21c0"
        result: str = data["status"]
        return result

    assert await status() == "queued"
    clock.advance(0.3)
    assert await status() == "ongoing"
    clock.advance(0.3)
    assert await status() == "completed"
    clock.advance(60)
    assert await status() == "completed"


async def test_resync_and_job_not_found(emu: Driver) -> None:
    token = (await emu.issue("guest"))["access_token"]
    unknown = await _resync(emu, token, "wallet_ln01a9b3")  # Lena's, not the Guest's
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "message": "Integration not found", "details": []}
    assert (await emu.data("/v1/sync/sync_nope", token)).status_code == 404
    job_id = (await _resync(emu, token, "wallet_bn7a21c0")).json()["data"]["job_id"]
    lena = (await emu.issue("linked"))["access_token"]
    foreign = await emu.data(f"/v1/sync/{job_id}", lena)
    assert foreign.status_code == 404 and foreign.json()["error"] == "not_found"
    assert (await emu.data(f"/v1/sync/{job_id}", token)).status_code == 200


async def test_resync_needs_a_token_with_integrations_read(emu: Driver) -> None:
    assert (await emu.http.post("/api/v1/integrations/wallet_bn7a21c0/resync")).status_code == 401
    narrow = (await emu.issue("guest", scope="openid users:read"))["access_token"]
    assert (await _resync(emu, narrow, "wallet_bn7a21c0")).status_code == 403


async def test_terminal_statuses(emu: Driver) -> None:
    token = (await emu.issue("guest"))["access_token"]
    assert await emu.resync(token, "wallet_kc6b8d14") == "failed"  # KuCoin: its sync fails anyway
    assert await emu.resync(token, "wallet_by9a0f41") == "partially_synced"  # still past the limit
    assert await emu.resync(token, "wallet_lg09c7e5") == "partially_synced"  # Ledger: a stage fails anyway
    assert await emu.resync(token, "wallet_kr55d0a8") == "completed"  # a csv file


async def test_raising_a_widget_guests_limit_shows_after_a_resync_only(emu: Driver, clock: Clock) -> None:
    connected = await emu.connect()
    token = connected["access_token"]
    binance = _by_alias((await emu.data("/v1/integrations", token)).json())["Binance Spot"]
    assert binance["limitExceeded"] is True and binance["totalTransactions"] == 580

    assert (await emu.patch_limit(connected["grant_id"], {"transactionLimit": 5_000})).status_code == 200
    items = _by_alias((await emu.data("/v1/integrations", token)).json())
    assert items["Binance Spot"]["limitExceeded"] is True  # the limit alone changes nothing visible
    assert items["Binance Spot"]["totalTransactions"] == 580

    job = (await _resync(emu, token, binance["walletId"])).json()["data"]
    clock.advance(0.3)  # ongoing: the old import still shows
    assert _by_alias((await emu.data("/v1/integrations", token)).json())["Binance Spot"]["limitExceeded"] is True
    clock.advance(0.3)
    # Completion is seen from the list too, without anyone reading the job first.
    items = _by_alias((await emu.data("/v1/integrations", token)).json())
    assert "limitExceeded" not in items["Binance Spot"] and "message" not in items["Binance Spot"]
    assert items["Binance Spot"]["status"] == "COMPLETED" and items["Binance Spot"]["totalTransactions"] == 1_250
    assert items["Binance Spot"]["lastSyncedAt"] == int((clock() - 0.6 + 0.5) * 1000)
    assert items["Phantom"]["limitExceeded"] is True  # not resynced yet
    assert (await emu.data(f"/v1/sync/{job['job_id']}", token)).json()["data"]["status"] == "completed"


async def test_a_job_imports_under_the_limit_in_force_when_it_was_queued(emu: Driver, clock: Clock) -> None:
    connected = await emu.connect()
    token = connected["access_token"]
    wallet = _by_alias((await emu.data("/v1/integrations", token)).json())["Binance Spot"]["walletId"]
    job = (await _resync(emu, token, wallet)).json()["data"]
    await emu.patch_limit(connected["grant_id"], {"transactionLimit": 5_000})
    clock.advance(1)
    assert (await emu.data(f"/v1/sync/{job['job_id']}", token)).json()["data"]["status"] == "partially_synced"
    assert _by_alias((await emu.data("/v1/integrations", token)).json())["Binance Spot"]["limitExceeded"] is True
