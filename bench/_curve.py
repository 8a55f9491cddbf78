"""The cost curve beyond the hot path: whole sign-ins per second, and the CPU of one token refresh.

Both run against the benchmark's stack (:func:`bench._stack.start_stack`): the bff at log level warning, the
Kryptos emulator as the OpenID provider, the private Redis. Every limit stays on, as deployed:

* **Per client address**, ``/auth/login`` and ``/auth/callback`` each admit ``BFF_RATE_LIMIT_LOGIN`` /
  ``_CALLBACK`` (30) a minute in bursts of 30. Sign-ins reach a BFF through its ingress from many addresses,
  so each simulated browser sends its own ``X-Forwarded-For`` (198.18.0.0/15, the range RFC 2544 sets aside
  for benchmarks) and the load generator stands where the ingress stands: the bench stack trusts 127.0.0.1 as a
  proxy (``BFF_TRUSTED_PROXIES``). Every check still runs and writes its bucket. ``one_address=True`` sends
  every sign-in from 127.0.0.1 instead; the run then ends at the first refusal, and says so.
* **The provider's quota** (:class:`bff.oidc.budget.ProviderBudget`): the token endpoint takes 100 calls a
  minute from all replicas together, and code exchanges may use 70 of them. That one binds first: sustained,
  a deployment signs in at most 70 users a minute whatever its CPU. A run therefore does at most as many
  sign-ins (and refreshes) as the sliding window has room for; it reads the window (a sorted set in Redis)
  before it starts, outside the measurement, and waits (bounded) for room when another part of the benchmark
  has just spent it. No call is ever refused by the budget (a 503 ``idp_busy`` would count as a failure).

A refresh needs a refresh token the emulator will honour. :func:`refresh_cost` asks the emulator for real token
responses (``POST /_emulator/issue-tokens``: access, refresh and ID token of a seeded user, issued for the
bench client, exactly what its token endpoint answers a code exchange) and stores each as a session with the
BFF's own code, as its callback does (``Session.signed_in`` + ``SessionManager.save``), with the access token
already past expiry, like ``tests.support.processes.expire_access_token``. That spends no code exchanges, so
the whole token window is left for the refreshes. Every session made here is ended (``SessionManager.end``)
before the function returns, so the memory figures of the benchmark see nothing of them.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import itertools
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from redis import Redis

from bench._measure import command_calls
from bench._procs import cpu_seconds, descendants
from bench._seed import Seeder
from bench._stack import CLIENT_ID, Stack
from bff.config import Settings
from bff.oidc.models import TokenSet
from bff.services.login import _DISPLAY_CLAIMS
from bff.sessions import Session, SessionManager
from bff.sessions.cookie import new_session_id
from bff.sessions.device import device_code
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import provider_budget_key

API_PATH = "/api/v1/integrations?page=1&pageSize=25"
SESSION_PATH = "/auth/session"
USERS = ("guest", "guest2", "linked", "admin")  # the emulator's seeded users, in turn
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
TOKEN_WINDOW = 60.0  # seconds: ProviderBudget's token window
MAX_BUDGET_WAIT = 70.0  # seconds a run waits for room in the token window, at most, before it starts
_SETTLE = 0.3  # seconds between writing sessions and measuring: the bff hears of each write (cache feed)
_HTTP_TIMEOUT = 30.0
_UNLIMITED = 1 << 30


# -- measuring ---------------------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _clock_seconds(pid: int) -> float | None:
    """The process's CPU-time clock (every thread, in ns; ``clock_getcpuclockid(3)``), or None when unreadable."""
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    ts = _Timespec()
    if _LIBC.clock_gettime(clock, ctypes.byref(ts)) != 0:
        return None
    seconds: int = ts.tv_sec
    nanoseconds: int = ts.tv_nsec
    return seconds + nanoseconds / 1e9


