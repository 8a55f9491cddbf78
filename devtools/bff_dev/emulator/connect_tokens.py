"""The Connect widget flow's tokens: link tokens, public tokens, their exchange for `cat_` tokens, revocation.

Lifetimes from the Kryptos overview: link and public tokens 30 minutes, access tokens and grants 15 years
(`expires_in` 473,040,000 s; a grant's `expires_at` is its creation date 15 years on, as in the backend
guide's example). Refusals raise `ConnectError` with the documented code; the routes (`connect_api.py`,
`widget.py`) answer it as `{success: false, error, code}`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import JSONResponse

from bff_dev.emulator.config import DEFAULT_SCOPES
from bff_dev.emulator.connect_records import ConnectGrant, LinkToken, PublicToken, iso_z
from bff_dev.emulator.limits import LimitSetting
from bff_dev.emulator.state import EmulatorState, new_id

LINK_TOKEN_TTL = 30 * 60
PUBLIC_TOKEN_TTL = 30 * 60
ACCESS_TOKEN_EXPIRES_IN = 473_040_000
GRANT_YEARS = 15


class ConnectError(Exception):
    """A Connect API refusal: HTTP status, message and the documented `code`."""

    def __init__(self, status: int, error: str, code: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.code = code

    def response(self) -> JSONResponse:
        return JSONResponse({"success": False, "error": self.error, "code": self.code}, status_code=self.status)


def _years_later(timestamp: float, years: int) -> str:
    start = datetime.fromtimestamp(timestamp, UTC)
    try:
        end = start.replace(year=start.year + years)
    except ValueError:  # 29 February in a year that has none
        end = start.replace(year=start.year + years, day=28)
    return end.strftime("%Y-%m-%dT%H:%M:%SZ")


def checked_scopes(value: object) -> str:
    """The requested scopes, space-separated and de-duplicated; every one must be known to the emulator."""
    if not isinstance(value, str) or not value.split():
        raise ConnectError(400, "scopes is required: a space-separated string", "INVALID_SCOPE")
    scopes = list(dict.fromkeys(value.split()))
    unknown = [s for s in scopes if s not in DEFAULT_SCOPES]
    if unknown:
        raise ConnectError(400, f"Invalid scopes: {' '.join(unknown)}", "INVALID_SCOPE")
    return " ".join(scopes)


def mint_link_token(state: EmulatorState, client_id: str, scopes: str, access_token: object) -> LinkToken:
    """A link token; with a live `cat_` token of this client it remembers that grant (has_existing_grant).

    Any other access_token (unknown, revoked, another client's) is ignored: the docs say an expired one
    "silently yields a plain link token".
    """
    grant = state.live_connect_grant(access_token) if isinstance(access_token, str) else None
    existing = grant.grant_id if grant is not None and grant.client_id == client_id else None
    link = LinkToken(
        token=new_id("link_", 24),
        client_id=client_id,
        scopes=scopes,
        expires_at=state.now() + LINK_TOKEN_TTL,
        existing_grant_id=existing,
    )
    state.link_tokens[link.token] = link
    return link


def live_link_token(state: EmulatorState, token: str) -> LinkToken:
    """The widget session behind an `X-LINK-TOKEN` header."""
    link = state.link_tokens.get(token)
    if link is None:
        raise ConnectError(401, "Invalid link token", "INVALID_TOKEN")
    if state.now() >= link.expires_at:
        raise ConnectError(401, "Link token has expired", "TOKEN_EXPIRED")
    return link


def mint_public_token(state: EmulatorState, link: LinkToken) -> PublicToken:
    """The user consented: a single-use public token for the signed-in user, the client and the scopes."""
    if link.sub is None:
        raise ConnectError(400, "Sign in (Guest or email) before consenting", "NOT_AUTHENTICATED")
    if link.public_token is not None:
        raise ConnectError(400, "This link token has already been used for consent", "TOKEN_ALREADY_USED")
    public = PublicToken(
        token=new_id("public_", 24),
        client_id=link.client_id,
        sub=link.sub,
        scopes=link.scopes,
        expires_at=state.now() + PUBLIC_TOKEN_TTL,
    )
    state.public_tokens[public.token] = public
    link.public_token = public.token
    return public


def exchange(state: EmulatorState, client_id: str, token: str) -> ConnectGrant:
    """Redeem a public token once: a new grant and its `cat_` access token."""
    public = state.public_tokens.get(token)
    if public is None or public.client_id != client_id:
        raise ConnectError(400, "Invalid public token", "INVALID_TOKEN")
    if public.used:
        raise ConnectError(400, "Public token has already been used", "TOKEN_ALREADY_USED")
    if state.now() >= public.expires_at:
        raise ConnectError(400, "Public token has expired", "TOKEN_EXPIRED")
    public.used = True
    earlier = next(
        (g for g in state.connect_grants.values()
         if g.sub == public.sub and g.client_id == client_id and state.grant_is_live(g)),
        None,
    )  # fmt: skip
    now = state.now()
    access_token = new_id("cat_", 32)
    grant = ConnectGrant(
        grant_id=new_id("cgrant_", 16),
        client_id=client_id,
        sub=public.sub,
        scopes=public.scopes,
        created_at=iso_z(now),
        expires_at=_years_later(now, GRANT_YEARS),
        # A user who connects again keeps their per-user limit: PATCH on either grant is the same override.
        limit=earlier.limit if earlier is not None else LimitSetting(),
        access_token=access_token,
    )
    state.connect_grants[grant.grant_id] = grant
    state.connect_tokens[access_token] = grant.grant_id
    return grant


def client_grant(state: EmulatorState, client_id: str, grant_id: str) -> ConnectGrant:
    """A live grant that this client may manage (revoke, change the limit of)."""
    grant = state.connect_grants.get(grant_id)
    if grant is None or not state.grant_is_live(grant):
        raise ConnectError(404, "Grant not found", "GRANT_NOT_FOUND")
    if grant.client_id != client_id:
        raise ConnectError(403, "Grant does not belong to this client", "ACCESS_DENIED")
    return grant
