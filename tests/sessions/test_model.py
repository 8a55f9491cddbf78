"""The stored records (:mod:`bff.sessions.model`): the expiry arithmetic of a token response, and the bytes.

Times are plain numbers here (seconds on bff's clock); a sign-in at ``T`` with the defaults: idle timeout
30 min, maximum lifetime 24 h, assumed refresh-token lifetime 30 days.
"""

from __future__ import annotations

import json

import pytest

from bff.oidc.models import TokenSet
from bff.sessions.model import Lifetimes, LoginState, Session, refresh_due_at

T = 1_800_000_000.0
DAY = 86400.0
LIFETIMES = Lifetimes(idle_timeout=1800, max_lifetime=int(DAY), refresh_token_lifetime=int(30 * DAY))


def _tokens(
    *,
    access: str = "at-1",
    expires_in: float = 3600,
    refresh: str | None = "rt-1",
    refresh_expires_in: float | None = None,
    scope: str | None = None,
) -> TokenSet:
    """A token response: ``access``/``refresh`` are the access and refresh tokens."""
    return TokenSet(access, expires_in, refresh, refresh_expires_in, "id-token", scope)


def _signed_in(tokens: TokenSet, *, at: float = T, lifetimes: Lifetimes = LIFETIMES) -> Session:
    return Session.signed_in(
        sub="user-1",
        claims={"name": "Ada"},
        oidc_sid="op-sid",
        tokens=tokens,
        scope="openid profile",
        issued_at=at,
        lifetimes=lifetimes,
    )


# --- refresh_due_at, Lifetimes.absolute_end ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "due_after"),
    [
        (3600, 3540),  # 60 s before expiry
        (300, 240),
        (120, 60),  # the two rules meet at two minutes
        (100, 50),  # shorter: half-way through
        (30, 15),
        (0, 0),
    ],
)
def test_refresh_is_due_a_minute_before_expiry_or_half_way(lifetime: float, due_after: float) -> None:
    assert refresh_due_at(T, T + lifetime) == T + due_after


def test_the_absolute_end_is_the_maximum_lifetime_unless_the_refresh_token_ends_first() -> None:
    assert LIFETIMES.absolute_end(T, None) == T + DAY
    assert LIFETIMES.absolute_end(T, T + 2 * DAY) == T + DAY
    assert LIFETIMES.absolute_end(T, T + 3600) == T + 3600


# --- Session.signed_in ----------------------------------------------------------------------------------------


def test_a_sign_in_turns_the_providers_lifetimes_into_times() -> None:
    session = _signed_in(_tokens(expires_in=3600, refresh_expires_in=7 * DAY))
    assert (session.sub, session.claims, session.oidc_sid) == ("user-1", {"name": "Ada"}, "op-sid")
    assert (session.access_token, session.refresh_token) == ("at-1", "rt-1")
    assert session.access_expires_at == T + 3600
    assert session.access_refresh_at == T + 3540
    assert session.refresh_expires_at == T + 7 * DAY  # the provider's refresh_expires_in
    assert session.created_at == session.last_seen_at == T
    assert session.expires_at == T + DAY  # the maximum lifetime comes first
    assert session.scope == "openid profile"  # the provider did not say: what was asked for
    assert session.logout_csrf and session.logout_csrf != _signed_in(_tokens()).logout_csrf
    assert session.version == ""


def test_without_refresh_expires_in_the_refresh_token_gets_the_assumed_lifetime() -> None:
    session = _signed_in(_tokens(refresh_expires_in=None))
    assert session.refresh_expires_at == T + 30 * DAY
    assert session.expires_at == T + DAY
    short = Lifetimes(idle_timeout=1800, max_lifetime=int(DAY), refresh_token_lifetime=3 * 3600)
    assert _signed_in(_tokens(), lifetimes=short).expires_at == T + 3 * 3600


def test_the_session_never_outlives_its_refresh_token() -> None:
    session = _signed_in(_tokens(refresh_expires_in=5400))
    assert session.refresh_expires_at == session.expires_at == T + 5400


def test_without_a_refresh_token_the_session_ends_with_the_access_token() -> None:
    session = _signed_in(_tokens(expires_in=600, refresh=None, refresh_expires_in=7 * DAY))
    assert session.refresh_token is None and session.refresh_expires_at is None
    assert session.expires_at == session.access_expires_at == T + 600


def test_the_providers_scope_wins() -> None:
    assert _signed_in(_tokens(scope="openid")).scope == "openid"


# --- Session.refreshed ------------------------------------------------------------------------------------


def test_a_refresh_replaces_the_tokens_and_moves_only_the_access_times() -> None:
    session = _signed_in(_tokens(refresh_expires_in=None))
    refreshed = session.refreshed(
        _tokens(access="at-2", expires_in=600, refresh="rt-2"),
        issued_at=T + 5000,
        now=T + 5001,
        lifetimes=LIFETIMES,
    )
    assert (refreshed.access_token, refreshed.refresh_token) == ("at-2", "rt-2")
    assert refreshed.access_expires_at == T + 5600
    assert refreshed.access_refresh_at == T + 5540
    # A rotated refresh token lives no longer than the first one unless the provider says otherwise.
    assert refreshed.refresh_expires_at == session.refresh_expires_at == T + 30 * DAY
    assert refreshed.expires_at == session.expires_at == T + DAY
    assert refreshed.last_seen_at == T + 5001
    assert refreshed.created_at == T
    assert (refreshed.sub, refreshed.claims, refreshed.oidc_sid, refreshed.logout_csrf, refreshed.scope) == (
        session.sub,
        session.claims,
        session.oidc_sid,
        session.logout_csrf,
        session.scope,
    )


