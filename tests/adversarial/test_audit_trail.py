"""The audit trail of real ``bff serve`` processes: every event of a whole flow, with exactly the documented
keys, the right outcome, actor, target and reason, and not one secret of the flow anywhere in the logs.

The processes run :func:`bff.logs.configure_logging` as in production, so the lines read here are the lines an
operator ships: the audit trail on stderr (or stdout, ``BFF_AUDIT_LOG``) whatever ``BFF_LOG_LEVEL`` says.
Rate-limit refusals are bounded: one event per endpoint, limit and address per minute, at most 100 a minute
(:class:`bff.services.ratelimit.RefusalTrail`, tested with an injected clock for what needs the minute to pass).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.cookiejar
import json
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from bff.services.ratelimit import TRAIL_PER_MINUTE, TRAIL_WINDOW, RefusalTrail
from bff.sessions.cookie import SignedValueCodec
from bff.sessions.store import public_handle, session_handle
from bff_dev.emulator.issuance import mint_logout_token
from bff_dev.emulator.state import EmulatorState
from tests.adversarial.conftest import CSRF, PrivateRedis
from tests.support.audit_trail import (
    AUDIT_KEYS,
    EVENT_FIELDS,
    TARGET_KEYS,
    SplitReplica,
    audit_events,
    start_split_replica,
)
from tests.support.clock import Clock
from tests.support.emulator_tap import EmulatorTap
from tests.support.processes import CLIENT_ID, Cluster, expire_access_token, start_cluster_on

APP_URI = "com.example.app:/oauth2redirect"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
GUEST, GUEST2, LINKED, ADMIN = "anon_7f3a9c21", "anon_2b8e4d10", "user_lena_5c1d9e", "user_admin_ada"
ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
OUTCOMES = {"success", "failure", "denied", "authorized"}
# The fields each event has besides the common ones (api.md, "Audit trail"), by event and outcome.
EVENT_KEYS = {
    ("sign_in", "success"): {"kind", "device"},
    ("sign_in", "failure"): {"code"},
    ("sign_out", "success"): {"reason", "kind"},
    ("session_ended", "success"): {"scope", "ended"},
    ("session_ended", "failure"): {"scope", "ended"},
    ("refresh_refused", "failure"): {"code"},
    ("backchannel_logout", "success"): {"ended"},
    ("backchannel_logout", "failure"): {"code"},
    ("transaction_limit_changed", "success"): {"values", "upstream"},
    ("transaction_limit_changed", "failure"): {"values", "upstream"},
    ("rate_limited", "denied"): {"suppressed"},
}


@dataclass
class Secrets:
    """Every secret value the flow produced or configured, by what it is."""

    found: dict[str, str] = field(default_factory=dict)

    def add(self, what: str, value: str | None) -> None:
        if value:
            assert len(value) >= 12, (what, value)  # short values would match by chance
            self.found[value] = what

    def session(self, codec: SignedValueCodec, what: str, signed: str) -> str:
        """A session cookie (or app session token): the signed value, the session id and its Redis handle."""
        session_id = codec.unsign(signed)
        assert session_id is not None
        self.add(f"{what} cookie", signed)
        self.add(f"{what} session id", session_id)
        self.add(f"{what} redis handle", session_handle(session_id))
        return session_id

    def leaks(self, text: str) -> list[str]:
        return [f"{what}: {value[:16]}…" for value, what in self.found.items() if value in text]


@dataclass
class Browser:
    client: httpx2.AsyncClient
    cookie: str
    session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {**CSRF, "Cookie": f"bff-session={self.cookie}"}

    @property
    def public(self) -> str:
        return public_handle(session_handle(self.session_id))


def _no_jar() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class Flow:
    """One replica, the emulator behind a tap, and the secrets the flow made."""

    def __init__(self, cluster: Cluster, replica: SplitReplica, tap: EmulatorTap) -> None:
        self.cluster = cluster
        self.replica = replica
        self.tap = tap
        self.secrets = Secrets()
        self.codec = SignedValueCodec([cluster.env["BFF_SESSION_SECRETS"]], salt="bff.session")
        self.clients: list[httpx2.AsyncClient] = []
        for name in ("BFF_CLIENT_SECRET", "BFF_SESSION_SECRETS", "BFF_ENCRYPTION_KEYS"):
            self.secrets.add(name, cluster.env[name])

    @property
    def emulator(self) -> EmulatorState:
        state: EmulatorState = self.cluster.emulator.app.state.emulator
        return state

    def client(self, user_agent: str | None = None, *, jar: bool = True) -> httpx2.AsyncClient:
        headers = {"User-Agent": user_agent} if user_agent else {}
        client = httpx2.AsyncClient(timeout=15, headers=headers, cookies=None if jar else _no_jar())
        self.clients.append(client)
        return client

    def url(self, path: str) -> str:
        return f"{self.replica.url}{path}"

    async def _authorize(self, browser: httpx2.AsyncClient, username: str, **params: str) -> str:
        """/auth/login, then the emulator approves: the callback's query (code and state noted as secrets)."""
        start = await browser.get(self.url("/auth/login"), params={"login_hint": username, **params})
        assert start.status_code == 302, start.text
        approve = await browser.get(start.headers["location"])
        assert approve.status_code == 302, approve.text
        query = urlsplit(approve.headers["location"]).query
        fields = {k: v[0] for k, v in parse_qs(query).items()}
        self.secrets.add("authorization code", fields["code"])
        self.secrets.add("login state", fields["state"])
        self.secrets.add("login binding cookie", browser.cookies.get("bff-login"))
        return query

    async def browser(self, username: str, user_agent: str, client: httpx2.AsyncClient | None = None) -> Browser:
        client = client or self.client(user_agent)
        query = await self._authorize(client, username)
        done = await client.get(self.url(f"/auth/callback?{query}"))
        assert done.status_code == 302, done.text
        cookie = str(done.cookies["bff-session"])
        return Browser(client, cookie, self.secrets.session(self.codec, f"{username} browser", cookie))

    async def app(self, username: str) -> tuple[dict[str, str], str]:
        """A native app's sign-in (system browser, then the code exchange): its Authorization header and session id."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        self.secrets.add("PKCE verifier", verifier)
        app_state = "app-state-" + secrets.token_hex(16)
        self.secrets.add("the app's own state", app_state)
        system_browser = self.client(SAFARI_IOS)
        query = await self._authorize(
            system_browser,
            username,
            client="mobile",
            redirect_uri=APP_URI,
            code_challenge=challenge,
            code_challenge_method="S256",
            state=app_state,
        )
        handoff = await system_browser.get(self.url(f"/auth/callback?{query}"))
        assert handoff.status_code == 302 and handoff.headers["location"].startswith(APP_URI), handoff.text
        code = parse_qs(urlsplit(handoff.headers["location"]).query)["code"][0]
        self.secrets.add("hand-off code", code)
        app = self.client(jar=False)
        answer = await app.post(
            self.url("/auth/mobile/token"), data={"code": code, "code_verifier": verifier, "redirect_uri": APP_URI}
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["session_token"]
        session_id = self.secrets.session(self.codec, f"{username} app", token)
        return {"Authorization": f"Session {token}"}, session_id

    def live_sid(self, sub: str) -> str:
        """The provider's session id (``sid``) of ``sub``'s most recent login session at the emulator."""
        sessions = [s for s in self.emulator.sessions.values() if s.sub == sub and not s.ended]
        return sessions[-1].sid

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@pytest.fixture
def tapped_cluster(private_redis: PrivateRedis) -> Iterator[tuple[Cluster, EmulatorTap]]:
    tap = EmulatorTap()
    env = {
        "BFF_ADMIN_SUBJECTS": ADMIN,
        "BFF_MOBILE_REDIRECT_URIS": APP_URI,
        "BFF_LOG_LEVEL": "info",  # every line bff writes is scanned for secrets, the access lines too
        # The test moves sessions' clocks from outside (expire_access_token): the next request must read Redis.
        "BFF_SESSION_CACHE_SECONDS": "0",
    }
    cluster = start_cluster_on(tap.app, private_redis.url, replicas=0, overrides=env)
    try:
        yield cluster, tap
    finally:
        cluster.stop()


def _check_shape(event: dict[str, Any]) -> None:
    """Exactly the documented keys, each of the documented kind."""
    extra = set(event) - AUDIT_KEYS
    assert set(event) >= AUDIT_KEYS, event
    assert extra <= EVENT_FIELDS, event
    assert extra == EVENT_KEYS[event["event"], event["outcome"]], event
    assert ISO_MS.fullmatch(event["time"]), event
    assert event["logger"] == "bff.audit"
    assert event["outcome"] in OUTCOMES, event
    assert event["actor"] is None or isinstance(event["actor"], str), event
    assert event["target"] is None or (isinstance(event["target"], dict) and set(event["target"]) <= TARGET_KEYS)
    assert event["client"] is None or isinstance(event["client"], str), event
    assert event["request_id"] is None or isinstance(event["request_id"], str), event


def _pick(events: list[dict[str, Any]], event: str, **match: Any) -> list[dict[str, Any]]:
    def fits(e: dict[str, Any]) -> bool:
        for key, value in match.items():
            if key.startswith("target_"):
                if (e["target"] or {}).get(key[len("target_") :]) != value:
                    return False
            elif e.get(key) != value:
                return False
        return True

    return [e for e in events if e["event"] == event and fits(e)]


def _one(events: list[dict[str, Any]], event: str, **match: Any) -> dict[str, Any]:
    found = _pick(events, event, **match)
    assert len(found) == 1, (event, match, found)
    return found[0]


async def test_a_whole_flow_leaves_the_documented_trail_and_no_secret(
    tapped_cluster: tuple[Cluster, EmulatorTap],
) -> None:
    cluster, tap = tapped_cluster
    replica = start_split_replica(cluster)
    flow = Flow(cluster, replica, tap)
    try:
        cast = await _run_flow(flow)
    finally:
        await flow.aclose()
    replica.halt()  # SIGTERM: every batched line is written
    stderr, stdout = replica.errors(), replica.output()
    events = audit_events(stderr)
    assert audit_events(stdout) == []  # BFF_AUDIT_LOG defaults to stderr
    for event in events:
        _check_shape(event)
    _check_flow_events(cast, events)
    # Not one secret anywhere: not in the audit trail, not in any other line either.
    tap_secrets = tap.issued()
    assert (len(tap.token_bodies), len(tap.codes)) == (10, 9)  # 9 sign-ins' codes and tokens, 1 refresh
    assert len(tap_secrets) >= 9 * 3 + 2, len(tap_secrets)  # access, refresh and ID tokens; refreshed ones
    for value in tap_secrets:
        flow.secrets.add("provider token", value)
    for code in tap.codes:
        flow.secrets.add("authorization code (tap)", code)
    assert flow.secrets.leaks("\n".join(json.dumps(e) for e in events)) == []
    assert flow.secrets.leaks(stderr + stdout) == []
    # The Redis handle of no session either, not even the part of it an access line's session_hash shows.
    handles = [value for value, what in flow.secrets.found.items() if what.endswith("redis handle")]
    assert len(handles) == 9
    audit_text = "\n".join(json.dumps(e) for e in events)
    assert not [h for h in handles if h[:12] in audit_text]
    assert [h for h in handles if h[:12] in stderr] != []  # (the access lines, read here too, do show that part)
    looked_for = len(flow.secrets.found)
    print(f"\nwhole flow: {len(events)} audit events, {looked_for} secrets looked for in {len(stderr)} bytes of log")


@dataclass
class Cast:
    """Who took part in the flow: browsers by role, and the app's session id."""

    a: Browser
    b: Browser
    c: Browser
    app: str
    admin: Browser
    g2_first: Browser
    g2_again: Browser
    g2_other: Browser
    lena: Browser
    request_ids: dict[str, str]  # the X-Request-ID bff answered some requests with, by what they did


