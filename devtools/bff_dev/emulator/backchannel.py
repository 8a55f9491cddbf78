"""Sending OpenID Connect Back-Channel Logout 1.0 requests to clients and recording the outcome."""

from __future__ import annotations

import asyncio

import httpx2

from bff_dev.emulator.config import EmulatorClient
from bff_dev.emulator.issuance import mint_logout_token
from bff_dev.emulator.state import Delivery, EmulatorState

_TIMEOUT = httpx2.Timeout(5.0)


async def _deliver(http: httpx2.AsyncClient, delivery: Delivery, logout_token: str) -> None:
    try:
        response = await http.post(delivery.uri, data={"logout_token": logout_token})
    except httpx2.HTTPError as exc:
        delivery.error = f"{type(exc).__name__}: {exc}"
        return
    delivery.status = response.status_code


async def send_logouts(
    state: EmulatorState, clients: list[EmulatorClient], *, sub: str, sid: str | None
) -> list[Delivery]:
    """POST a logout token to each client's `backchannel_logout_uri` (§2.5) and return the deliveries."""
    planned: list[tuple[Delivery, str]] = []
    for client in clients:
        if client.backchannel_logout_uri is None:
            continue
        token, jti = mint_logout_token(state, client_id=client.client_id, sub=sub, sid=sid)
        delivery = Delivery(client.client_id, client.backchannel_logout_uri, sub, sid, jti)
        state.deliveries.append(delivery)
        state.count("backchannel_logouts")
        planned.append((delivery, token))
    if not planned:
        return []
    if state.http_client is not None:
        await asyncio.gather(*(_deliver(state.http_client, d, t) for d, t in planned))
    else:
        # Logouts are rare, and a mounted emulator never runs its own lifespan (Starlette does not start
        # the lifespans of mounted apps), so a client per batch is simpler than a pooled one.
        async with httpx2.AsyncClient(timeout=_TIMEOUT) as http:
            await asyncio.gather(*(_deliver(http, d, t) for d, t in planned))
    return [delivery for delivery, _ in planned]


def end_sessions(state: EmulatorState, *, sub: str | None, sid: str | None) -> list[str]:
    """End the provider's login sessions (one sid, or every session of sub); return the sids ended.

    Grants of an ended session are revoked unless they carry `offline_access`, as node oidc-provider does
    at logout: offline grants are meant to outlive the browser session.
    """
    ended: list[str] = []
    for session in state.sessions.values():
        if session.ended or (sid is not None and session.sid != sid) or (sub is not None and session.sub != sub):
            continue
        session.ended = True
        ended.append(session.sid)
    for grant in state.grants.values():
        if grant.sid in ended and "offline_access" not in grant.scope:
            state.revoke_grant(grant.grant_id, "end of login session")
    return ended
