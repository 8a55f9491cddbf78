"""The OpenID Connect relying party; with :mod:`bff.oidc.jose` the only code that imports authlib.

It owns discovery, the authorization URL (code + PKCE S256 + state + nonce), the code exchange, refresh,
revocation, userinfo and the end-session URL; ID and logout tokens are verified by
:class:`bff.oidc.jose.TokenVerifier` with the keys this client fetches. It talks to the provider through
one pooled ``httpx2.AsyncClient`` and translates every foreign failure at the border: network errors and
5xx become :class:`~bff.errors.IdpUnavailable` (502 ``idp_unavailable``), an OAuth error response becomes
:class:`~bff.errors.TokenRejected` carrying the provider's ``error`` code.

Every token-endpoint and userinfo call is first counted against the provider's quota, shared by all
replicas (:class:`~bff.oidc.budget.ProviderBudget`); a spent budget, or a 429 from the provider (after which
every replica waits out its ``Retry-After``), is :class:`~bff.errors.IdpBusy` (503 ``idp_busy``) and no
call is made. Revocation is not counted: only a signed-in session's logout can cause it.

Inside a traced request each provider call is a span, and carries its W3C ``traceparent`` (:mod:`bff.tracing`).

Nothing here assumes the Kryptos emulator: endpoints come from the provider's metadata (RFC 8414 /
OIDC Discovery), client authentication is ``client_secret_post`` or ``client_secret_basic``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx2
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from bff import metrics, tracing
from bff.config import Settings
from bff.errors import IdpBusy, IdpUnavailable, TokenRejected, retry_after_header
from bff.oidc.budget import ProviderBudget, ProviderCall, parse_retry_after
from bff.oidc.jose import TokenVerifier, signing_algs
from bff.oidc.models import AuthorizationRequest, LogoutClaims, ProviderMetadata, TokenSet

log = logging.getLogger("bff.oidc")

_DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/openid_configuration")


class OidcClient:
    def __init__(
        self,
        settings: Settings,
        http: httpx2.AsyncClient,
        *,
        clock: Callable[[], float],
        budget: ProviderBudget | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._budget = budget  # the provider quota shared by every replica; None counts nothing
        self._client_id = settings.client_id
        self._client_secret = settings.client_secret
        self._http = http
        self._metadata: ProviderMetadata | None = None
        self._metadata_lock = asyncio.Lock()
        self._verifier = TokenVerifier(self._client_id, self._jwks_document, clock)

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
                id_token_algs=signing_algs(doc.get("id_token_signing_alg_values_supported")),
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
        rotating refresh token is sent, the answer must be waited for (see :mod:`bff.services.tokens`)."""
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, http_timeout=http_timeout
        )

    async def _token_request(self, form: dict[str, str], *, http_timeout: float | None = None) -> TokenSet:
        meta = await self.metadata()
        # Every token-endpoint call (exchange or refresh, from any caller) is counted before it is made.
        call: ProviderCall = "authorization_code" if form["grant_type"] == "authorization_code" else "refresh_token"
        if self._budget is not None:
            await self._budget.spend(call)
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
            raise TokenRejected(error)
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
            expires_in=expires_in,
            refresh_token=body.get("refresh_token"),
            refresh_expires_in=float(refresh_expires_in) if refresh_expires_in else None,
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
            response = await self._traced(
                "GET",
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

    # -- signed tokens (bff.oidc.jose) -------------------------------------------------------------

    async def verify_id_token(self, id_token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        return await self._verifier.verify_id_token(
            id_token, await self.metadata(), nonce=nonce, access_token=access_token
        )

    async def verify_logout_token(self, logout_token: str) -> LogoutClaims:
        return await self._verifier.verify_logout_token(logout_token, await self.metadata())

    async def _jwks_document(self) -> dict[str, Any]:
        meta = await self.metadata()
        response = await self._send("GET", meta.jwks_uri)
        if response.status_code != 200:
            raise IdpUnavailable("The identity provider's signing keys could not be loaded.")
        return _json_object(response)

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
            headers=retry_after_header(parse_retry_after(retry_after, now=self._clock())),
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
            response = await self._traced(method, url, headers=headers, data=data, http_timeout=http_timeout)
        except httpx2.TimeoutException as exc:
            metrics.upstream_errors.labels(upstream="idp", kind="timeout").inc()
            raise IdpUnavailable("The identity provider did not answer in time.") from exc
        except httpx2.HTTPError as exc:
            metrics.upstream_errors.labels(upstream="idp", kind="unreachable").inc()
            raise IdpUnavailable("The identity provider could not be reached.") from exc
        metrics.upstream_latency.labels(upstream="idp").observe(time.perf_counter() - started)
        return response

    async def _traced(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        data: dict[str, str] | None = None,
        http_timeout: float | None = None,
    ) -> httpx2.Response:
        """One HTTP call to the provider; inside a traced request, a span for it (method, host, the endpoint's
        path; never the query, a header or the form) whose ``traceparent`` goes along (:mod:`bff.tracing`)."""
        with tracing.http_span(method, url, peer="oidc-provider", templated=True) as span:
            if span is not None:
                headers = span.headers(headers)
            if http_timeout is None:
                response = await self._http.request(method, url, data=data, headers=headers)
            else:
                response = await self._http.request(method, url, data=data, headers=headers, timeout=http_timeout)
            if span is not None:
                span.answered(response.status_code)
            return response


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise IdpUnavailable("The identity provider answered with something other than JSON.") from None
    if not isinstance(body, dict):
        raise IdpUnavailable("The identity provider answered with unexpected JSON.")
    return body