async def _run_flow(flow: Flow) -> Cast:
    url = flow.url
    # Sign-ins: three browsers and an app of one user, an administrator, a second user twice in one browser.
    a = await flow.browser("guest", FIREFOX_LINUX)
    b = await flow.browser("guest", CHROME_WINDOWS)
    c = await flow.browser("guest", FIREFOX_LINUX)
    app_headers, app_session = await flow.app("guest")
    admin = await flow.browser("admin", CHROME_WINDOWS)
    g2_client = flow.client(FIREFOX_LINUX)
    g2_first = await flow.browser("guest2", FIREFOX_LINUX, g2_client)
    g2_again = await flow.browser("guest2", FIREFOX_LINUX, g2_client)  # replaces the first
    g2_other = await flow.browser("guest2", CHROME_WINDOWS)
    lena = await flow.browser("linked", FIREFOX_LINUX)
    # A sign-in that fails: a forged callback.
    forged = await flow.client().get(url("/auth/callback"), params={"state": "forged-state", "code": "forged-code"})
    assert forged.status_code == 400, forged.text
    # API calls through the proxy, by cookie and by app token.
    assert (await a.client.get(url("/api/v1/userinfo"), headers=a.headers)).status_code == 200
    app_client = flow.client(jar=False)
    assert (await app_client.get(url("/api/v1/userinfo"), headers=app_headers)).status_code == 200
    # A refresh: the access token jumps past expiry, the next call refreshes it.
    await expire_access_token(flow.cluster, a.cookie)
    before = len(flow.tap.token_bodies)
    assert (await a.client.get(url("/api/v1/userinfo"), headers=a.headers)).status_code == 200
    assert len(flow.tap.token_bodies) == before + 1
    # The user's sessions: A first (current), then the others; an app among them.
    listing = await a.client.get(url("/auth/sessions"), headers=a.headers)
    assert listing.status_code == 200, listing.text
    sessions = listing.json()["sessions"]
    assert [s["current"] for s in sessions] == [True, False, False, False]
    assert sessions[0]["handle"] == a.public
    assert {s["handle"] for s in sessions} == {a.public, b.public, c.public, public_handle(session_handle(app_session))}
    assert Counter(s["kind"] for s in sessions) == {"browser": 3, "mobile": 1}
    assert Counter(s["device"] for s in sessions) == {"Firefox on Linux": 2, "Chrome on Windows": 1, "Safari on iOS": 1}
    # End one (B), then an unknown handle, then all but the current one (C and the app).
    ended = await a.client.delete(url(f"/auth/sessions/{b.public}"), headers=a.headers)
    assert (ended.status_code, ended.json()) == (200, {"ended": 1})
    gone = await b.client.get(url("/auth/session"), headers=b.headers)
    assert (gone.status_code, gone.json()["code"]) == (401, "session_expired")
    unknown = await a.client.delete(url(f"/auth/sessions/{secrets.token_hex(16)}"), headers=a.headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "session_not_found")
    others = await a.client.post(url("/auth/sessions/end-others"), headers=a.headers)
    assert (others.status_code, others.json()) == (200, {"ended": 2})
    assert (await app_client.get(url("/auth/session"), headers=app_headers)).status_code == 401
    # The administrator: lists guest2's sessions, ends one, then forces the rest out.
    listed = await admin.client.get(url(f"/api/admin/users/{GUEST2}/sessions"), headers=admin.headers)
    assert listed.status_code == 200 and len(listed.json()["sessions"]) == 2, listed.text
    one = await admin.client.delete(url(f"/api/admin/users/{GUEST2}/sessions/{g2_other.public}"), headers=admin.headers)
    assert (one.status_code, one.json()) == (200, {"sub": GUEST2, "ended": 1})
    everywhere = await admin.client.delete(url(f"/api/admin/users/{GUEST2}/sessions"), headers=admin.headers)
    assert (everywhere.status_code, everywhere.json()) == (200, {"sub": GUEST2, "ended": 1})
    # Transaction limits through the proxy: one the provider takes, one it refuses.
    patch = await admin.client.patch(
        url("/api/developer/grants/cgrant_guest_demo/transaction-limit"),
        json={"transactionLimit": 250_000, "enableLimiter": True},
        headers=admin.headers,
    )
    assert patch.status_code == 200, patch.text
    refused = await admin.client.patch(
        url("/api/developer/grants/cgrant_linked_lena/transaction-limit"),
        json={"enableLimiter": False},
        headers=admin.headers,
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "NOT_ANON_USER")
    # Back-channel logout of Lena's provider session, then the same token again (a replay).
    logout_token, _ = mint_logout_token(flow.emulator, client_id=CLIENT_ID, sub=LINKED, sid=flow.live_sid(LINKED))
    flow.secrets.add("logout token", logout_token)
    provider = flow.client(jar=False)
    delivered = await provider.post(url("/auth/backchannel-logout"), data={"logout_token": logout_token})
    assert delivered.status_code == 200, delivered.text
    replayed = await provider.post(url("/auth/backchannel-logout"), data={"logout_token": logout_token})
    assert replayed.status_code == 400, replayed.text
    assert (await lena.client.get(url("/auth/session"), headers=lena.headers)).status_code == 401
    # A refresh the provider refuses: A's session ends.
    await flow.cluster.control("POST", "config", json={"token_failure": "invalid_grant"})
    await expire_access_token(flow.cluster, a.cookie)
    refused_refresh = await a.client.get(url("/api/v1/userinfo"), headers=a.headers)
    assert (refused_refresh.status_code, refused_refresh.json()["code"]) == (401, "session_expired")
    await flow.cluster.control("POST", "config", json={"token_failure": None})
    # Rate limits: one address past its sign-in burst (30), one browser past its pending sign-ins (10).
    flooder = httpx2.AsyncClient(
        timeout=15, transport=httpx2.AsyncHTTPTransport(local_address="127.0.0.7"), cookies=_no_jar()
    )
    flow.clients.append(flooder)
    flood = [await flooder.get(url("/auth/login")) for _ in range(33)]
    assert Counter(r.status_code for r in flood) == {302: 30, 429: 3}
    eager = httpx2.AsyncClient(timeout=15, transport=httpx2.AsyncHTTPTransport(local_address="127.0.0.8"))
    flow.clients.append(eager)
    pending = [await eager.get(url("/auth/login")) for _ in range(12)]
    assert Counter(r.status_code for r in pending) == {302: 10, 429: 2}
    flow.secrets.add("flooding browser's binding cookie", eager.cookies.get("bff-login"))
    # Sign-out: the administrator.
    out = await admin.client.post(url("/auth/logout"), headers=admin.headers)
    assert out.status_code == 200, out.text
    request_ids = {
        "end one": ended.headers["x-request-id"],
        "end others": others.headers["x-request-id"],
        "force sign-out": everywhere.headers["x-request-id"],
        "limit": patch.headers["x-request-id"],
        "back-channel": delivered.headers["x-request-id"],
        "logout": out.headers["x-request-id"],
    }
    return Cast(a, b, c, app_session, admin, g2_first, g2_again, g2_other, lena, request_ids)


