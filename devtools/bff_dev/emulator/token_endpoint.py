"""The token endpoint (`/oidc/token`): authorization_code and refresh_token grants.

Mirrors node `oidc-provider`: a replayed code revokes what was issued from it; with rotation on, a
rotated-out refresh token presented again returns `invalid_grant` and revokes the whole grant,
including the newest refresh token (RFC 9700 §4.14.2 reuse detection).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff_dev.emulator.client_auth import NO_STORE, OAuthError, authenticate_client, form_dict
from bff_dev.emulator.config import EmulatorClient
from bff_dev.emulator.issuance import mint_refresh_token, token_response
from bff_dev.emulator.state import RATE_LIMIT_RETRY_AFTER, EmulatorState

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _authorization_code(state: EmulatorState, client: EmulatorClient, form: dict[str, str]) -> JSONResponse:
    if not form.get("code"):
        raise OAuthError("invalid_request", "missing required parameter 'code'")
    if not form.get("redirect_uri"):
        raise OAuthError("invalid_request", "missing required parameter 'redirect_uri'")
    code = state.codes.get(form["code"])
    if code is None or state.now() >= code.expires_at:
        raise OAuthError("invalid_grant", "grant request is invalid (authorization code not found or expired)")
    if code.consumed:
        # RFC 6749 §4.1.2: a code used twice SHOULD revoke the tokens issued from it.
        state.count("code_replay")
        if code.grant_id is not None:
            state.revoke_grant(code.grant_id, "authorization code replay")
        raise OAuthError("invalid_grant", "grant request is invalid (authorization code already consumed)")
    if code.client_id != client.client_id:
        raise OAuthError("invalid_grant", "grant request is invalid (code was issued to another client)")
    if code.redirect_uri != form["redirect_uri"]:
        raise OAuthError("invalid_grant", "grant request is invalid (redirect_uri mismatch)")
    verifier = form.get("code_verifier", "")
    if not _VERIFIER.match(verifier) or not hmac.compare_digest(_s256(verifier), code.code_challenge):
        raise OAuthError("invalid_grant", "grant request is invalid (PKCE verification failed)")
    code.consumed = True
    grant = state.create_grant(
        client_id=client.client_id,
        sub=code.sub,
        scope=code.scope,
        sid=code.sid,
        auth_time=code.auth_time,
        nonce=code.nonce,
    )
    code.grant_id = grant.grant_id
    refresh = mint_refresh_token(state, grant).token if "offline_access" in grant.scope else None
    body = token_response(state, grant, state.users_by_sub[code.sub], nonce=code.nonce, refresh_token=refresh)
    return JSONResponse(body, headers=NO_STORE)


def _refresh_token(state: EmulatorState, client: EmulatorClient, form: dict[str, str]) -> JSONResponse:
    if not form.get("refresh_token"):
        raise OAuthError("invalid_request", "missing required parameter 'refresh_token'")
    injected = state.settings.token_failure
    if injected in ("invalid_grant", "invalid_request", "server_error", "temporarily_unavailable"):
        raise OAuthError(injected, "the refresh request failed (injected failure)")
    record = state.refresh_tokens.get(form["refresh_token"])
    if record is None or record.client_id != client.client_id:
        raise OAuthError("invalid_grant", "grant request is invalid (refresh token not found)")
    grant = state.grants[record.grant_id]
    if record.consumed:
        state.count("refresh_token_reuse")
        state.revoke_grant(grant.grant_id, "rotated-out refresh token reused")
        raise OAuthError("invalid_grant", "grant request is invalid (refresh token already rotated out)")
    if grant.revoked:
        raise OAuthError("invalid_grant", "grant request is invalid (grant revoked)")
    if state.now() >= record.exp:
        raise OAuthError("invalid_grant", "grant request is invalid (refresh token expired)")
    requested = form.get("scope", "").split()
    if not set(requested) <= set(record.scope):
        raise OAuthError("invalid_scope", "requested scope exceeds the granted scope")
    if state.settings.rotate_refresh_tokens:
        record.consumed = True
        refresh = mint_refresh_token(state, grant).token
    else:
        refresh = record.token
    body = token_response(state, grant, state.users_by_sub[record.sub], nonce=None, refresh_token=refresh)
    return JSONResponse(body, headers=NO_STORE)


async def token(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    form = form_dict(await request.form())
    delay = state.settings.token_delay_seconds
    if delay > 0:
        await asyncio.sleep(delay)
    # Everything below runs without awaiting, so no other request interleaves with these state changes.
    grant_type = form.get("grant_type") or "missing"
    grant_type_key = grant_type if grant_type in ("authorization_code", "refresh_token", "missing") else "other"
    try:
        injected = state.settings.token_failure
        if injected == "unavailable":
            raise OAuthError("temporarily_unavailable", "the provider is unavailable (injected failure)", 503)
        if injected == "rate_limited":
            state.count_token(grant_type_key, "rate_limited")
            return JSONResponse(
                {"error": "rate_limited", "error_description": "too many token requests for this client"},
                status_code=429,
                headers={**NO_STORE, "Retry-After": str(RATE_LIMIT_RETRY_AFTER)},
            )
        client = authenticate_client(state, request, form)
        if grant_type == "missing":
            raise OAuthError("invalid_request", "missing required parameter 'grant_type'")
        if grant_type == "authorization_code":
            response = _authorization_code(state, client, form)
        elif grant_type == "refresh_token":
            response = _refresh_token(state, client, form)
        else:
            raise OAuthError("unsupported_grant_type", f"unsupported grant_type requested ({grant_type})")
    except OAuthError as exc:
        state.count_token(grant_type_key, exc.error)
        return exc.response()
    state.count_token(grant_type_key, "success")
    return response
