"""Driving the Kryptos Connect widget flow without a browser: what the SPA and the widget page do, over HTTP.

The widget's own backend (``/connect/widget/...`` on the emulator, authenticated by ``X-LINK-TOKEN``) stands in
for the SDK's UI; the SPA's part is bff's ``/connect/*`` calls with ``X-CSRF: 1``.
"""

from __future__ import annotations

from typing import Any

import httpx2

from tests.support.stack import Stack

CSRF = {"X-CSRF": "1"}


async def widget_public_token(stack: Stack, link_token: str, *, email: str | None = None) -> str:
    """Log in to the widget (as a new Guest, or by email with the one-time code it shows) and consent."""
    base = stack.emulator_config.connect_api_url + "/widget"
    headers = {"X-LINK-TOKEN": link_token}
    async with httpx2.AsyncClient(timeout=10) as widget:
        if email is None:
            signed_in = await widget.post(f"{base}/guest", headers=headers, json={})
        else:
            otp = await widget.post(f"{base}/otp/request", headers=headers, json={"email": email})
            assert otp.status_code == 200, otp.text
            code = otp.json()["data"]["otp"]
            signed_in = await widget.post(f"{base}/otp/verify", headers=headers, json={"email": email, "otp": code})
        assert signed_in.status_code == 200, signed_in.text
        allowed = await widget.post(f"{base}/consent", headers=headers, json={})
        assert allowed.status_code == 200, allowed.text
        token: str = allowed.json()["data"]["public_token"]
        return token


async def connect(
    stack: Stack, client: httpx2.AsyncClient, *, url: str | None = None, email: str | None = None
) -> dict[str, Any]:
    """The whole flow from this client (a browser): link token, widget, exchange. Returns the exchange's body."""
    base = url or stack.url
    link = await client.post(f"{base}/connect/link-token", headers=CSRF)
    assert link.status_code == 200, link.text
    public_token = await widget_public_token(stack, link.json()["link_token"], email=email)
    exchanged = await client.post(f"{base}/connect/exchange", headers=CSRF, json={"public_token": public_token})
    assert exchanged.status_code == 200, exchanged.text
    body: dict[str, Any] = exchanged.json()
    return body


async def emulator_grants(stack: Stack) -> list[dict[str, Any]]:
    """What Kryptos (the emulator) lists as this client's live grants."""
    async with httpx2.AsyncClient(timeout=10) as c:
        r = await c.get(
            f"{stack.emulator_config.connect_api_url}/token/grants",
            headers={"X-Client-Id": stack.settings.client_id, "X-Client-Secret": stack.client_secret},
        )
        r.raise_for_status()
        grants: list[dict[str, Any]] = r.json()["data"]["grants"]
        return grants


async def revoke_at_kryptos(stack: Stack, grant_id: str) -> None:
    """Revoke a grant the way the Developer Portal would: at Kryptos, behind bff's back."""
    async with httpx2.AsyncClient(timeout=10) as c:
        r = await c.post(
            f"{stack.emulator_config.connect_api_url}/token/revoke",
            headers={"X-Client-Id": stack.settings.client_id, "X-Client-Secret": stack.client_secret},
            json={"grant_id": grant_id},
        )
        r.raise_for_status()


async def emulator_requests(stack: Stack, path_suffix: str) -> int:
    """How many requests the emulator has seen whose path ends with ``path_suffix``."""
    log = await stack.emulator_control("GET", "requests?limit=1000")
    return sum(1 for entry in log["requests"] if str(entry["path"]).endswith(path_suffix))