def _check_flow_events(cast: Cast, events: list[dict[str, Any]]) -> None:
    a, b, c, admin, lena = cast.a, cast.b, cast.c, cast.admin, cast.lena
    app = public_handle(session_handle(cast.app))
    g2_first, g2_again, g2_other = cast.g2_first, cast.g2_again, cast.g2_other
    counts = Counter(e["event"] for e in events)
    assert counts == {
        "sign_in": 10,  # 9 sign-ins, 1 forged callback
        "sign_out": 9,  # exactly the nine sessions that ended, below
        "session_ended": 5,
        "transaction_limit_changed": 2,
        "backchannel_logout": 2,
        "refresh_refused": 1,
        "rate_limited": 2,
    }, counts
    # Every event of a request names its client and request id; the sign-ins their session, kind and device.
    assert all(e["client"] == "127.0.0.1" for e in events if e["event"] != "rate_limited"), events
    assert all(e["request_id"] for e in events)
    assert len({e["request_id"] for e in _pick(events, "sign_in", outcome="success")}) == 9
    for browser, who, device in (
        (a, GUEST, "Firefox on Linux"),
        (b, GUEST, "Chrome on Windows"),
        (c, GUEST, "Firefox on Linux"),
        (admin, ADMIN, "Chrome on Windows"),
        (g2_first, GUEST2, "Firefox on Linux"),
        (g2_again, GUEST2, "Firefox on Linux"),
        (g2_other, GUEST2, "Chrome on Windows"),
        (lena, LINKED, "Firefox on Linux"),
    ):
        signed_in = _one(events, "sign_in", target_session=browser.public)
        assert signed_in["outcome"] == "success" and signed_in["actor"] == who, signed_in
        assert signed_in["target"] == {"sub": who, "session": browser.public}, signed_in
        assert (signed_in["kind"], signed_in["device"]) == ("browser", device), signed_in
    mobile = _one(events, "sign_in", target_session=app)
    assert (mobile["actor"], mobile["kind"], mobile["device"]) == (GUEST, "mobile", "Safari on iOS"), mobile
    forged = _one(events, "sign_in", outcome="failure")
    assert (forged["actor"], forged["target"], forged["code"]) == (None, None, "invalid_state"), forged

    def sign_out(handle: str) -> dict[str, Any]:
        return _one(events, "sign_out", target_session=handle)

    for handle, reason, actor, sub, kind in (
        (g2_first.public, "replaced", None, GUEST2, "browser"),
        (b.public, "user", GUEST, GUEST, "browser"),
        (c.public, "user", GUEST, GUEST, "browser"),
        (app, "user", GUEST, GUEST, "mobile"),
        (g2_other.public, "admin", ADMIN, GUEST2, "browser"),
        (g2_again.public, "admin", ADMIN, GUEST2, "browser"),
        (lena.public, "back_channel", None, LINKED, "browser"),
        (a.public, "refresh_refused", None, GUEST, "browser"),
        (admin.public, "user", ADMIN, ADMIN, "browser"),
    ):
        out = sign_out(handle)
        assert (out["outcome"], out["reason"], out["actor"], out["kind"]) == ("success", reason, actor, kind), out
        assert out["target"] == {"sub": sub, "session": handle}, out
    ended = _pick(events, "session_ended")
    assert [(e["scope"], e["ended"], e["outcome"], e["actor"]) for e in ended] == [
        ("one", 1, "success", GUEST),
        ("one", 0, "failure", GUEST),
        ("others", 2, "success", GUEST),
        ("one", 1, "success", ADMIN),
        ("all", 1, "success", ADMIN),
    ], ended
    assert ended[0]["target"] == {"sub": GUEST, "session": b.public}
    assert ended[1]["target"]["sub"] == GUEST and len(ended[1]["target"]["session"]) == 32
    assert ended[2]["target"] == {"sub": GUEST}
    assert ended[3]["target"] == {"sub": GUEST2, "session": g2_other.public}
    assert ended[4]["target"] == {"sub": GUEST2}
    changed = _pick(events, "transaction_limit_changed")
    assert [(e["outcome"], e["actor"], e["target"]) for e in changed] == [
        ("success", ADMIN, {"grant": "cgrant_guest_demo"}),
        ("failure", ADMIN, {"grant": "cgrant_linked_lena"}),
    ], changed
    assert changed[0]["values"] == {"transactionLimit": 250_000, "enableLimiter": True}, changed
    assert changed[0]["upstream"]["status"] == 200 and changed[0]["upstream"]["transaction_limit"] == 250_000
    assert changed[1]["values"] == {"enableLimiter": False}
    assert (changed[1]["upstream"]["status"], changed[1]["upstream"]["code"]) == (400, "NOT_ANON_USER"), changed
    logouts = _pick(events, "backchannel_logout")
    assert [(e["outcome"], e["target"], e.get("ended"), e.get("code")) for e in logouts] == [
        ("success", {"sub": LINKED}, 1, None),
        ("failure", None, None, "invalid_logout_token"),
    ], logouts
    refresh = _one(events, "refresh_refused")
    followed = events[events.index(refresh) + 1]  # the session it ended, by the same request
    assert (followed["event"], followed["reason"]) == ("sign_out", "refresh_refused"), followed
    assert followed["request_id"] == refresh["request_id"], followed
    assert (refresh["outcome"], refresh["target"], refresh["code"]) == (
        "failure",
        {"sub": GUEST, "session": a.public},
        "invalid_grant",
    )
    # Each event carries the request id of the request that did it (the one in its answer's X-Request-ID).
    ids = cast.request_ids
    assert ended[0]["request_id"] == _one(events, "sign_out", target_session=b.public)["request_id"] == ids["end one"]
    assert ended[2]["request_id"] == ids["end others"] and ended[4]["request_id"] == ids["force sign-out"]
    assert changed[0]["request_id"] == ids["limit"] and logouts[0]["request_id"] == ids["back-channel"]
    assert _one(events, "sign_out", target_session=admin.public)["request_id"] == ids["logout"]
    limited = _pick(events, "rate_limited")
    assert [(e["outcome"], e["target"], e["client"], e["suppressed"]) for e in limited] == [
        ("denied", {"endpoint": "login", "limit": "address"}, "127.0.0.7", 0),
        ("denied", {"endpoint": "login", "limit": "browser"}, "127.0.0.8", 0),
    ], limited


