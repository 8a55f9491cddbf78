"""The OpenID Connect relying party: the only module that imports authlib (and its JOSE library, joserfc).

It owns discovery, the authorization URL (code + PKCE S256 + state + nonce), the code exchange, ID token
validation, refresh and revocation. It talks to the provider through one pooled ``httpx2.AsyncClient`` and
translates every foreign failure at the border: network errors and 5xx become :class:`IdpUnavailable`
(502 ``idp_unavailable``), an OAuth error response becomes :class:`TokenRejected` carrying the provider's
``error`` code, and a bad ID token becomes :class:`InvalidIdToken`.

Every token-endpoint and userinfo call is first counted against the provider's quota, shared by all
replicas (:class:`~bff.ratelimit.ProviderBudget`); a spent budget, or a 429 from the provider (after which
every replica waits out its ``Retry-After``), is :class:`IdpBusy` (503 ``idp_busy``) and no call is made.
Revocation is not counted: only a signed-in session's logout can cause it. ID and logout tokens verify
only with asymmetric algorithms (:data:`ACCEPTED_SIGNING_ALGS`), whatever the provider advertises.

Nothing here assumes the Kryptos emulator: endpoints come from the provider's metadata (RFC 8414 /
OIDC Discovery), client authentication is ``client_secret_post`` or ``client_secret_basic``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx2
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jws, jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from bff import metrics
from bff.config import Settings
from bff.errors import BadRequest, BffError, IdpBusy, IdpUnavailable
from bff.ratelimit import ProviderBudget, ProviderCall, parse_retry_after, retry_after_header

log = logging.getLogger("bff.oidc")

_DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/openid_configuration")
# An unknown `kid` refetches the JWKS (the provider rotated its keys), but a forged token must not turn us
# into an amplifier: a kid still unknown after a refetch is remembered for a minute, and refetches for
# unknown kids are capped per window.
_UNKNOWN_KID_MEMORY = 60.0
_REFETCH_WINDOW = 10.0
_REFETCHES_PER_WINDOW = 5
_ID_TOKEN_LEEWAY = 60
_LOGOUT_TOKEN_MAX_AGE = 300  # a logout token older than this is refused (its jti is remembered longer)
_BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# The only algorithms an ID or logout token may be signed with, whatever the provider advertises: asymmetric
# ones, whose verification key is public. Never `none` (an unsigned token), never HS* (signed with the client
# secret, which this service holds: anything it could verify, anyone with the secret could forge).
ACCEPTED_SIGNING_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class TokenRejected(BffError):
    """The provider refused a grant (RFC 6749 §5.2). ``error`` is the provider's code, e.g. invalid_grant."""

    status = 401
    default_code = "token_rejected"
    title = "The identity provider refused the request"

    def __init__(self, error: str, description: str | None = None) -> None:
        self.error = error
        super().__init__(f"The identity provider answered {error!r}.", code="token_rejected")
        self.description = description


class InvalidIdToken(BadRequest):
    default_code = "invalid_id_token"
    title = "The ID token is not valid"


class InvalidLogoutToken(BadRequest):
    default_code = "invalid_logout_token"
    title = "The logout token is not valid"


@dataclass(frozen=True, slots=True)
class LogoutClaims:
    jti: str
    sub: str | None
    sid: str | None


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    revocation_endpoint: str | None
    end_session_endpoint: str | None
    iss_parameter_supported: bool
    id_token_algs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    expires_at: float
    refresh_token: str | None
    refresh_expires_at: float | None
    id_token: str | None
    scope: str | None


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