def precise_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants like :func:`bench._procs.cpu_seconds`, but from the
    kernel's CPU-time clocks (ns) instead of /proc's clock ticks (10 ms): a few hundred sign-ins or refreshes
    use well under a second of CPU, where ticks would be most of the error."""
    total = 0.0
    for p in (pid, *descendants(pid)):
        total += _clock_seconds(p) or 0.0  # a descendant gone meanwhile used nothing more
    return total


def _cpu_reader(pids: Sequence[int]) -> tuple[str, Any]:
    if all(_clock_seconds(pid) is not None for pid in pids):
        return "CPU-time clocks (ns)", precise_cpu_seconds
    return "/proc clock ticks", cpu_seconds


class _Meter:
    """CPU seconds of bff, emulator and Redis, and Redis commands, summed over the measured intervals only."""

    def __init__(self, stack: Stack, redis: Redis) -> None:
        self._pids = {"bff": stack.bff.pid, "emulator": stack.emulator.pid, "redis": stack.redis.pid}
        self._redis = redis
        self.clock, self._cpu = _cpu_reader(list(self._pids.values()))
        self.cpu: dict[str, float] = dict.fromkeys(self._pids, 0.0)
        self.commands: Counter[str] = Counter()
        self.wall = 0.0

    def _read(self, pid: int) -> float:
        value: float = self._cpu(pid)
        return value

    @contextmanager
    def measuring(self) -> Iterator[None]:
        commands = command_calls(self._redis)
        cpu = {name: self._read(pid) for name, pid in self._pids.items()}
        started = time.perf_counter()
        yield
        self.wall += time.perf_counter() - started
        for name, pid in self._pids.items():
            self.cpu[name] += self._read(pid) - cpu[name]
        after = command_calls(self._redis)
        self.commands.update({k: v - commands.get(k, 0) for k, v in after.items() if v != commands.get(k, 0)})
        self.commands["info"] -= 1  # our own INFO before the interval
        self.commands = +self.commands  # drop zeros

    def us_per(self, name: str, n: int) -> float:
        return self.cpu[name] * 1e6 / max(n, 1)

    def commands_per(self, n: int) -> float:
        return sum(self.commands.values()) / max(n, 1)


def _breakdown(commands: Counter[str] | dict[str, float], n: int, *, top: int = 8) -> str:
    items = sorted(((k, v / max(n, 1)) for k, v in commands.items() if v), key=lambda kv: -abs(kv[1]))
    shown = ", ".join(f"{k} {v:.2f}" for k, v in items[:top])
    return shown + (", …" if len(items) > top else "")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else 0.0


# -- the provider's token window (bff.oidc.budget.ProviderBudget) --------------------------------------------


@dataclass(frozen=True)
class _Budget:
    key: str
    token_limit: int  # token calls a minute, refreshes may use all of them
    exchange_limit: int  # code exchanges may fill the window only this far

    @classmethod
    def of(cls, settings: Settings) -> _Budget:
        token = settings.token_budget_per_minute
        # ProviderBudget's own arithmetic: at least one exchange, or nobody could sign in.
        exchanges = max(1, math.floor(token * settings.code_exchange_share + 1e-9)) if token else 0
        return cls(provider_budget_key(f"{settings.issuer} {settings.client_id}", "token"), token, exchanges)

    def leaving(self, redis: Redis) -> list[float]:
        """Seconds until each token call still in the window leaves it, soonest first (by Redis's clock, as
        the budget's script counts)."""
        now_s, now_us = (int(v) for v in redis.time())
        now_ms = now_s * 1000 + now_us // 1000
        window_ms = int(TOKEN_WINDOW * 1000)
        entries: Any = redis.zrangebyscore(self.key, f"({now_ms - window_ms}", "+inf", withscores=True)
        return sorted((float(score) + window_ms - now_ms) / 1000 for _, score in entries)

    async def room(self, redis: Redis, limit: int, want: int, *, max_wait: float) -> tuple[int, float]:
        """Token calls the window admits under ``limit`` now, after waiting (at most ``max_wait`` s) for
        ``want`` of them; and how long it waited."""
        if limit <= 0:  # the budget is off: no limit but the caller's own
            return _UNLIMITED, 0.0
        started = time.monotonic()
        while True:
            leaving = self.leaving(redis)
            room = limit - len(leaving)
            waited = time.monotonic() - started
            if room >= want or waited >= max_wait:
                return max(room, 0), waited
            # The (want - room)-th call to leave makes enough room.
            await asyncio.sleep(min(leaving[min(want - room, len(leaving)) - 1] + 0.05, max_wait - waited))


# -- one sign-in ---------------------------------------------------------------------------------------------


def _cookie(response: httpx2.Response, name: str) -> str | None:
    """The value a ``Set-Cookie`` of the response gives ``name`` (parsed here, not by a cookie jar)."""
    for header in response.headers.get_list("set-cookie"):
        pair = header.split(";", 1)[0]
        key, _, value = pair.partition("=")
        if key.strip() == name and value:
            return value.strip()
    return None


@dataclass
class _Outcome:
    cookie: str | None = None
    seconds: float = 0.0
    refused: str | None = None  # "429 /auth/login", "503 /auth/callback" (a limit said no; not a failure)
    error: str | None = None


class _Browser:
    """A browser signing in through bff and the emulator: every sign-in a new browser (no cookies), from its
    own client address unless ``one_address``."""

    def __init__(self, stack: Stack, client: httpx2.AsyncClient) -> None:
        self._bff = f"http://127.0.0.1:{stack.bff.port}"
        self._authorize = f"http://127.0.0.1:{stack.emulator.port}/oidc/auth?"
        self._login_cookie = stack.settings.login_cookie_name
        self._session_cookie = stack.settings.session_cookie_name
        self._client = client

    async def _get(self, url: str, headers: dict[str, str], params: dict[str, str] | None = None) -> httpx2.Response:
        response = await self._client.get(url, headers=headers, params=params)
        self._client.cookies.clear()  # cookies travel only as this class sends them
        return response

    async def sign_in(self, username: str, address: str | None) -> _Outcome:
        headers = {"User-Agent": USER_AGENT, "Accept": "text/html"}
        if address is not None:
            headers["X-Forwarded-For"] = address
        started = time.perf_counter()
        # 1. bff: store the login state, set the login-binding cookie, redirect to the provider.
        r = await self._get(f"{self._bff}/auth/login", headers, {"login_hint": username})
        if r.status_code in (429, 503):
            return _Outcome(refused=f"{r.status_code} /auth/login")
        location = r.headers.get("location", "")
        binding = _cookie(r, self._login_cookie)
        if r.status_code != 302 or not location.startswith(self._authorize) or binding is None:
            return _Outcome(error=f"/auth/login answered {r.status_code} to {location[:80]!r}")
        # 2. The emulator's authorization endpoint: a known login_hint signs that user in at once (no form)
        # and redirects back with a code.
        r = await self._get(location, {"User-Agent": USER_AGENT, "Accept": "text/html"})
        location = r.headers.get("location", "")
        if r.status_code != 302 or not location.startswith(f"{self._bff}/auth/callback?") or "code=" not in location:
            return _Outcome(error=f"the emulator's /oidc/auth answered {r.status_code} to {location[:80]!r}")
        # 3. bff: take the state, redeem the code, validate the ID token, write the session, set its cookie.
        r = await self._get(location, {**headers, "Cookie": f"{self._login_cookie}={binding}"})
        if r.status_code in (429, 503):
            return _Outcome(refused=f"{r.status_code} /auth/callback")
        session = _cookie(r, self._session_cookie)
        if r.status_code != 302 or session is None:
            return _Outcome(error=f"/auth/callback answered {r.status_code}: {r.text[:200]!r}")
        return _Outcome(cookie=session, seconds=time.perf_counter() - started)

    async def check_session(self, cookie: str) -> str | None:
        """None when ``cookie`` names a signed-in session (``GET /auth/session``); otherwise what went wrong."""
        headers = {"Cookie": f"{self._session_cookie}={cookie}", "X-CSRF": "1", "Accept": "application/json"}
        r = await self._get(f"{self._bff}{SESSION_PATH}", headers)
        if r.status_code == 200 and r.json().get("authenticated") is True:
            return None
        return f"{SESSION_PATH} answered {r.status_code}: {r.text[:120]!r}"


_addresses = itertools.count()  # across calls: no address signs in twice within one benchmark (131,072 of them)


def _address(n: int) -> str:
    """The n-th client address of 198.18.0.0/15 (RFC 2544's benchmark range), one per sign-in."""
    n %= 1 << 17
    return f"198.{18 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


@dataclass
class _SignInRun:
    outcomes: list[_Outcome] = field(default_factory=list)
    room: int = 0
    waited: float = 0.0
    session_ok: int = 0
    session_errors: list[str] = field(default_factory=list)
    ended: int = 0
    warm_up: str | None = None

    @property
    def done(self) -> list[_Outcome]:
        return [o for o in self.outcomes if o.cookie is not None]


async def _sign_in_run(
    stack: Stack, meter: _Meter, redis: Redis, *, seconds: float, concurrency: int, one_address: bool
) -> _SignInRun:
    budget = _Budget.of(stack.settings)
    run = _SignInRun()
    run.room, run.waited = await budget.room(
        redis, budget.exchange_limit, budget.exchange_limit, max_wait=MAX_BUDGET_WAIT
    )
    limits = httpx2.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    started = 0
    stop = False

    async def worker(client: httpx2.AsyncClient, deadline: float) -> None:
        nonlocal started, stop
        browser = _Browser(stack, client)
        loop = asyncio.get_running_loop()
        while not stop and started < run.room and loop.time() < deadline:
            n = started
            started += 1
            address = None if one_address else _address(next(_addresses))
            outcome = await browser.sign_in(USERS[n % len(USERS)], address)
            run.outcomes.append(outcome)
            if outcome.refused is not None:
                stop = True  # a limit said when to come back: a client that keeps asking only measures 429s

    clients = [httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, limits=limits) for _ in range(concurrency)]
    try:
        # One sign-in first, not measured (its exchange counts against the room): the first one in a process
        # also fetches the provider's JWKS and warms every code path.
        if run.room > 0:
            warm_up = await _Browser(stack, clients[0]).sign_in(
                USERS[0], None if one_address else _address(next(_addresses))
            )
            run.room -= 1
            if warm_up.cookie is None:
                raise RuntimeError(f"the warm-up sign-in failed: {warm_up.error or warm_up.refused}")
            run.warm_up = warm_up.cookie
        with meter.measuring():
            deadline = asyncio.get_running_loop().time() + seconds
            await asyncio.gather(*(worker(c, deadline) for c in clients))
        # Outside the measurement: every new cookie must name a live session.
        browser = _Browser(stack, clients[0])
        for outcome in run.done:
            assert outcome.cookie is not None
            problem = await browser.check_session(outcome.cookie)
            if problem is None:
                run.session_ok += 1
            else:
                run.session_errors.append(problem)
    finally:
        for c in clients:
            await c.aclose()
        cookies = [o.cookie for o in run.done if o.cookie is not None]
        run.ended = await _end_sessions(stack, [run.warm_up, *cookies] if run.warm_up else cookies)
    return run