# --- where the trail goes --------------------------------------------------------------------------------------


async def _sign_in_and_out(flow: Flow) -> Browser:
    browser = await flow.browser("guest", FIREFOX_LINUX)
    out = await browser.client.post(flow.url("/auth/logout"), headers=browser.headers)
    assert out.status_code == 200, out.text
    return browser


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_the_trail_goes_where_bff_audit_log_says_even_at_log_level_error(
    tapped_cluster: tuple[Cluster, EmulatorTap], stream: str
) -> None:
    cluster, tap = tapped_cluster
    replica = start_split_replica(cluster, BFF_AUDIT_LOG=stream, BFF_LOG_LEVEL="error")
    flow = Flow(cluster, replica, tap)
    try:
        browser = await _sign_in_and_out(flow)
        forged = await flow.client().get(flow.url("/auth/callback"), params={"state": "s" * 20, "code": "c" * 20})
        assert forged.status_code == 400
    finally:
        await flow.aclose()
    replica.halt()
    chosen, other = (replica.output(), replica.errors()) if stream == "stdout" else (replica.errors(), replica.output())
    events = audit_events(chosen)
    assert [(e["event"], e["outcome"]) for e in events] == [
        ("sign_in", "success"),
        ("sign_out", "success"),
        ("sign_in", "failure"),
    ], events
    assert events[1]["reason"] == "user" and events[1]["target"] == {"sub": GUEST, "session": browser.public}
    assert audit_events(other) == []
    # At level error nothing else is written: no access line, no start-up line, on either stream.
    assert [line for line in chosen.splitlines() if '"logger": "bff.audit"' not in line] == []
    assert other == ""
    for event in events:
        _check_shape(event)
    assert flow.secrets.leaks(chosen) == []


