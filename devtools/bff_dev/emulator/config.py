"""Configuration of the Kryptos emulator: registered clients, seeded users and their Connect grants.

Everything here is plain data handed to `create_emulator_app`; the running state lives in `state.py`.
The defaults mirror what the Kryptos docs describe (24 h access tokens, 30-day refresh tokens, 10 min
codes) and seed the users the demo and the tests rely on. Users created in the Connect widget
(`widget.py`) are `EmulatorUser`s too, made at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bff_dev.emulator.seed import (
    SeedIntegration,
    admin_integrations,
    guest2_integrations,
    guest_integrations,
    linked_integrations,
)

DEFAULT_SCOPES: tuple[str, ...] = (
    "openid",
    "profile",
    "offline_access",
    "email",
    "portfolios:read",
    "transactions:read",
    "integrations:read",
    "tax:read",
    "accounting:read",
    "reports:read",
    "workspace:read",
    "users:read",
)
DEFAULT_SCOPE_STRING = " ".join(DEFAULT_SCOPES)

# A client that is not registered with the emulator by default: one seeded grant belongs to it so that
# the connect API's ACCESS_DENIED branch can be exercised.
OTHER_CLIENT_ID = "kryptos-other-app"

PLATFORM_DEFAULT_TRANSACTION_LIMIT = 100_000
# The Developer Portal caps the workspace default (not the per-user override) at this value.
WORKSPACE_DEFAULT_CAP = 100_000
# The default limit of Guests created in the widget: low enough that their starter integrations
# (`seed.widget_integrations`, 1,970 api transactions, one source alone 1,250) cross it at once.
WIDGET_GUEST_TRANSACTION_LIMIT = 1_000


@dataclass
class EmulatorClient:
    """An OAuth client registered with the emulated provider (and with the Connect API)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    backchannel_logout_uri: str | None = None
    token_endpoint_auth_methods: tuple[str, ...] = ("client_secret_post", "client_secret_basic")


@dataclass
class EmulatorGrant:
    """A Connect grant (`cgrant_…`): one user's consent to one client, carrying the per-user limit."""

    grant_id: str
    client_id: str | None = None  # None: the first configured client
    scopes: str = DEFAULT_SCOPE_STRING
    created_at: str = "2025-03-01T10:00:00Z"
    expires_at: str = "2040-03-01T10:00:00Z"  # Connect grants live 15 years
    transaction_limit: int | None = None  # per-user override; None = not set
    enable_limiter: bool | None = None


@dataclass
class EmulatorUser:
    """A person who can sign in at the emulated provider."""

    username: str
    sub: str
    name: str
    email: str
    account_type: Literal["guest", "linked"]
    workspace_id: str
    workspace_name: str
    workspace_type: str
    grants: list[EmulatorGrant] = field(default_factory=list)
    email_verified: bool = True
    language: str = "en"
    role: str = "owner"
    updated_at: int = 1_735_689_600
    integrations: list[SeedIntegration] = field(default_factory=list)
    created_in_widget: bool = False  # made by the Connect widget's Guest or email login, not seeded

    @property
    def is_guest(self) -> bool:
        return self.account_type == "guest"


def default_users() -> list[EmulatorUser]:
    """The seeded users; a fresh list each call so that configs never share mutable state."""
    return [
        EmulatorUser(
            username="guest",
            sub="anon_7f3a9c21",
            name="Guest Demo",
            email="guest.demo@guest.kryptos.io",
            account_type="guest",
            workspace_id="ws_guest_7f3a9c21",
            workspace_name="Guest Demo",
            workspace_type="guest",
            grants=[
                EmulatorGrant("cgrant_guest_demo", created_at="2025-01-05T09:12:00Z"),
                EmulatorGrant(
                    "cgrant_guest_demo_other_app", client_id=OTHER_CLIENT_ID, created_at="2025-02-11T16:40:00Z"
                ),
            ],
            integrations=guest_integrations(),
        ),
        EmulatorUser(
            username="guest2",
            sub="anon_2b8e4d10",
            name="Gustav Guest",
            email="gustav.guest@guest.kryptos.io",
            account_type="guest",
            workspace_id="ws_guest_2b8e4d10",
            workspace_name="Gustav Guest",
            workspace_type="guest",
            language="de",
            grants=[EmulatorGrant("cgrant_guest_gustav", created_at="2025-04-02T08:00:00Z")],
            integrations=guest2_integrations(),
        ),
        EmulatorUser(
            username="linked",
            sub="user_lena_5c1d9e",
            name="Lena Linked",
            email="lena@example.com",
            account_type="linked",
            workspace_id="ws_lena_personal",
            workspace_name="Lena's Portfolio",
            workspace_type="personal",
            language="sv",
            grants=[EmulatorGrant("cgrant_linked_lena", created_at="2025-02-20T12:30:00Z")],
            integrations=linked_integrations(),
        ),
        EmulatorUser(
            username="admin",
            sub="user_admin_ada",
            name="Ada Admin",
            email="ada@kryptos-partner.example",
            account_type="linked",
            workspace_id="ws_ada_ops",
            workspace_name="Partner Operations",
            workspace_type="business",
            role="admin",
            grants=[EmulatorGrant("cgrant_admin_ada", created_at="2025-01-02T07:45:00Z")],
            integrations=admin_integrations(),
        ),
    ]


@dataclass
class EmulatorConfig:
    """Everything the emulator needs; URLs are built from `base_url`, never from the request's Host."""

    base_url: str
    clients: list[EmulatorClient]
    access_token_ttl: int = 86400
    refresh_token_ttl: int = 30 * 86400
    id_token_ttl: int = 86400
    code_ttl: int = 600
    rotate_refresh_tokens: bool = True
    users: list[EmulatorUser] = field(default_factory=default_users)
    # The workspace default transaction limit (Developer Portal card); None = not set, so the platform
    # default decides.
    workspace_transaction_limit: int | None = None
    workspace_enable_limiter: bool | None = None
    # What the workspace default is, for Guests created in the widget, while the workspace default above
    # (or its `/_emulator/config` replacement) sets nothing: it stands in for a partner who set the
    # Developer Portal's "limit for every new Guest user" without changing the seeded Guests' 100,000.
    # None: widget Guests resolve like seeded ones.
    widget_guest_transaction_limit: int | None = WIDGET_GUEST_TRANSACTION_LIMIT

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.clients:
            raise ValueError("EmulatorConfig needs at least one client")

    @property
    def issuer(self) -> str:
        return self.base_url + "/oidc"

    @property
    def data_api_url(self) -> str:
        return self.base_url + "/api"

    @property
    def connect_api_url(self) -> str:
        return self.base_url + "/connect"

    @property
    def default_client_id(self) -> str:
        return self.clients[0].client_id