async def _end_sessions(stack: Stack, cookies: Sequence[str]) -> int:
    """End the sessions the sign-ins made (``SessionManager.end``: a short-lived tombstone each, out of every
    index), so the benchmark's Redis memory figures see nothing of them; how many were ended."""
    seeder = Seeder(stack.settings, stack.redis_url)
    store = RedisStore.from_url(stack.redis_url)
    ended = 0
    try:
        manager = seeder.manager(store)
        for cookie in cookies:
            session_id = seeder.codec.unsign(cookie)
            if session_id is not None and await manager.end(session_id, reason="user") is not None:
                ended += 1
    finally:
        await store.aclose()
    return ended


def sign_ins(stack: Stack, *, seconds: float, concurrency: int, one_address: bool = False) -> list[str]:
    """Whole sign-ins against the bff at log level warning, ``concurrency`` browsers in a closed loop for at
    most ``seconds`` (and at most the room the provider's token window has for code exchanges); markdown
    bullet lines for the report."""
    redis = Redis.from_url(stack.redis_url)
    try:
        meter = _Meter(stack, redis)
        run = asyncio.run(
            _sign_in_run(stack, meter, redis, seconds=seconds, concurrency=concurrency, one_address=one_address)
        )
    finally:
        redis.close()
    return _sign_in_lines(stack.settings, run, meter, seconds=seconds, concurrency=concurrency, one_address=one_address)