class OidcClient:
    def __init__(self, settings: Settings, http: httpx2.AsyncClient, *, budget: ProviderBudget | None = None) -> None:
        self._settings = settings
        self._budget = budget  # the provider quota shared by every replica; None counts nothing
        self._client_id = settings.client_id
        self._client_secret = settings.client_secret
        self._http = http
        self._metadata: ProviderMetadata | None = None
        self._metadata_lock = asyncio.Lock()
        self._jwks: KeySet | None = None
        self._jwks_lock = asyncio.Lock()
        self._unknown_kids: dict[str, float] = {}
        self._refetches: list[float] = []

    def __repr__(self) -> str:
        return f"OidcClient(issuer={self._settings.issuer!r}, client_id={self._client_id!r})"

    # -- discovery -------------------------------------------------------------------------------

    @property
    def metadata_loaded(self) -> bool:
        return self._metadata is not None

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is not None:
            return self._metadata
        async with self._metadata_lock:
            if self._metadata is None:
                self._metadata = await self._discover()
                log.info("provider metadata loaded", extra={"issuer": self._metadata.issuer})
        return self._metadata

    async def _discover(self) -> ProviderMetadata:
        issuer = self._settings.issuer
        doc: dict[str, Any] | None = None
        for path in _DISCOVERY_PATHS:  # the Kryptos docs spell it with an underscore; try the standard first
            response = await self._send("GET", issuer + path)
            if response.status_code == 200:
                doc = _json_object(response)
                break
        if doc is None:
            raise IdpUnavailable("The identity provider's discovery document could not be loaded.")
        # OIDC Discovery §4.3: the issuer in the document must be exactly the one we asked.
        if doc.get("issuer") != issuer:
            raise IdpUnavailable("The discovery document names a different issuer.")
        try:
            methods = doc.get("code_challenge_methods_supported")
            if methods is not None and "S256" not in methods:
                raise IdpUnavailable("The identity provider does not support PKCE S256.")
            return ProviderMetadata(
                issuer=issuer,
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                userinfo_endpoint=doc.get("userinfo_endpoint"),
                revocation_endpoint=doc.get("revocation_endpoint"),
                end_session_endpoint=doc.get("end_session_endpoint"),
                iss_parameter_supported=bool(doc.get("authorization_response_iss_parameter_supported")),
                id_token_algs=_signing_algs(doc.get("id_token_signing_alg_values_supported")),
            )
        except KeyError as exc:
            raise IdpUnavailable(f"The discovery document lacks {exc.args[0]!r}.") from None

    # -- the authorization request ---------------------------------------------------------------

    async def authorization_request(
        self, *, login_hint: str | None = None, prompt: str | None = None
    ) -> AuthorizationRequest:
        meta = await self.metadata()
        state = generate_token(43)
        nonce = generate_token(43)
        verifier = generate_token(64)  # RFC 7636 §4.1: 43-128 unreserved characters
        extra: dict[str, str] = {
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if login_hint:
            extra["login_hint"] = login_hint
        if prompt:
            extra["prompt"] = prompt
        url = prepare_grant_uri(
            meta.authorization_endpoint,
            client_id=self._client_id,
            response_type="code",
            redirect_uri=self._settings.redirect_uri,
            scope=" ".join(self._settings.scopes),
            state=state,
            **extra,
        )
        return AuthorizationRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

    # -- token endpoint --------------------------------------------------------------------------

    async def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        return await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )

    async def refresh(self, refresh_token: str, *, http_timeout: float | None = None) -> TokenSet:
        """Redeem ``refresh_token``. ``http_timeout`` overrides ``BFF_IDP_TIMEOUT`` for this one call: once a
        rotating refresh token is sent, the answer must be waited for (see :mod:`bff.tokens`)."""
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, http_timeout=http_timeout
        )

    async def _token_request(self, form: dict[str, str], *, http_timeout: float | None = None) -> TokenSet:
        meta = await self.metadata()
        # Every token-endpoint call (exchange or refresh, from any caller) is counted before it is made.
        call: ProviderCall = "authorization_code" if form["grant_type"] == "authorization_code" else "refresh_token"
        if self._budget is not None:
            await self._budget.spend(call)
        started = time.time()
        response = await self._send("POST", meta.token_endpoint, data=form, client_auth=True, http_timeout=http_timeout)
        if response.status_code == 429:
            raise await self._provider_said_wait(call, response)
        body = _json_object(response) if response.content else {}
        if response.status_code >= 500:
            raise IdpUnavailable("The identity provider's token endpoint failed; try again.")
        if response.status_code != 200:
            error = body.get("error")
            if not isinstance(error, str):
                raise IdpUnavailable("The identity provider answered the token request unexpectedly.")
            raise TokenRejected(error, body.get("error_description"))
        try:
            access_token = str(body["access_token"])
            if str(body.get("token_type", "")).lower() != "bearer":
                raise IdpUnavailable("The identity provider issued a token type this service cannot use.")
            expires_in = float(body.get("expires_in", 3600))
            refresh_expires_in = body.get("refresh_expires_in")
        except (KeyError, TypeError, ValueError):
            raise IdpUnavailable("The identity provider's token response is malformed.") from None
        return TokenSet(
            access_token=access_token,
            expires_at=started + expires_in,
            refresh_token=body.get("refresh_token"),
            refresh_expires_at=started + float(refresh_expires_in) if refresh_expires_in else None,
            id_token=body.get("id_token"),
            scope=body.get("scope"),
        )

    async def revoke(self, token: str, token_type_hint: str) -> None:
        """RFC 7009 revocation; failures are logged, not raised: logout must finish regardless."""
        try:
            meta = await self.metadata()
            if meta.revocation_endpoint is None:
                return
            response = await self._send(
                "POST",
                meta.revocation_endpoint,
                data={"token": token, "token_type_hint": token_type_hint},
                client_auth=True,
            )
            if response.status_code != 200:
                log.warning(
                    "token revocation refused",
                    extra={"status": response.status_code, "hint": token_type_hint},
                )
        except IdpUnavailable:
            log.warning("token revocation failed: provider unreachable", extra={"hint": token_type_hint})

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """Claims from the UserInfo endpoint (OIDC Core §5.3), or {} when there is none or it fails.

        Called at most once per sign-in, and only when the ID token carries no display claims: the
        Kryptos provider allows 1,000 userinfo calls an hour per client. When that budget is spent (or the
        provider said to wait) the call is not made and the answer is {} as for any failure: the claims
        only decorate ``/auth/session``, and failing a sign-in whose code is already redeemed would waste
        the tokens and send the person back through the token endpoint.
        """
        meta = await self.metadata()
        if not meta.userinfo_endpoint:
            return {}
        try:
            if self._budget is not None:
                await self._budget.spend("userinfo")
        except IdpBusy:
            log.warning("userinfo skipped: the provider budget is spent", extra={"reason": "budget"})
            return {}
        try:
            response = await self._http.get(
                meta.userinfo_endpoint,
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            )
        except httpx2.HTTPError:
            log.warning("userinfo unreachable", extra={"reason": "network"})
            return {}
        if response.status_code == 429:
            await self._provider_said_wait("userinfo", response)
            return {}
        if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
            log.warning("userinfo refused", extra={"status": response.status_code})
            return {}
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def end_session_url(self) -> str | None:
        """RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0), when the provider has one."""
        meta = await self.metadata()
        if not meta.end_session_endpoint:
            return None
        query = urlencode(
            {
                "client_id": self._client_id,
                "post_logout_redirect_uri": self._settings.effective_post_logout_redirect_uri,
            }
        )
        sep = "&" if "?" in meta.end_session_endpoint else "?"
        return f"{meta.end_session_endpoint}{sep}{query}"

    # -- ID token --------------------------------------------------------------------------------

    async def verify_id_token(self, id_token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        """Signature via JWKS (refetched once on an unknown ``kid``), then iss, aud, azp, exp, iat, nonce."""
        meta = await self.metadata()
        token = await self._decode_signed(id_token, meta, what="ID token")
        params: dict[str, Any] = {"nonce": nonce, "client_id": self._client_id}
        if access_token:
            params["access_token"] = access_token
        claims = CodeIDToken(
            token.claims,
            token.header,
            {
                "iss": {"essential": True, "values": [meta.issuer]},
                "aud": {"essential": True, "values": [self._client_id]},
            },
            params,
        )
        try:
            claims.validate(leeway=_ID_TOKEN_LEEWAY)
        except Exception as exc:  # authlib raises its own JoseError tree; translate all of it here
            raise InvalidIdToken(f"The ID token was rejected ({type(exc).__name__}).") from exc
        if not isinstance(token.claims.get("sub"), str) or not token.claims["sub"]:
            raise InvalidIdToken("The ID token has no subject.")
        return dict(token.claims)

    async def verify_logout_token(self, logout_token: str) -> LogoutClaims:
        """OpenID Connect Back-Channel Logout 1.0 §2.6 validation (the ``jti`` replay check is the caller's)."""
        meta = await self.metadata()
        token = await self._decode_signed(logout_token, meta, what="logout token")
        claims = token.claims
        now = time.time()
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        events = claims.get("events")
        iat = claims.get("iat")
        exp = claims.get("exp")
        problems = [
            (claims.get("iss") != meta.issuer, "wrong issuer"),
            (self._client_id not in audiences, "wrong audience"),
            (
                not isinstance(iat, int | float) or not now - _LOGOUT_TOKEN_MAX_AGE <= iat <= now + _ID_TOKEN_LEEWAY,
                "missing or stale iat",
            ),
            (exp is not None and (not isinstance(exp, int | float) or exp < now - _ID_TOKEN_LEEWAY), "expired"),
            (
                not isinstance(events, dict) or not isinstance(events.get(_BACKCHANNEL_EVENT), dict),
                "not a back-channel logout event",
            ),
            ("nonce" in claims, "carries a nonce"),  # §2.4: forbidden, so an ID token cannot pass as one
            (not isinstance(claims.get("jti"), str) or not claims["jti"], "no jti"),
            (not isinstance(claims.get("sub"), str) and not isinstance(claims.get("sid"), str), "neither sub nor sid"),
        ]
        for failed, reason in problems:
            if failed:
                raise InvalidLogoutToken(f"The logout token is not valid: {reason}.")
        typ = token.header.get("typ")
        if typ is not None and str(typ).lower() not in ("logout+jwt", "application/logout+jwt", "jwt"):
            raise InvalidLogoutToken("The logout token has an unexpected type.")
        return LogoutClaims(jti=claims["jti"], sub=claims.get("sub"), sid=claims.get("sid"))

    async def _decode_signed(self, compact: str, meta: ProviderMetadata, *, what: str) -> jwt.Token:
        # Filtered again here (not only at discovery): whatever built this metadata, `none` and HS* never verify.
        registry = JWSRegistry(algorithms=[alg for alg in meta.id_token_algs if alg in ACCEPTED_SIGNING_ALGS])
        error = InvalidIdToken if what == "ID token" else InvalidLogoutToken
        try:
            try:
                return jwt.decode(compact, await self._keys(), registry=registry)
            except InvalidKeyIdError:
                kid = jws.extract_compact(compact.encode()).headers().get("kid")
                return jwt.decode(compact, await self._keys(unknown_kid=str(kid)), registry=registry)
        except (JoseError, ValueError) as exc:
            raise error(f"The {what}'s signature could not be verified.") from exc

    async def _keys(self, *, unknown_kid: str | None = None) -> KeySet:
        async with self._jwks_lock:
            if self._jwks is None:
                self._jwks = await self._fetch_jwks()
            elif unknown_kid is not None and self._may_refetch_for(unknown_kid):
                self._jwks = await self._fetch_jwks()
                if not any(k.kid == unknown_kid for k in self._jwks.keys):
                    self._unknown_kids[unknown_kid] = time.monotonic()
            return self._jwks

    def _may_refetch_for(self, kid: str) -> bool:
        assert self._jwks is not None
        if any(k.kid == kid for k in self._jwks.keys):
            return False  # another request refetched while this one waited for the lock
        now = time.monotonic()
        self._unknown_kids = {k: t for k, t in self._unknown_kids.items() if now - t < _UNKNOWN_KID_MEMORY}
        self._refetches = [t for t in self._refetches if now - t < _REFETCH_WINDOW]
        if kid in self._unknown_kids or len(self._refetches) >= _REFETCHES_PER_WINDOW:
            return False
        self._refetches.append(now)
        return True

    async def _fetch_jwks(self) -> KeySet:
        meta = await self.metadata()
        response = await self._send("GET", meta.jwks_uri)
        if response.status_code != 200:
            raise IdpUnavailable("The identity provider's signing keys could not be loaded.")
        try:
            return KeySet.import_key_set(_json_object(response))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise IdpUnavailable("The identity provider's JWKS is malformed.") from exc

    # -- the provider's quota ---------------------------------------------------------------------

    async def _provider_said_wait(self, call: ProviderCall, response: httpx2.Response) -> IdpBusy:
        """A 429 from the provider: every replica holds off that endpoint until its ``Retry-After``."""
        # Kryptos documents the header as `retry_after`; RFC 9110 spells it Retry-After.
        retry_after = response.headers.get("retry-after") or response.headers.get("retry_after")
        if self._budget is not None:
            return await self._budget.provider_said_wait(call, retry_after)
        metrics.idp_rate_limited.labels(call=call).inc()
        return IdpBusy(
            "The identity provider asked us to slow down; try again shortly.",
            headers=retry_after_header(parse_retry_after(retry_after, now=time.time())),
        )

    # -- transport -------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        data: dict[str, str] | None = None,
        client_auth: bool = False,
        http_timeout: float | None = None,
    ) -> httpx2.Response:
        headers = {"Accept": "application/json"}
        if client_auth:
            data = dict(data or {})
            secret = self._client_secret.get_secret_value()
            if self._settings.token_auth_method == "client_secret_basic":  # noqa: S105 - a method name
                # RFC 6749 §2.3.1: form-urlencode id and secret before base64 (authlib's helper does not).
                raw = f"{quote(self._client_id, safe='')}:{quote(secret, safe='')}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            else:
                data.update(client_id=self._client_id, client_secret=secret)
        started = time.perf_counter()
        try:
            if http_timeout is None:
                response = await self._http.request(method, url, data=data, headers=headers)
            else:
                response = await self._http.request(method, url, data=data, headers=headers, timeout=http_timeout)
        except httpx2.TimeoutException as exc:
            metrics.upstream_errors.labels(upstream="idp", kind="timeout").inc()
            raise IdpUnavailable("The identity provider did not answer in time.") from exc
        except httpx2.HTTPError as exc:
            metrics.upstream_errors.labels(upstream="idp", kind="unreachable").inc()
            raise IdpUnavailable("The identity provider could not be reached.") from exc
        metrics.upstream_latency.labels(upstream="idp").observe(time.perf_counter() - started)
        return response


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise IdpUnavailable("The identity provider answered with something other than JSON.") from None
    if not isinstance(body, dict):
        raise IdpUnavailable("The identity provider answered with unexpected JSON.")
    return body


def _signing_algs(advertised: Any) -> tuple[str, ...]:
    """What ID and logout tokens may be signed with: the provider's list intersected with
    :data:`ACCEPTED_SIGNING_ALGS`.

    When nothing is left (a provider advertising only ``none`` or HS*), RS256 rather than refusing the
    metadata: OpenID Connect Discovery §3 requires every provider to support RS256, so it is the one choice
    that is always legitimate, and it can never let an unsigned or secret-signed token through; refusing the
    document would take refresh, logout and readiness down on every replica over a field that only decides
    how signatures are checked.
    """
    offered = advertised if isinstance(advertised, list) else []
    algs = tuple(dict.fromkeys(a for a in offered if isinstance(a, str) and a in ACCEPTED_SIGNING_ALGS))
    refused = sorted({str(a) for a in offered} - ACCEPTED_SIGNING_ALGS)
    if refused:
        log.warning("provider signing algorithms ignored", extra={"reason": ",".join(refused)[:100]})
    return algs or ("RS256",)
