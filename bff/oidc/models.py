"""What the provider says, as values: its metadata, a token response, an authorization request, logout claims."""

from __future__ import annotations

from dataclasses import dataclass


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
    """A token response (RFC 6749 §5.1). Lifetimes are as the provider said them, in seconds from the
    request: :meth:`bff.sessions.model.Session.signed_in` and ``.refreshed`` turn them into times."""

    access_token: str
    expires_in: float
    refresh_token: str | None
    refresh_expires_in: float | None  # not standard; Kryptos sends it
    id_token: str | None
    scope: str | None


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str