def _sign_in_lines(
    settings: Settings, run: _SignInRun, meter: _Meter, *, seconds: float, concurrency: int, one_address: bool
) -> list[str]:
    done = run.done
    n = len(done)
    times = [o.seconds for o in done]
    refused = Counter(o.refused for o in run.outcomes if o.refused is not None)
    errors = [o.error for o in run.outcomes if o.error is not None] + run.session_errors
    failures = len(errors)
    rate = n / meter.wall if meter.wall else 0.0
    p50 = statistics.median(times) if times else 0.0
    bff_us = meter.us_per("bff", n)
    if refused:
        ended_by = "a refusal"
    elif len(run.outcomes) >= run.room:
        ended_by = "the token window's room"
    else:
        ended_by = "time"
    who = (
        "every browser from 127.0.0.1 (one client address)"
        if one_address
        else "each a new browser from its own client address (X-Forwarded-For from the load generator, which the "
        "stack trusts as its ingress)"
    )
    return [
        f"- **Sign-ins, end to end** (`GET /auth/login` → the emulator's `GET /oidc/auth` with `login_hint`, which "
        f"signs the user in and redirects with a code → `GET /auth/callback`: state taken, code redeemed at the "
        f"emulator's token endpoint, ID token validated, session written): {concurrency} browsers in a closed loop, "
        f"{who}: **{n} sign-ins in {meter.wall:.2f} s = {rate:.1f}/s**, one sign-in p50 {p50:.3f} s, "
        f"p99 {_percentile(times, 0.99):.3f} s; failures **{failures}**"
        + (f" ({'; '.join(errors[:3])})" if errors else "")
        + (f"; refused by a limit: {', '.join(f'{v} × {k}' for k, v in refused.items())}" if refused else "")
        + f". The run ended on {ended_by} (asked for {seconds:g} s).",
        f"- CPU per sign-in: **bff {bff_us:,.0f} µs**, the emulator {meter.us_per('emulator', n):,.0f} µs, Redis "
        f"{meter.us_per('redis', n):,.0f} µs; Redis commands per sign-in {meter.commands_per(n):.1f} "
        f"({_breakdown(meter.commands, n)}). The emulator's CPU is the provider's cost (Kryptos's), not bff's: it "
        f"authorizes, signs the ID and access tokens (RS256) and logs each request; the load generator's CPU is "
        f"counted for nobody. At this CPU one bff worker could finish {1e6 / bff_us if bff_us else 0:,.0f} "
        f"sign-ins a second on a core of its own. (CPU from the processes' {meter.clock}.)",
        _limits_line(settings, run, n),
    ]


