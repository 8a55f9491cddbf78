"""Signing in and out, without HTTP: the security state changes of ``/auth/*``, each explicit.

* :meth:`LoginService.start`: the authorization request (code + PKCE S256 + state + nonce); its login state
  is stored server-side, keyed by ``state`` and bound to the browser by the hash of a binding id that the
  handler keeps in a small cookie (parallel tabs share it);
* :meth:`LoginService.take_state` / :meth:`check_binding`: the callback consumes that state exactly once and
  only in the browser that started it (RFC 9700 §4.7);
* :meth:`LoginService.finish`: the authorization response is checked (RFC 9207 ``iss``), the code redeemed,
  the ID token validated, and a session stored under a **new** id (session fixation, oauth2-proxy
  GHSA-f24x-5g9q-753f), browser and app alike;
* :meth:`LoginService.end`: the record goes first, so every replica stops serving the session at once, then
  both tokens are revoked (RFC 7009), which is how access really ends at the provider (RFC 10017 §6.1.2.3).

The HTTP side (query parameters, cookies, redirects) is :mod:`bff.routes.auth`; a native app's start and
hand-off are :mod:`bff.routes.mobile`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bff import audit, metrics
from bff.config import Settings
from bff.errors import BadRequest, BffError, SessionStoreUnavailable, TokenRejected
from bff.oidc.client import OidcClient
from bff.oidc.models import TokenSet
from bff.services.ratelimit import RateLimits
from bff.sessions import LoginState, Session, SessionManager
from bff.sessions.cookie import new_session_id
from bff.sessions.device import device_label
from bff.sessions.handoff import MobileLogin
from bff.sessions.model import Kind
from bff.sessions.store import public_handle_of

log = logging.getLogger("bff.auth")

# ID-token claims worth keeping for /auth/session; everything else is dropped (bytes per session count).
_DISPLAY_CLAIMS = ("name", "email", "email_verified", "preferred_username", "picture", "locale", "language")
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


def binding_hash(binding_id: str) -> str:
    return hashlib.sha256(binding_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Finished:
    """How a callback ended: a new session, or the provider's ``error`` (the person denied, ...)."""

    session_id: str | None = None
    provider_error: str | None = None


