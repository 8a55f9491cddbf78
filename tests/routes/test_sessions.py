"""A user's sessions ("Your devices") and an administrator's force sign-out, over real HTTP against the
emulator and a real Redis: what is listed, what ends, what the provider and the index see afterwards, and
the audit events each action leaves."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
import redis.asyncio as aioredis

from bff.sessions.store import (
    SESSION_ENDS_KEY,
    provider_session_index_key,
    public_handle_of,
    session_handle,
    subject_index_key,
)
from bff_dev.emulator.config import default_users
from tests.routes.test_mobile import (
    APP_URI,
    app_client,
    app_redirect,
    exchange,
    pkce,
    session_header,
    sign_in_in_browser,
)
from tests.support.clock import Clock
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import wait_for
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1"
)
EDGE_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.0.0"
)
GUEST_SUB = "anon_7f3a9c21"


@pytest.fixture
def stack(make_stack: MakeStack) -> Stack:
    """The seeded users under subjects of this test alone: Redis is shared by the whole run, and a user's
    index would otherwise list the sessions other tests signed that user into."""
    tag = secrets.token_hex(4)
    users = [replace(user, sub=f"{user.sub}_{tag}") for user in default_users()]
    admin = next(user.sub for user in users if user.username == "admin")
    return make_stack(emulator_options={"users": users}, admin_subjects=[admin], mobile_redirect_uris=[APP_URI])


@asynccontextmanager
async def signed_in(stack: Stack, username: str = "guest", user_agent: str = FIREFOX_LINUX) -> AsyncIterator[Browser]:
    async with stack.client(headers={"User-Agent": user_agent}) as client:
        final = await stack.login(client, username)
        assert final.status_code == 302, final.text
        yield Browser(stack, client, stack.idp.token_responses()[-1])


class Browser:
    def __init__(self, stack: Stack, client: httpx2.AsyncClient, tokens: dict[str, Any]) -> None:
        self.stack = stack
        self.client = client
        self.tokens = tokens  # what the provider issued at this browser's sign-in

    @property
    def oidc_sid(self) -> str:
        payload = self.tokens["id_token"].split(".")[1]
        sid = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
        assert isinstance(sid, str)
        return sid

    @property
    def session_id(self) -> str:
        session_id = self.stack.services.session_codec.unsign(
            self.client.cookies[self.stack.settings.session_cookie_name]
        )
        assert session_id is not None
        return session_id

    async def sub(self) -> str:
        r = await self.client.get(f"{self.stack.url}/auth/session", headers=CSRF)
        assert r.status_code == 200, r.text
        return str(r.json()["user"]["sub"])

    async def sessions(self) -> list[dict[str, Any]]:
        r = await self.client.get(f"{self.stack.url}/auth/sessions", headers=CSRF)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        listed: list[dict[str, Any]] = r.json()["sessions"]
        return listed

    async def call(self, method: str, path: str) -> httpx2.Response:
        return await self.client.request(method, f"{self.stack.url}{path}", headers={**CSRF, "Origin": self.stack.url})

    async def alive(self) -> bool:
        r = await self.client.get(f"{self.stack.url}/auth/session", headers=CSRF)
        assert r.status_code in (200, 401), r.text
        return r.status_code == 200


def stored_tokens(stack: Stack, browser: Browser) -> tuple[str, str]:
    return browser.tokens["access_token"], browser.tokens["refresh_token"]


def audit_events(caplog: pytest.LogCaptureFixture, event: str | None = None) -> list[dict[str, Any]]:
    found = [r.audit for r in caplog.records if r.name == "bff.audit"]  # type: ignore[attr-defined]
    return [e for e in found if event is None or e["event"] == event]


async def test_a_user_sees_each_of_their_sessions_and_nothing_that_rebuilds_a_cookie(stack: Stack) -> None:
    providers_before = len(stack.idp.exchanges)
    async with (
        signed_in(stack, user_agent=FIREFOX_LINUX) as laptop,
        signed_in(stack, user_agent=SAFARI_IPHONE) as phone,
        signed_in(stack, "admin", user_agent=EDGE_WINDOWS) as someone_else,
    ):
        sign_ins = len(stack.idp.exchanges)
        listed = await laptop.sessions()
        assert len(stack.idp.exchanges) == sign_ins  # listing calls no provider (nor anything else upstream)
        assert providers_before < sign_ins
        assert [(s["device"], s["kind"], s["current"]) for s in listed] == [
            ("Firefox on Linux", "browser", True),  # the caller's own first
            ("Safari on iOS", "browser", False),
        ]
        for entry in listed:
            assert set(entry) == {"handle", "kind", "device", "created_at", "last_active_at", "current"}
            assert re.fullmatch(r"[0-9a-f]{32}", entry["handle"])
            assert entry["last_active_at"] % 300 == 0
            assert entry["last_active_at"] <= entry["created_at"] + 300
        # From the other device, the same two sessions, the other one current.
        from_phone = await phone.sessions()
        assert {s["handle"] for s in from_phone} == {s["handle"] for s in listed}
        assert [s["device"] for s in from_phone if s["current"]] == ["Safari on iOS"]
        # Nothing in the answer names a session id, its Redis handle or its cookie.
        raw = (await laptop.client.get(f"{stack.url}/auth/sessions", headers=CSRF)).text
        for browser in (laptop, phone):
            sid = browser.session_id
            cookie = browser.client.cookies[stack.settings.session_cookie_name]
            assert sid not in raw and session_handle(sid) not in raw and cookie not in raw
            assert hashlib.sha256(sid.encode()).hexdigest()[:12] not in raw
        # Another user's session is not the user's business.
        admins = await someone_else.sessions()
        assert [s["device"] for s in admins] == ["Edge on Windows"]
        assert not {s["handle"] for s in admins} & {s["handle"] for s in listed}


async def test_ending_a_device_stops_it_at_once_and_revokes_its_tokens(
    stack: Stack, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bff.audit")
    r = aioredis.from_url(redis_url)
    try:
        async with signed_in(stack) as laptop, signed_in(stack, user_agent=SAFARI_IPHONE) as phone:
            sub = await laptop.sub()
            access, refresh = stored_tokens(stack, phone)
            assert await r.hlen(subject_index_key(sub)) == 2
            phone_handle = next(s["handle"] for s in await laptop.sessions() if not s["current"])

            ended = await laptop.call("DELETE", f"/auth/sessions/{phone_handle}")
            assert ended.status_code == 200, ended.text
            assert ended.json() == {"ended": 1}
            assert "set-cookie" not in ended.headers  # the laptop's own cookie stays

            assert not await phone.alive()
            assert (await phone.client.get(f"{stack.url}/auth/session", headers=CSRF)).json()[
                "code"
            ] == "session_expired"
            assert (await stack.introspect(access))["active"] is False
            assert (await stack.introspect(refresh))["active"] is False
            assert await laptop.alive()
            assert [s["current"] for s in await laptop.sessions()] == [True]
            assert await r.hlen(subject_index_key(sub)) == 1  # the ended session left the index

            # The same handle again: it is no longer one of the user's sessions.
            again = await laptop.call("DELETE", f"/auth/sessions/{phone_handle}")
            assert again.status_code == 404 and again.json()["code"] == "session_not_found"
    finally:
        await r.aclose()
    actions = audit_events(caplog, "session_ended")
    assert [(e["outcome"], e["actor"], e["target"], e["scope"], e["ended"]) for e in actions] == [
        ("success", sub, {"sub": sub, "session": phone_handle}, "one", 1),
        ("failure", sub, {"sub": sub, "session": phone_handle}, "one", 0),
    ]
    outs = [e for e in audit_events(caplog, "sign_out") if e["target"]["session"] == phone_handle]
    assert [(e["reason"], e["actor"], e["target"]["sub"]) for e in outs] == [("user", sub, sub)]


async def test_ending_ones_own_session_clears_its_cookie(stack: Stack) -> None:
    async with signed_in(stack) as laptop:
        mine = (await laptop.sessions())[0]
        assert mine["current"] is True
        r = await laptop.call("DELETE", f"/auth/sessions/{mine['handle']}")
        assert r.status_code == 200
        assert "Max-Age=0" in r.headers["set-cookie"] or '=""' in r.headers["set-cookie"]
        assert not await laptop.alive()


async def test_sign_out_everywhere_else_keeps_only_the_callers_session(stack: Stack, redis_url: str) -> None:
    async with (
        signed_in(stack) as laptop,
        signed_in(stack, user_agent=SAFARI_IPHONE) as phone,
        signed_in(stack, user_agent=EDGE_WINDOWS) as desktop,
        signed_in(stack, "admin") as bystander,
    ):
        sub = await laptop.sub()
        tokens = [stored_tokens(stack, b) for b in (phone, desktop)]
        r = await laptop.call("POST", "/auth/sessions/end-others")
        assert r.status_code == 200, r.text
        assert r.json() == {"ended": 2}
        assert [await b.alive() for b in (laptop, phone, desktop, bystander)] == [True, False, False, True]
        assert [(await stack.introspect(t))["active"] for pair in tokens for t in pair] == [False] * 4
        assert [s["current"] for s in await laptop.sessions()] == [True]
        redis = aioredis.from_url(redis_url)
        try:
            assert await redis.hlen(subject_index_key(sub)) == 1
        finally:
            await redis.aclose()
        # Nothing else to end: a second call ends nothing and still answers.
        assert (await laptop.call("POST", "/auth/sessions/end-others")).json() == {"ended": 0}


async def test_an_apps_session_is_listed_as_mobile_and_ends_like_any_other(stack: Stack) -> None:
    verifier, challenge = pkce()
    async with stack.client(headers={"User-Agent": SAFARI_IPHONE}) as system_browser:
        code = app_redirect(await sign_in_in_browser(stack, system_browser, challenge))["code"]
    async with app_client(stack) as app, signed_in(stack) as laptop:
        token = (await exchange(app, stack, code, verifier)).json()["session_token"]
        mine = await app.get(f"{stack.url}/auth/sessions", headers=session_header(token))  # no X-CSRF: an app
        assert mine.status_code == 200, mine.text
        assert [(s["kind"], s["device"], s["current"]) for s in mine.json()["sessions"]] == [
            ("mobile", "Safari on iOS", True),
            ("browser", "Firefox on Linux", False),
        ]
        phone = next(s["handle"] for s in await laptop.sessions() if s["kind"] == "mobile")
        assert (await laptop.call("DELETE", f"/auth/sessions/{phone}")).status_code == 200
        after = await app.get(f"{stack.url}/auth/session", headers=session_header(token))
        assert after.status_code == 401 and after.json()["code"] == "session_expired"


async def test_handles_that_are_not_the_users_own_are_one_404(stack: Stack) -> None:
    async with signed_in(stack) as guest, signed_in(stack, "admin") as other:
        others = (await other.sessions())[0]["handle"]
        for handle in (others, "0" * 32, "not-a-handle", "A" * 32, others + "0"):
            r = await guest.call("DELETE", f"/auth/sessions/{handle}")
            assert r.status_code == 404, handle
            assert r.json()["code"] == "session_not_found"
        assert await other.alive()  # someone else's handle ended nothing


async def test_the_sessions_calls_are_spa_calls(stack: Stack) -> None:
    async with signed_in(stack) as laptop, signed_in(stack, user_agent=SAFARI_IPHONE) as phone:
        handle = next(s["handle"] for s in await laptop.sessions() if not s["current"])
        url = stack.url
        no_csrf = await laptop.client.get(f"{url}/auth/sessions")
        assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "csrf_required"
        for method, path in (("DELETE", f"/auth/sessions/{handle}"), ("POST", "/auth/sessions/end-others")):
            foreign = await laptop.client.request(
                method, url + path, headers={**CSRF, "Origin": "https://evil.example"}
            )
            assert foreign.status_code == 403 and foreign.json()["code"] == "origin_not_allowed"
            bare = await laptop.client.request(method, url + path, headers={"Origin": url})
            assert bare.status_code == 403 and bare.json()["code"] == "csrf_required"
        assert await phone.alive()  # none of the refused calls ended anything
    async with stack.client() as anonymous:
        r = await anonymous.get(f"{url}/auth/sessions", headers=CSRF)
        assert r.status_code == 401 and r.json()["code"] == "not_authenticated"


async def test_logout_removes_the_session_from_both_indexes(stack: Stack, redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        async with signed_in(stack) as laptop, signed_in(stack) as other_tab_browser:
            sub = await laptop.sub()
            sid_index = provider_session_index_key(laptop.oidc_sid)
            handle = session_handle(laptop.session_id)
            assert await r.hexists(sid_index, handle)
            assert await r.hlen(subject_index_key(sub)) == 2
            out = await laptop.call("POST", "/auth/logout")
            assert out.status_code == 200
            assert await r.hlen(subject_index_key(sub)) == 1
            assert not await r.hexists(sid_index, handle)
            assert len(await other_tab_browser.sessions()) == 1
    finally:
        await r.aclose()


# -- administrators ------------------------------------------------------------------------------------------


async def test_an_admin_lists_and_force_signs_out_a_user(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bff.audit")
    async with (
        signed_in(stack, "admin", user_agent=EDGE_WINDOWS) as admin,
        signed_in(stack) as laptop,
        signed_in(stack, user_agent=SAFARI_IPHONE) as phone,
    ):
        sub = await laptop.sub()
        admin_sub = await admin.sub()
        path = f"/api/admin/users/{quote(sub, safe='')}/sessions"
        listing = await admin.call("GET", path)
        assert listing.status_code == 200, listing.text
        body = listing.json()
        assert body["sub"] == sub
        assert sorted(s["device"] for s in body["sessions"]) == ["Firefox on Linux", "Safari on iOS"]
        assert not any(s["current"] for s in body["sessions"])  # none of them is the admin's
        phone_handle = next(s["handle"] for s in body["sessions"] if s["device"] == "Safari on iOS")

        one = await admin.call("DELETE", f"{path}/{phone_handle}")
        assert one.status_code == 200 and one.json() == {"sub": sub, "ended": 1}
        assert "set-cookie" not in one.headers
        assert [await laptop.alive(), await phone.alive()] == [True, False]
        missing = await admin.call("DELETE", f"{path}/{phone_handle}")
        assert missing.status_code == 404 and missing.json()["code"] == "session_not_found"

        everything = await admin.call("DELETE", path)
        assert everything.status_code == 200 and everything.json() == {"sub": sub, "ended": 1}
        assert not await laptop.alive()
        assert await admin.alive()
        assert (await admin.call("GET", path)).json()["sessions"] == []

        # The admin's own sessions, through the admin route, show which one is theirs.
        own = (await admin.call("GET", f"/api/admin/users/{quote(admin_sub, safe='')}/sessions")).json()
        assert [s["current"] for s in own["sessions"]] == [True]
    outs = [e for e in audit_events(caplog, "sign_out") if e["target"]["sub"] == sub]
    assert [(e["reason"], e["actor"]) for e in outs] == [("admin", admin_sub), ("admin", admin_sub)]
    actions = [
        (e["scope"], e["ended"], e["actor"]) for e in audit_events(caplog, "session_ended") if e["outcome"] == "success"
    ]
    assert actions == [("one", 1, admin_sub), ("all", 1, admin_sub)]


async def test_admin_routes_follow_the_admin_rules(stack: Stack, make_stack: MakeStack) -> None:
    async with signed_in(stack) as guest, signed_in(stack, "admin") as admin:
        sub = await guest.sub()
        path = f"/api/admin/users/{sub}/sessions"
        for method in ("GET", "DELETE"):
            refused = await guest.call(method, path)
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        no_csrf = await admin.client.delete(f"{stack.url}{path}", headers={"Origin": stack.url})
        assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "csrf_required"
        foreign = await admin.client.delete(f"{stack.url}{path}", headers={**CSRF, "Origin": "https://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["code"] == "origin_not_allowed"
        bad = await admin.call("GET", "/api/admin/users/a%01b/sessions")
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
        assert (await admin.call("GET", f"/api/admin/users/{'x' * 256}/sessions")).status_code == 400
        assert (await admin.call("GET", "/api/admin/users/%C3%A9/sessions")).status_code == 400  # not ASCII
        assert await guest.alive()
    off = make_stack(admin_subjects=[])
    async with signed_in(off, "admin") as admin:
        r = await admin.call("DELETE", f"/api/admin/users/{GUEST_SUB}/sessions")
        assert r.status_code == 403 and r.json()["code"] == "limit_management_disabled"


async def test_a_replica_records_sessions_that_ended_unseen_within_its_sweep_interval(
    make_stack: MakeStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis expires an idle session on its own; nobody comes back with its cookie, nobody lists. The running
    service still records its end and drops its index entry (BFF_SESSION_SWEEP_INTERVAL)."""
    caplog.set_level(logging.INFO, logger="bff.audit")
    clock = Clock()
    server = RedisServer().start()  # the sweep looks at the whole schedule: a private Redis
    try:
        stack = make_stack(redis_url=server.url, clock=clock, session_sweep_interval=0.2, session_idle_timeout=600)
        async with signed_in(stack) as laptop:
            sub = await laptop.sub()
            handle = public_handle_of(laptop.session_id)
        clock.advance(601)
        # The service runs in its own thread: this wait blocks nothing of it.
        wait_for("the sweep", lambda: any(e["reason"] == "idle" for e in audit_events(caplog, "sign_out")), 10)
        outs = audit_events(caplog, "sign_out")
        assert [(e["reason"], e["target"], e["client"]) for e in outs] == [
            ("idle", {"sub": sub, "session": handle}, None)
        ]
        r = aioredis.from_url(server.url)
        try:
            assert await r.hlen(subject_index_key(sub)) == 0
            assert await r.zcard(SESSION_ENDS_KEY) == 0
        finally:
            await r.aclose()
    finally:
        server.stop()