def _limits_line(settings: Settings, run: _SignInRun, n: int) -> str:
    per_address = min(settings.rate_limit_login, settings.rate_limit_callback)
    if per_address > 0:
        address = (
            f"per client address `BFF_RATE_LIMIT_LOGIN` {settings.rate_limit_login} and `BFF_RATE_LIMIT_CALLBACK` "
            f"{settings.rate_limit_callback} a minute (bursts as large): one address signs in at most {per_address} "
            f"times at once, then once every {60 / per_address:g} s"
        )
    else:
        address = "the per-address limit of sign-ins is OFF (`BFF_RATE_LIMIT_LOGIN` / `_CALLBACK` 0)"
    budget = _Budget.of(settings)
    if budget.token_limit > 0:
        quota = (
            f"the provider's quota, every address and replica together: code exchanges may fill "
            f"{budget.exchange_limit} of the {budget.token_limit} token-endpoint calls a minute "
            f"(`BFF_TOKEN_BUDGET_PER_MINUTE` × `BFF_CODE_EXCHANGE_SHARE`), so a deployment signs in at most "
            f"{budget.exchange_limit} users a minute ({budget.exchange_limit / 60:.2f}/s) sustained, whatever its "
            f"CPU. This run had room for {run.room} (and one sign-in before it, to warm up)"
            + (f" after waiting {run.waited:.0f} s for the window" if run.waited >= 0.5 else "")
        )
    else:
        quota = "the provider's quota is OFF (`BFF_TOKEN_BUDGET_PER_MINUTE` 0)"
    return (
        f"- Limits: {address}; {quota}. Each new cookie then answered `GET {SESSION_PATH}` 200 with the user: "
        f"{run.session_ok} of {n} (checked after the measurement; {run.ended} sessions ended afterwards)."
    )