# --- rate-limit floods: a bounded trail --------------------------------------------------------------------------


def _client_at(local_address: str) -> httpx2.AsyncClient:
    transport = httpx2.AsyncHTTPTransport(local_address=local_address, limits=httpx2.Limits(max_connections=20))
    return httpx2.AsyncClient(transport=transport, cookies=_no_jar(), timeout=15)


async def test_a_flood_from_one_address_is_one_event_and_from_many_at_most_the_cap(
    tapped_cluster: tuple[Cluster, EmulatorTap],
) -> None:
    cluster, _ = tapped_cluster
    replica = start_split_replica(cluster, BFF_TRUSTED_PROXIES="127.0.0.1/32", BFF_RATE_LIMIT_LOGIN="1")
    login = f"{replica.url}/auth/login"
    async with _client_at("127.0.0.9") as one, _client_at("127.0.0.1") as proxy:
        # One address: 1 admitted, 199 refused, one event.
        responses = await asyncio.gather(*(one.get(login) for _ in range(200)))
        assert Counter(r.status_code for r in responses) == {302: 1, 429: 199}
        # 150 addresses behind the trusted proxy, each past its limit: 150 x (1 admitted + 2 refused).
        addresses = [f"203.0.113.{i}" for i in range(1, 151)]
        for _ in range(3):
            answers = await asyncio.gather(*(proxy.get(login, headers={"X-Forwarded-For": ip}) for ip in addresses))
            assert {r.status_code for r in answers} <= {302, 429}
    replica.halt()
    events = audit_events(replica.errors())
    assert {e["event"] for e in events} == {"rate_limited"}, Counter(e["event"] for e in events)
    for event in events:
        _check_shape(event)
        assert event["target"] == {"endpoint": "login", "limit": "address"} and event["suppressed"] == 0
        assert event["outcome"] == "denied" and event["actor"] is None and event["request_id"]
    clients = [e["client"] for e in events]
    assert clients[0] == "127.0.0.9"
    assert len(events) == TRAIL_PER_MINUTE  # 1 + 99 of the 150 forwarded addresses: the cap
    assert len(set(clients)) == TRAIL_PER_MINUTE and set(clients[1:]) <= set(addresses)
    assert not any(e["target"]["endpoint"] == "*" for e in events)  # the summary waits for the next minute


