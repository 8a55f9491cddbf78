"""Signed tokens from the provider: the JWKS cache, ID token validation and logout token validation.

With :mod:`bff.oidc.client` the only code that imports authlib (and its JOSE library, joserfc). ID and
logout tokens verify only with asymmetric algorithms (:data:`ACCEPTED_SIGNING_ALGS`), whatever the
provider advertises; a bad token is :class:`~bff.errors.InvalidIdToken` or
:class:`~bff.errors.InvalidLogoutToken` (400).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from authlib.oidc.core import CodeIDToken
from joserfc import jws, jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from bff.errors import IdpUnavailable, InvalidIdToken, InvalidLogoutToken
from bff.oidc.models import LogoutClaims, ProviderMetadata

log = logging.getLogger("bff.oidc")

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


class TokenVerifier:
    """Verifies what the provider signed, with its keys fetched once and refetched (bounded) on rotation."""

    def __init__(
        self, client_id: str, fetch_keys: Callable[[], Awaitable[dict[str, Any]]], clock: Callable[[], float]
    ) -> None:
        self._client_id = client_id
        self._fetch_document = fetch_keys  # GET jwks_uri, as a JSON object
        self._clock = clock
        self._jwks: KeySet | None = None
        self._jwks_lock = asyncio.Lock()
        self._unknown_kids: dict[str, float] = {}
        self._refetches: list[float] = []

    def __repr__(self) -> str:
        return f"TokenVerifier(client_id={self._client_id!r})"

    async def verify_id_token(
        self, id_token: str, meta: ProviderMetadata, *, nonce: str, access_token: str | None = None
    ) -> dict[str, Any]:
        """Signature via JWKS (refetched once on an unknown ``kid``), then iss, aud, azp, exp, iat, nonce."""
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

    async def verify_logout_token(self, logout_token: str, meta: ProviderMetadata) -> LogoutClaims:
        """OpenID Connect Back-Channel Logout 1.0 §2.6 validation (the ``jti`` replay check is the caller's)."""
        token = await self._decode_signed(logout_token, meta, what="logout token")
        claims = token.claims
        now = self._clock()
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
                    self._unknown_kids[unknown_kid] = self._clock()
            return self._jwks

    def _may_refetch_for(self, kid: str) -> bool:
        assert self._jwks is not None
        if any(k.kid == kid for k in self._jwks.keys):
            return False  # another request refetched while this one waited for the lock
        now = self._clock()
        self._unknown_kids = {k: t for k, t in self._unknown_kids.items() if now - t < _UNKNOWN_KID_MEMORY}
        self._refetches = [t for t in self._refetches if now - t < _REFETCH_WINDOW]
        if kid in self._unknown_kids or len(self._refetches) >= _REFETCHES_PER_WINDOW:
            return False
        self._refetches.append(now)
        return True

    async def _fetch_jwks(self) -> KeySet:
        document = await self._fetch_document()
        try:
            return KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise IdpUnavailable("The identity provider's JWKS is malformed.") from exc


def signing_algs(advertised: Any) -> tuple[str, ...]:
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