# -- the CPU of one refresh ----------------------------------------------------------------------------------


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def _expired_sessions(
    stack: Stack, seeder: Seeder, manager: SessionManager, client: httpx2.AsyncClient, count: int
) -> list[str]:
    """``count`` sessions holding real tokens the emulator issued, each access token already past expiry;
    returns their session ids."""
    control = f"http://127.0.0.1:{stack.emulator.port}/_emulator/issue-tokens"
    device = device_code(USER_AGENT)
    ids: list[str] = []
    for n in range(count):
        r = await client.post(control, json={"username": USERS[n % len(USERS)], "client_id": CLIENT_ID})
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        refresh_expires = body.get("refresh_expires_in")
        tokens = TokenSet(
            access_token=str(body["access_token"]),
            expires_in=float(body["expires_in"]),
            refresh_token=str(body["refresh_token"]),
            refresh_expires_in=float(refresh_expires) if refresh_expires else None,
            id_token=str(body["id_token"]),
            scope=body.get("scope"),
        )
        claims = _jwt_claims(str(body["id_token"]))
        sid = claims.get("sid")
        issued = manager.clock()
        # What the callback stores (bff.services.login._create_session) ...
        session = Session.signed_in(
            sub=str(claims["sub"]),
            claims={k: claims[k] for k in _DISPLAY_CLAIMS if k in claims},
            oidc_sid=sid if isinstance(sid, str) else None,
            tokens=tokens,
            scope=" ".join(seeder.settings.scopes),
            issued_at=issued,
            lifetimes=manager.lifetimes,
            device=device,
        )
        # ... with the access token past expiry, as tests.support.processes.expire_with leaves it.
        past = issued - 1
        session_id = new_session_id()
        saved = await manager.save(session_id, session.with_changes(access_expires_at=past, access_refresh_at=past))
        assert saved is not None, "a session could not be written"
        ids.append(session_id)
    return ids


async def _touch(manager: SessionManager, ids: Sequence[str]) -> None:
    for session_id in ids:
        session = await manager.load(session_id, cached=False)
        assert session is not None, "a refreshed session is gone"
        assert session.access_expires_at > manager.clock() + 60, "a session was not refreshed"
        saved = await manager.save(session_id, session.with_changes(last_seen_at=manager.clock()))
        assert saved is not None, "a session could not be re-saved"