def _refuse(trail: RefusalTrail, address: str, times: int, limit: Any = "address") -> None:
    for _ in range(times):
        trail.refused("login", limit, address)


def test_the_refusal_trail_counts_what_it_folds_and_sums_up_what_is_over_the_cap(
    recorded: list[dict[str, Any]],
) -> None:
    clock = Clock(start=1_000_000.0)
    trail = RefusalTrail(clock)
    _refuse(trail, "198.51.100.1", 50)
    _refuse(trail, "198.51.100.1", 3, limit="browser")  # another limit of the same address: its own event
    assert [(e["target"], e["suppressed"]) for e in recorded] == [
        ({"endpoint": "login", "limit": "address"}, 0),
        ({"endpoint": "login", "limit": "browser"}, 0),
    ]
    # 200 more addresses, 4 refusals each: 98 reach the cap (100 keys this window), the rest are counted.
    flood = [f"203.0.113.{i}" for i in range(200)]
    for address in flood:
        _refuse(trail, address, 4)
    assert len(recorded) == TRAIL_PER_MINUTE
    clock.advance(TRAIL_WINDOW - 1)
    _refuse(trail, "192.0.2.1", 1)  # still the same window: over the cap, counted
    assert len(recorded) == TRAIL_PER_MINUTE
    # The next window: first the summary of the last one, then this refusal with what its key folded in.
    clock.advance(1)
    _refuse(trail, "198.51.100.1", 1)
    summary, first = recorded[TRAIL_PER_MINUTE:]
    over_cap = (200 - 98) * 4 + 1
    assert summary["target"] == {"endpoint": "*", "limit": "*"} and summary["suppressed"] == over_cap, summary
    assert (summary["client"], summary["request_id"], summary["outcome"]) == (None, None, "denied")
    assert summary["event"] == "rate_limited" and summary["actor"] is None
    assert first["target"] == {"endpoint": "login", "limit": "address"} and first["suppressed"] == 49, first
    # An address recorded last window with 3 folded refusals tells them with its first event of this one ...
    _refuse(trail, flood[0], 1)
    assert recorded[-1]["suppressed"] == 3
    # ... once: its next refusals this window are folded again, and told in the window after.
    _refuse(trail, flood[0], 5)
    # An address over the cap last window starts afresh: what it lost is in the summary, not told twice.
    _refuse(trail, flood[-1], 1)
    assert recorded[-1]["suppressed"] == 0
    assert len(recorded) == TRAIL_PER_MINUTE + 4
    # A window with nothing over the cap ends with no summary.
    clock.advance(TRAIL_WINDOW)
    _refuse(trail, flood[0], 1)
    assert len(recorded) == TRAIL_PER_MINUTE + 5
    assert recorded[-1]["target"]["endpoint"] == "login" and recorded[-1]["suppressed"] == 5
    assert sum(1 for e in recorded if e["target"]["endpoint"] == "*") == 1


def test_the_refusal_trail_without_a_cap_overflow_writes_no_summary(recorded: list[dict[str, Any]]) -> None:
    clock = Clock(start=5_000.0)
    trail = RefusalTrail(clock)
    for i in range(TRAIL_PER_MINUTE):
        _refuse(trail, f"198.51.100.{i}", 2)
    clock.advance(TRAIL_WINDOW)
    _refuse(trail, "192.0.2.9", 1)
    assert len(recorded) == TRAIL_PER_MINUTE + 1
    assert all(e["target"]["endpoint"] == "login" for e in recorded)
