"""The emulated OpenID provider's routes under `/oidc` (except `/auth` and `/token`, see their modules).

Discovery (both spellings), JWKS, userinfo, revocation (RFC 7009), introspection (RFC 7662) and
RP-initiated logout with back-channel logout. Unlike oidc-provider (15 s by default) no clock tolerance is
applied to access tokens, so expiry tests are exact.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bff_dev.emulator.authorize import add_query, authorize
from bff_dev.emulator.backchannel import end_sessions, send_logouts
from bff_dev.emulator.client_auth import NO_STORE, OAuthError, authenticate_client, form_dict
from bff_dev.emulator.config import DEFAULT_SCOPES, EmulatorClient
from bff_dev.emulator.issuance import scope_claims
from bff_dev.emulator.pages import error_page, signed_out_page
from bff_dev.emulator.state import EmulatorState
from bff_dev.emulator.token_endpoint import token

CLAIMS_SUPPORTED = [
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "acr",
    "name", "preferred_username", "language", "updated_at", "email", "email_verified",
]  # fmt: skip


def _state(request: Request) -> EmulatorState:
    emulator: EmulatorState = request.app.state.emulator
    return emulator


def discovery_document(state: EmulatorState) -> dict[str, Any]:
    issuer = state.config.issuer
    auth_methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/auth",
        "token_endpoint": issuer + "/token",
        "userinfo_endpoint": issuer + "/userinfo",
        "jwks_uri": issuer + "/jwks",
        "revocation_endpoint": issuer + "/token/revocation",
        "introspection_endpoint": issuer + "/token/introspection",
        "end_session_endpoint": issuer + "/session/end",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "id_token_signing_alg_values_supported": list(state.settings.id_token_algs),
        "scopes_supported": list(DEFAULT_SCOPES),
        "claims_supported": CLAIMS_SUPPORTED,
        "subject_types_supported": ["public"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }


async def discovery(request: Request) -> Response:
    return JSONResponse(discovery_document(_state(request)))


async def jwks(request: Request) -> Response:
    return JSONResponse(_state(request).keys.jwks(), media_type="application/jwk-set+json")


def _bearer_error(description: str, status: int = 401, error: str = "invalid_token") -> JSONResponse:
    challenge = f'Bearer realm="kryptos-emulator", error="{error}", error_description="{description}"'
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"WWW-Authenticate": challenge, **NO_STORE},
    )


async def userinfo(request: Request) -> Response:
    state = _state(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    access_token = value.strip() if scheme.lower() == "bearer" else ""
    if not access_token and request.method == "POST":
        # RFC 6750 §2.2: the form-encoded body parameter is also allowed.
        access_token = form_dict(await request.form()).get("access_token", "")
    state.count("userinfo")
    if not access_token:
        return _bearer_error("no access token provided")
    record = state.active_access_token(access_token)
    if record is None:
        return _bearer_error("invalid token provided")
    if "openid" not in record.scope:
        return _bearer_error("access token missing 'openid' scope", 403, "insufficient_scope")
    return JSONResponse(scope_claims(state.users_by_sub[record.sub], record.scope), headers=NO_STORE)


async def _client_and_token(request: Request, state: EmulatorState) -> tuple[EmulatorClient, str]:
    """The authenticated client and the ``token`` form field of a revocation or introspection request."""
    form = form_dict(await request.form())
    client = authenticate_client(state, request, form)
    value = form.get("token")
    if not value:
        raise OAuthError("invalid_request", "missing required parameter 'token'")
    return client, value


async def revocation(request: Request) -> Response:
    state = _state(request)
    try:
        client, value = await _client_and_token(request, state)
        record = state.access_tokens.get(value) or state.refresh_tokens.get(value)
        if record is not None:
            if record.client_id != client.client_id:
                raise OAuthError("invalid_request", "client is not authorized to revoke the presented token")
            # oidc-provider semantics: revoking either kind of token revokes the whole grant.
            state.revoke_grant(record.grant_id, "revoked at the revocation endpoint")
    except OAuthError as exc:
        return exc.response()
    state.count("revocations")
    return Response(status_code=200, headers=NO_STORE)


async def introspection(request: Request) -> Response:
    state = _state(request)
    try:
        client, value = await _client_and_token(request, state)
    except OAuthError as exc:
        return exc.response()
    state.count("introspections")
    body: dict[str, Any] = {"active": False}
    access = state.active_access_token(value)
    refresh = state.active_refresh_token(value) if access is None else None
    if access is not None and access.client_id == client.client_id:
        user = state.users_by_sub[access.sub]
        body = {
            "active": True,
            "sub": access.sub,
            "client_id": access.client_id,
            "scope": " ".join(access.scope),
            "exp": int(access.exp),
            "iat": access.iat,
            "jti": access.jti,
            "token_type": "Bearer",
            "iss": state.config.issuer,
            "aud": state.config.data_api_url,
            "workspaceId": user.workspace_id,
            "workspaceName": user.workspace_name,
            "workspaceType": user.workspace_type,
            "role": user.role,
        }
    elif refresh is not None and refresh.client_id == client.client_id:
        body = {
            "active": True,
            "sub": refresh.sub,
            "client_id": refresh.client_id,
            "scope": " ".join(refresh.scope),
            "exp": int(refresh.exp),
            "iat": refresh.iat,
            "token_type": "refresh_token",
            "iss": state.config.issuer,
            "aud": refresh.client_id,
        }
    return JSONResponse(body, headers=NO_STORE)


def _logout_error(description: str) -> Response:
    return HTMLResponse(error_page("invalid_request", description), status_code=400, headers=NO_STORE)


async def end_session(request: Request) -> Response:
    """RP-Initiated Logout 1.0: end the login session, notify clients, then redirect or show a page."""
    state = _state(request)
    params = form_dict(await request.form()) if request.method == "POST" else dict(request.query_params)
    claims: dict[str, Any] | None = None
    if params.get("id_token_hint"):
        claims = state.keys.verify(params["id_token_hint"])
        if claims is None or claims.get("iss") != state.config.issuer:
            return _logout_error("could not validate id_token_hint")
    client_id = params.get("client_id")
    if claims is not None:
        if client_id and client_id != claims.get("aud"):
            return _logout_error("client_id does not match the id_token_hint audience")
        client_id = str(claims.get("aud"))
    client = state.clients.get(client_id) if client_id else None
    if client_id and client is None:
        return _logout_error("unknown client_id")
    target = params.get("post_logout_redirect_uri")
    if target is not None:
        if client is None:
            return _logout_error("post_logout_redirect_uri requires client_id or id_token_hint")
        if target not in client.post_logout_redirect_uris:
            return _logout_error("post_logout_redirect_uri not registered for this client")

    sub = str(claims["sub"]) if claims is not None and "sub" in claims else None
    sid = str(claims["sid"]) if claims is not None and "sid" in claims else None
    hinted = params.get("logout_hint")
    if sub is None and hinted:
        user = state.users_by_username.get(hinted) or state.users_by_sub.get(hinted)
        sub = user.sub if user is not None else None
    state.count("end_session")
    ended = end_sessions(state, sub=sub, sid=sid) if (sub or sid) else []
    # Read everything needed before the first await: another request may change the state meanwhile.
    targets = [(state.sessions[ended_sid].sub, ended_sid) for ended_sid in ended]
    clients = list(state.clients.values())
    for target_sub, target_sid in targets:
        await send_logouts(state, clients, sub=target_sub, sid=target_sid)

    if target is not None:
        query = {"state": params["state"]} if "state" in params else {}
        status = 303 if request.method == "POST" else 302
        return RedirectResponse(add_query(target, query), status_code=status, headers=NO_STORE)
    return HTMLResponse(signed_out_page(), headers=NO_STORE)


routes = [
    Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
    # The Kryptos docs spell it with an underscore; serve that too.
    Route("/.well-known/openid_configuration", discovery, methods=["GET"]),
    Route("/jwks", jwks, methods=["GET"]),
    Route("/auth", authorize, methods=["GET", "POST"]),
    Route("/token", token, methods=["POST"]),
    Route("/userinfo", userinfo, methods=["GET", "POST"]),
    Route("/token/revocation", revocation, methods=["POST"]),
    Route("/token/introspection", introspection, methods=["POST"]),
    Route("/session/end", end_session, methods=["GET", "POST"]),
]
