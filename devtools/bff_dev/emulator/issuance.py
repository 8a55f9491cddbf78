"""Minting tokens: access tokens (RFC 9068 JWTs), ID tokens, token responses and logout tokens.

Every token minted here is also recorded in the state, so validity is decided by the record (revoked
grant, rotated-out refresh token, forced expiry), never by the JWT alone.
"""

from __future__ import annotations

import secrets
from typing import Any

from bff_dev.emulator.config import EmulatorUser
from bff_dev.emulator.state import AccessTokenRecord, EmulatorState, OidcGrant, RefreshTokenRecord, new_id

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TTL = 120


def scope_claims(user: EmulatorUser, scope: list[str]) -> dict[str, Any]:
    """Standard claims released for the granted scopes (OIDC Core §5.4); `sub` always."""
    claims: dict[str, Any] = {"sub": user.sub}
    if "profile" in scope:
        claims.update(
            name=user.name,
            preferred_username=user.username,
            language=user.language,
            updated_at=user.updated_at,
        )
    if "email" in scope:
        claims.update(email=user.email, email_verified=user.email_verified)
    return claims


def mint_access_token(
    state: EmulatorState, grant: OidcGrant, user: EmulatorUser, *, ttl: int | None = None
) -> AccessTokenRecord:
    now = int(state.now())
    lifetime = state.settings.access_token_ttl if ttl is None else ttl
    jti = new_id("", 24)
    claims = {
        "iss": state.config.issuer,
        "sub": user.sub,
        "aud": state.config.data_api_url,
        "client_id": grant.client_id,
        "scope": " ".join(grant.scope),
        "iat": now,
        "exp": now + lifetime,
        "jti": jti,
        "workspaceId": user.workspace_id,
        "workspaceName": user.workspace_name,
        "workspaceType": user.workspace_type,
        "role": user.role,
    }
    token = state.keys.sign(claims, typ="at+jwt")
    record = AccessTokenRecord(
        token=token,
        jti=jti,
        grant_id=grant.grant_id,
        client_id=grant.client_id,
        sub=user.sub,
        scope=list(grant.scope),
        iat=now,
        exp=float(now + lifetime),
    )
    state.access_tokens[token] = record
    return record


def mint_refresh_token(state: EmulatorState, grant: OidcGrant) -> RefreshTokenRecord:
    now = int(state.now())
    # Opaque, like oidc-provider's: nothing in it can be read by the client.
    record = RefreshTokenRecord(
        token=secrets.token_urlsafe(48),
        grant_id=grant.grant_id,
        client_id=grant.client_id,
        sub=grant.sub,
        scope=list(grant.scope),
        iat=now,
        exp=float(now + state.settings.refresh_token_ttl),
    )
    state.refresh_tokens[record.token] = record
    return record


def mint_id_token(state: EmulatorState, grant: OidcGrant, user: EmulatorUser, *, nonce: str | None) -> str:
    now = int(state.now())
    claims: dict[str, Any] = {
        "iss": state.config.issuer,
        "aud": grant.client_id,
        "iat": now,
        "exp": now + state.settings.id_token_ttl,
        "auth_time": grant.auth_time,
        "sid": grant.sid,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    claims.update(scope_claims(user, grant.scope))
    return state.keys.sign(claims)


def token_response(
    state: EmulatorState,
    grant: OidcGrant,
    user: EmulatorUser,
    *,
    nonce: str | None,
    refresh_token: str | None,
    access_token_ttl: int | None = None,
) -> dict[str, Any]:
    access = mint_access_token(state, grant, user, ttl=access_token_ttl)
    body: dict[str, Any] = {
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": int(access.exp) - access.iat,
        "id_token": mint_id_token(state, grant, user, nonce=nonce),
        "scope": " ".join(grant.scope),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


def mint_logout_token(state: EmulatorState, *, client_id: str, sub: str, sid: str | None) -> tuple[str, str]:
    """A Back-Channel Logout 1.0 §2.4 logout token: no nonce, an `events` member, short-lived."""
    now = int(state.now())
    jti = new_id("", 18)
    claims: dict[str, Any] = {
        "iss": state.config.issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_TTL,
        "jti": jti,
        "sub": sub,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    if sid is not None:
        claims["sid"] = sid
    return state.keys.sign(claims, typ="logout+jwt"), jti