class LoginService:
    def __init__(self, settings: Settings, sessions: SessionManager, oidc: OidcClient, limits: RateLimits) -> None:
        self._settings = settings
        self._sessions = sessions
        self._oidc = oidc
        self._limits = limits

    def __repr__(self) -> str:
        return "LoginService(...)"

    async def start(
        self,
        *,
        binding_id: str,
        new_binding: bool,
        return_to: str,
        login_hint: str | None = None,
        prompt: str | None = None,
        app: MobileLogin | None = None,
    ) -> str:
        """Store the login state of a new sign-in and return the provider's authorization URL."""
        auth = await self._oidc.authorization_request(login_hint=login_hint, prompt=prompt)
        browser = binding_hash(binding_id)
        await self._limits.start_login(browser, auth.state, new_binding=new_binding)
        await self._sessions.save_login_state(
            auth.state,
            LoginState(
                code_verifier=auth.code_verifier,
                nonce=auth.nonce,
                return_to=return_to,
                binding_hash=browser,
                redirect_uri=self._settings.redirect_uri,
                issuer=self._settings.issuer,
                created_at=self._sessions.clock(),
                extra=app.to_extra() if app else {},
            ),
        )
        return auth.url

    async def take_state(self, state: str) -> LoginState:
        """The login state of ``state``, consumed (single use), or 400 ``invalid_state``."""
        login_state = await self._sessions.take_login_state(state) if state else None
        if login_state is None:
            raise BadRequest("This sign-in attempt is unknown, expired or already used.", code="invalid_state")
        await self._limits.finish_login(login_state.binding_hash, state)
        return login_state

    @staticmethod
    def check_binding(login_state: LoginState, binding_id: str | None) -> None:
        """400 ``login_binding_mismatch`` unless this browser started the sign-in."""
        if binding_id is None or not hmac.compare_digest(binding_hash(binding_id), login_state.binding_hash):
            raise BadRequest("This sign-in was started in another browser.", code="login_binding_mismatch")

    async def finish(self, login_state: LoginState, params: Mapping[str, str], *, device: str = "- -") -> Finished:
        """Check the authorization response, redeem the code, validate the ID token and store a session.

        ``device``: what the browser finishing the sign-in said it is (:func:`bff.sessions.device.device_code`)."""
        meta = await self._oidc.metadata()
        # RFC 9207: the issuer that answered must be the one we asked (mix-up defence).
        iss = params.get("iss")
        if (iss is not None and iss != login_state.issuer) or (iss is None and meta.iss_parameter_supported):
            raise BadRequest("The authorization response came from an unexpected issuer.", code="issuer_mismatch")
        if "error" in params:
            error = params["error"]
            log.info("provider returned an error at the callback", extra={"error": error})
            return Finished(provider_error=error if _ERROR_CODE.fullmatch(error) else "login_failed")
        code = params.get("code")
        if not code:
            raise BadRequest("The authorization response carries no code.", code="invalid_request")
        issued_at = self._sessions.clock()
        try:
            tokens = await self._oidc.exchange_code(code, login_state.code_verifier, login_state.redirect_uri)
        except TokenRejected as exc:
            log.warning("code exchange refused", extra={"error": exc.error})
            raise BadRequest("The identity provider refused the sign-in.", code="login_failed") from exc
        if not tokens.id_token:
            raise BadRequest("The identity provider returned no ID token.", code="invalid_id_token")
        try:
            claims = await self._oidc.verify_id_token(
                tokens.id_token, nonce=login_state.nonce, access_token=tokens.access_token
            )
        except BffError:
            # The tokens are not to be trusted or kept: revoke what was issued, best effort.
            await self.revoke(tokens.refresh_token, tokens.access_token)
            raise
        kind: Kind = "mobile" if MobileLogin.from_extra(login_state.extra) is not None else "browser"
        return Finished(session_id=await self._create_session(tokens, claims, issued_at, kind, device))

    async def _create_session(
        self, tokens: TokenSet, claims: dict[str, Any], issued_at: float, kind: Kind, device: str
    ) -> str:
        display = {k: claims[k] for k in _DISPLAY_CLAIMS if k in claims}
        if not display.keys() & {"name", "email", "preferred_username"}:
            # Providers that keep profile claims out of the ID token (oidc-provider's default) serve them
            # from UserInfo; ask once, at sign-in, and keep them only when they are about the same subject
            # (OpenID Connect Core §5.3.2).
            info = await self._oidc.userinfo(tokens.access_token)
            if info.get("sub") == claims["sub"]:
                display.update({k: info[k] for k in _DISPLAY_CLAIMS if k in info})
        sid = claims.get("sid")
        session = Session.signed_in(
            sub=str(claims["sub"]),
            claims=display,
            oidc_sid=sid if isinstance(sid, str) else None,
            tokens=tokens,
            scope=" ".join(self._settings.scopes),
            issued_at=issued_at,
            lifetimes=self._sessions.lifetimes,
            kind=kind,
            device=device,
        )
        session_id = new_session_id()
        if await self._sessions.save(session_id, session) is None:  # 256 random bits: never taken in practice
            raise SessionStoreUnavailable("The session could not be created; sign in again.")
        metrics.sessions_created.inc()
        log.info("session created", extra={"sub_hash": hashlib.sha256(session.sub.encode()).hexdigest()[:12]})
        audit.record(
            "sign_in",
            actor=session.sub,
            target={"sub": session.sub, "session": public_handle_of(session_id)},
            kind=kind,
            device=device_label(device),
        )
        return session_id

    async def replace(self, previous_id: str) -> None:
        """A new sign-in in the same browser: the session it replaces ends first, then its tokens are revoked."""
        replaced = await self._sessions.end(previous_id, reason="replaced")
        if replaced is not None:
            await self.revoke(replaced.refresh_token, replaced.access_token)

    async def end(self, session_id: str, session: Session) -> str | None:
        """Sign out: end the session everywhere, revoke its tokens; the provider's end-session URL, if any."""
        await self._sessions.end(session_id, reason="user", actor=session.sub)
        log.info("session ended by logout")
        if not session.signed_in_with_oidc:
            return None  # a Connect-only session: nothing to revoke, nobody signed in at the provider
        await self.revoke(session.refresh_token, session.access_token)
        try:
            return await self._oidc.end_session_url()
        except BffError:
            return None

    async def revoke(self, refresh_token: str | None, access_token: str | None) -> None:
        if refresh_token:
            await self._oidc.revoke(refresh_token, "refresh_token")
        if access_token:
            await self._oidc.revoke(access_token, "access_token")