async def _api_calls(client: httpx2.AsyncClient, url: str, cookies: Sequence[str], concurrency: int) -> list[int]:
    """One ``GET`` of the API per cookie, ``concurrency`` at a time; the status codes, in order."""
    statuses = [0] * len(cookies)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(cookies):
            i = next_index
            next_index += 1
            r = await client.get(url, headers={"Cookie": cookies[i], "X-CSRF": "1", "Accept": "application/json"})
            client.cookies.clear()
            statuses[i] = r.status_code

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def _emulator_stats(client: httpx2.AsyncClient, stack: Stack) -> dict[str, Any]:
    r = await client.get(f"http://127.0.0.1:{stack.emulator.port}/_emulator/stats")
    r.raise_for_status()
    stats: dict[str, Any] = r.json()
    return stats


async def _refreshed_metric(client: httpx2.AsyncClient, stack: Stack) -> float:
    """bff's ``bff_token_refreshes_total{outcome="refreshed"}``, from its metrics port."""
    r = await client.get(f"http://127.0.0.1:{stack.settings.metrics_port}/metrics")
    r.raise_for_status()
    name = 'bff_token_refreshes_total{outcome="refreshed"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines() if line.startswith(name))


@dataclass
class _RefreshRun:
    count: int
    refreshed: _Meter
    ordinary: _Meter
    statuses: Counter[int] = field(default_factory=Counter)
    token_calls: int = 0  # refresh_token grants the emulator answered with success during the refreshed calls
    token_errors: int = 0
    bff_refreshes: float = 0.0
    batches: int = 0
    waited: float = 0.0
    ended: int = 0


async def _refresh_run(stack: Stack, seeder: Seeder, redis: Redis, *, count: int, concurrency: int) -> _RefreshRun:
    run = _RefreshRun(count, _Meter(stack, redis), _Meter(stack, redis))
    budget = _Budget.of(stack.settings)
    store = RedisStore.from_url(stack.redis_url)
    manager = seeder.manager(store)
    url = f"http://127.0.0.1:{stack.bff.port}{API_PATH}"
    cookie_name = stack.settings.session_cookie_name
    limits = httpx2.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    ids: list[str] = []
    warm_ids: list[str] = []
    try:
        async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, limits=limits) as client:
            # One refresh first, not measured: the first in a process warms its code paths and connections.
            _, run.waited = await budget.room(redis, budget.token_limit, 1, max_wait=MAX_BUDGET_WAIT)
            warm_up = await _expired_sessions(stack, seeder, manager, client, 1)
            warm_ids.extend(warm_up)
            await _api_calls(client, url, [f"{cookie_name}={seeder.codec.sign(warm_up[0])}"], 1)
            stats_before = await _emulator_stats(client, stack)
            metric_before = await _refreshed_metric(client, stack)
            # Refreshing calls, in batches that fit the token window: each one redeems a refresh token. Each
            # batch's sessions are made right before it, so none is old enough for a sliding write.
            batches: list[Sequence[str]] = []
            while len(ids) < count:
                want = min(count - len(ids), budget.token_limit) if budget.token_limit > 0 else count - len(ids)
                room, waited = await budget.room(redis, budget.token_limit, want, max_wait=MAX_BUDGET_WAIT)
                run.waited += waited
                if room <= 0:
                    raise RuntimeError(f"no room in the provider's token window after {waited:.0f} s")
                made = await _expired_sessions(stack, seeder, manager, client, min(room, count - len(ids)))
                ids.extend(made)
                batch = [f"{cookie_name}={seeder.codec.sign(i)}" for i in made]
                await asyncio.sleep(_SETTLE)
                with run.refreshed.measuring():
                    run.statuses.update(await _api_calls(client, url, batch, concurrency))
                batches.append(batch)
            run.batches = len(batches)
            stats_after = await _emulator_stats(client, stack)
            run.bff_refreshes = await _refreshed_metric(client, stack) - metric_before
            before = stats_before["token"].get("refresh_token", {})
            after = stats_after["token"].get("refresh_token", {})
            run.token_calls = int(after.get("success", 0)) - int(before.get("success", 0))
            run.token_errors = sum(int(v) for v in after.values()) - sum(int(v) for v in before.values())
            run.token_errors -= run.token_calls
            # Ordinary calls on the same sessions, right after (their tokens now fresh), in the same batches.
            # Each is first re-saved as just used (what Seeder.touch does before every hot-path run), which
            # also makes the bff drop the copy its refresh left in its session cache: both kinds of call then
            # start from Redis, and the difference is the refresh alone.
            await _touch(manager, ids)
            await asyncio.sleep(_SETTLE)
            for measured in batches:
                with run.ordinary.measuring():
                    run.statuses.update(await _api_calls(client, url, measured, concurrency))
    finally:
        for session_id in [*warm_ids, *ids]:  # leave nothing for the benchmark's memory figures
            if await manager.end(session_id, reason="user") is not None:
                run.ended += 1
        await store.aclose()
    return run


