"""Records of the Connect API and the widget flow: grants (`cgrant_…`), link, public and `cat_` tokens,
one-time codes and resync jobs, and the ISO 8601 times the Connect API speaks.

Plain data held by `EmulatorState`; `connect_tokens.py`, `widget.py` and `syncs.py` create and change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bff_dev.emulator.limits import LimitSetting


@dataclass
class ConnectGrant:
    """A Connect grant (`cgrant_…`): one user's consent to one client, its `cat_` token and per-user limit."""

    grant_id: str
    client_id: str
    sub: str
    scopes: str
    created_at: str
    expires_at: str
    # Shared by a user's live grants with one client: the override is per user (Developer Portal).
    limit: LimitSetting
    access_token: str | None = None  # the `cat_` token of a grant made by token exchange; seeded ones have none
    revoked: bool = False


@dataclass
class OtpChallenge:
    email: str
    code: str


@dataclass
class LinkToken:
    """A `link_…` token: one widget session for one client, and how far the user has got in it."""

    token: str
    client_id: str
    scopes: str
    expires_at: float
    existing_grant_id: str | None = None  # set when created with a valid access_token (has_existing_grant)
    sub: str | None = None  # who signed in in the widget
    otp: OtpChallenge | None = None
    public_token: str | None = None  # minted at consent; a link token consents once


@dataclass
class PublicToken:
    """A `public_…` token: single use, exchanged by the client's backend for a `cat_` token."""

    token: str
    client_id: str
    sub: str
    scopes: str
    expires_at: float
    used: bool = False


@dataclass
class SyncJob:
    """A resync of one integration (`sync_…`); its status follows the clock (`syncs.py`)."""

    job_id: str
    sub: str
    integration_id: str
    created_at: float
    limit: int | None  # the effective limit when it was queued: the sync imports under it
    result: str | None = None  # the terminal status, once the import has been applied


def iso_z(timestamp: float) -> str:
    """ISO 8601 UTC with a `Z`, to the second, as the Connect API writes times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