def test_a_refresh_keeps_the_refresh_token_the_provider_did_not_rotate() -> None:
    session = _signed_in(_tokens())
    refreshed = session.refreshed(_tokens(refresh=None), issued_at=T + 10, now=T + 10, lifetimes=LIFETIMES)
    assert refreshed.refresh_token == "rt-1"
    assert refreshed.refresh_expires_at == session.refresh_expires_at


def test_a_shorter_refresh_token_from_a_refresh_brings_the_end_forward() -> None:
    session = _signed_in(_tokens(refresh_expires_in=None))
    refreshed = session.refreshed(
        _tokens(refresh_expires_in=1000, scope="openid"), issued_at=T + 5000, now=T + 5000, lifetimes=LIFETIMES
    )
    assert refreshed.refresh_expires_at == T + 6000
    assert refreshed.expires_at == T + 6000
    assert refreshed.scope == "openid"


def test_a_refresh_never_extends_the_sessions_end() -> None:
    session = _signed_in(_tokens(refresh_expires_in=5400))  # ends at T + 5400
    refreshed = session.refreshed(
        _tokens(refresh_expires_in=30 * DAY), issued_at=T + 3000, now=T + 3000, lifetimes=LIFETIMES
    )
    assert refreshed.refresh_expires_at == T + 3000 + 30 * DAY
    assert refreshed.expires_at == T + 5400


def test_remaining_is_the_idle_timeout_or_the_absolute_end_whichever_is_first() -> None:
    session = _signed_in(_tokens(refresh_expires_in=2400))  # ends at T + 2400; idle at T + 1800
    assert session.remaining(T, LIFETIMES) == 1800
    assert session.remaining(T + 1000, LIFETIMES) == 800
    seen_later = session.with_changes(last_seen_at=T + 1000)
    assert seen_later.remaining(T + 1000, LIFETIMES) == 1400  # the absolute end is nearer now
    assert seen_later.remaining(T + 2500, LIFETIMES) == -100


# --- the bytes ----------------------------------------------------------------------------------------------


def test_sessions_round_trip_through_compact_bytes() -> None:
    full = _signed_in(_tokens(refresh_expires_in=7 * DAY))
    bare = _signed_in(_tokens(refresh=None)).with_changes(oidc_sid=None, access_refresh_at=None, claims={})
    for session in (full, bare):
        data = session.to_bytes()
        assert b" " not in data.replace(b"openid profile", b"")  # no whitespace between the fields
        assert Session.from_bytes(data) == session
    assert set(json.loads(full.to_bytes())) == {
        "u",
        "c",
        "a",
        "ae",
        "r",
        "re",
        "s",
        "ca",
        "ls",
        "ex",
        "lo",
        "sid",
        "ar",
    }


def test_a_stored_record_of_an_earlier_release_still_reads() -> None:
    # Records written before `sid` and `ar` existed (and with integer times): still read.
    old = (
        b'{"u":"user-1","c":{"name":"Ada"},"a":"at","ae":100,"r":"rt","re":null,"s":"openid",'
        b'"ca":1,"ls":2,"ex":3,"lo":"x"}'
    )
    session = Session.from_bytes(old)
    assert session == Session("user-1", {"name": "Ada"}, "at", 100.0, "rt", None, "openid", 1.0, 2.0, 3.0, "x")
    assert session.oidc_sid is None and session.access_refresh_at is None
    assert isinstance(session.access_expires_at, float)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[]",
        b"{}",
        b'{"u":"user-1"}',
        b'{"u":"u","c":{},"a":"a","ae":"soon","r":null,"re":null,"s":"","ca":1,"ls":1,"ex":1,"lo":"x"}',
        b'{"u":"u","c":{},"a":"a","ae":1,"r":null,"re":[],"s":"","ca":1,"ls":1,"ex":1,"lo":"x"}',
    ],
)
def test_malformed_session_records_are_none_not_an_error(data: bytes) -> None:
    assert Session.from_bytes(data) is None


def test_login_states_round_trip_and_malformed_ones_are_none() -> None:
    state = LoginState(
        "v" * 43, "nonce", "/back", "b" * 64, "https://app/cb", "https://idp", T, {"mobile": {"st": "s"}}
    )
    assert LoginState.from_bytes(state.to_bytes()) == state
    plain = LoginState("v" * 43, "nonce", "/", "b" * 64, "https://app/cb", "https://idp", T)
    assert LoginState.from_bytes(plain.to_bytes()) == plain and plain.extra == {}
    for data in (b"", b"{}", b"[1]", b'{"v":"x","n":"n","rt":"/","b":"b","ru":"r","i":"i","ca":"later"}'):
        assert LoginState.from_bytes(data) is None


def test_a_connect_only_session_round_trips_and_names_its_grant() -> None:
    session = Session.connected_only("h" * 40, now=1000.0, lifetimes=LIFETIMES)
    assert not session.signed_in_with_oidc and session.connect == "h" * 40
    assert session.expires_at == 1000.0 + DAY and session.refresh_token is None and session.access_token == ""
    assert Session.from_bytes(session.to_bytes()) == session
    assert json.loads(session.to_bytes())["cg"] == "h" * 40
    # A signed-in session names no grant unless it has one: no bytes spent on it.
    signed_in = _signed_in(_tokens())
    assert signed_in.signed_in_with_oidc and "cg" not in json.loads(signed_in.to_bytes())
    with_grant = signed_in.with_changes(connect="g" * 40)
    assert Session.from_bytes(with_grant.to_bytes()) == with_grant