def refresh_cost(stack: Stack, seeder: Seeder, *, count: int, concurrency: int = 4) -> list[str]:
    """bff's CPU for one token refresh: an API call on each of ``count`` sessions whose access token has
    expired (each call refreshes it at the emulator), minus the same call on the same sessions right after;
    markdown bullet lines for the report.

    The refreshes (``count`` and one to warm up) spend the provider's token window, 100 calls a minute by
    default: up to 99 fit one empty window; every further 100 wait a minute (not measured)."""
    redis = Redis.from_url(stack.redis_url)
    try:
        run = asyncio.run(_refresh_run(stack, seeder, redis, count=count, concurrency=concurrency))
    finally:
        redis.close()
    return _refresh_lines(stack.settings, run, concurrency=concurrency)


def _refresh_lines(settings: Settings, run: _RefreshRun, *, concurrency: int) -> list[str]:
    n = run.count
    a, b = run.refreshed, run.ordinary
    bff_a, bff_b = a.us_per("bff", n), b.us_per("bff", n)
    redis_a, redis_b = a.us_per("redis", n), b.us_per("redis", n)
    non_200 = {status: k for status, k in run.statuses.items() if status != 200}
    diff: Counter[str] = Counter(a.commands)
    diff.subtract(b.commands)
    budget = _Budget.of(settings)
    return [
        f"- **The CPU of one refresh**: `GET {API_PATH}` once on each of {n} sessions whose access token had "
        f"expired ({concurrency} at a time; each call refreshes at the emulator's token endpoint first), then once "
        f"more on the same sessions (tokens now fresh): bff **{bff_a:,.0f} µs** per refreshing call, "
        f"**{bff_b:,.0f} µs** per ordinary call → **one refresh costs bff {bff_a - bff_b:,.0f} µs**; Redis "
        f"{redis_a:,.0f} vs {redis_b:,.0f} µs ({redis_a - redis_b:,.0f} µs per refresh); the emulator "
        f"{a.us_per('emulator', n):,.0f} µs per refresh (the provider's cost, not bff's). "
        f"Non-200 answers: {sum(non_200.values())}" + (f" ({dict(non_200)})" if non_200 else "") + ".",
        f"- Redis commands per call: {a.commands_per(n):.1f} refreshing, {b.commands_per(n):.1f} ordinary → "
        f"**{a.commands_per(n) - b.commands_per(n):.1f} per refresh** ({_breakdown(diff, n)}). The emulator's "
        f"token endpoint answered {run.token_calls} refresh grants ({run.token_errors} errors) and bff counted "
        f"{run.bff_refreshes:.0f} refreshes, for {n} calls.",
        f"- The sessions hold real tokens from the emulator (`POST /_emulator/issue-tokens`), stored with the "
        f"callback's own code, access token past expiry; refreshes spend the provider's quota "
        f"(`BFF_TOKEN_BUDGET_PER_MINUTE` {budget.token_limit}, every replica together), so the refreshing calls "
        f"ran in {run.batches} batch{'es' if run.batches != 1 else ''} that fit the token window"
        + (f", waiting {run.waited:.0f} s for room (not measured)" if run.waited >= 0.5 else "")
        + f"; {run.ended} sessions ended afterwards. (CPU from the processes' {a.clock}.)",
    ]
