"""The Node BFF peer (``bench/node/server.js``): install it, describe its process, seed its sessions.

It is what a Node team would write for the same job: express 5, express-session with connect-redis,
http-proxy-middleware. Its sessions are written straight into Redis in the form express-session and
connect-redis store them, with tokens the size of bff's seeded ones, so both BFFs carry the same load.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from bench._procs import Server
from bench._seed import ACCESS_TOKEN_LIFETIME, _access_token

NODE_DIR = Path(__file__).parent / "node"
COOKIE_NAME = "sid"
SESSION_PREFIX = "sess:"  # connect-redis's default
COOKIE_MAX_AGE_MS = 8 * 3600 * 1000  # server.js: cookie.maxAge
_MIN_NODE_MAJOR = 18  # express 5, redis 5 and connect-redis 9 need it
_PIPELINE_BATCH = 2000


def unavailable() -> str | None:
    """Why the Node peer cannot run here (no ``node`` or ``npm`` on PATH, or too old a node), else None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are needed for the Node BFF peer; " + ("npm" if node else "node") + " is not on PATH"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
        major = int(version.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return f"node --version failed: {err}"
    if major < _MIN_NODE_MAJOR:
        return f"the Node BFF peer needs node >= {_MIN_NODE_MAJOR}, found {version.strip()}"
    return None


def install(timeout: float = 300) -> None:
    """``npm ci`` the peer's locked dependencies when node_modules is missing or older than the lock file."""
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"  # npm writes it at the end of every install
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm") or "npm"
    try:
        done = subprocess.run(
            [npm, "ci", "--omit=dev", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"npm ci in {NODE_DIR} did not finish within {timeout:.0f} s") from err
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"npm ci in {NODE_DIR} failed (exit {done.returncode}):\n{tail}")


def server(
    port: int,
    redis_url: str,
    upstream_port: int,
    log: Path,
    *,
    secret: str,
    client_id: str,
    client_secret: str,
) -> Server:
    """The Node BFF on 127.0.0.1:``port`` in front of the upstream on ``upstream_port`` (not started)."""
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "REDIS_URL": redis_url,
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "SESSION_SECRET": secret,
        "CLIENT_ID": client_id,
        "CLIENT_SECRET": client_secret,
    }
    node = shutil.which("node") or "node"
    return Server("node bff", [node, str(NODE_DIR / "server.js")], port, log, env=env)


def _js_iso(ms: int) -> str:
    """``Date.prototype.toISOString()``: UTC with milliseconds, as JSON.stringify writes a Date."""
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def sign_cookie(session_id: str, secret: str) -> str:
    """The ``sid`` cookie value express-session sets: ``s:<id>.<cookie-signature>``, URL-encoded."""
    mac = hmac.new(secret.encode(), session_id.encode(), hashlib.sha256).digest()
    signed = "s:" + session_id + "." + base64.b64encode(mac).decode().rstrip("=")
    return urllib.parse.quote(signed, safe="")  # encodeURIComponent, as the cookie module serializes it


async def seed(redis_url: str, count: int, *, secret: str) -> list[str]:
    """``count`` signed-in sessions stored as express-session + connect-redis store them; their cookie values."""
    client: Redis = Redis.from_url(redis_url)
    cookies: list[str] = []
    try:
        pipe = client.pipeline(transaction=False)
        for n in range(count):
            now = time.time()
            now_ms = int(now * 1000)
            expires_ms = now_ms + COOKIE_MAX_AGE_MS
            session_id = secrets.token_urlsafe(24)  # uid-safe(24): 32 url-safe characters
            value = {
                "cookie": {
                    "originalMaxAge": COOKIE_MAX_AGE_MS,
                    "expires": _js_iso(expires_ms),
                    "secure": False,
                    "httpOnly": True,
                    "path": "/",
                    "sameSite": "lax",
                },
                "tokens": {
                    "access_token": _access_token(n, now),
                    "refresh_token": secrets.token_urlsafe(45),  # 60 characters
                    "expires_at": int(now) + ACCESS_TOKEN_LIFETIME,
                },
                "user": {
                    "sub": f"user_bench_{n:06d}",
                    "name": f"Bench User {n}",
                    "email": f"bench.user.{n}@example.com",
                    "preferred_username": f"bench{n}",
                },
            }
            ttl = math.ceil((expires_ms - now_ms) / 1000)  # connect-redis: seconds until cookie.expires
            pipe.set(SESSION_PREFIX + session_id, json.dumps(value, separators=(",", ":")), ex=ttl)
            cookies.append(sign_cookie(session_id, secret))
            if len(pipe) >= _PIPELINE_BATCH:
                await pipe.execute()
        await pipe.execute()
    finally:
        await client.aclose()
    return cookies
