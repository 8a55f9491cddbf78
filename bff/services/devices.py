"""A user's sessions as people see them, and ending them: "Your devices", "sign out everywhere else", and an
administrator's force sign-out (``/auth/sessions``, ``/api/admin/users/{sub}/sessions``).

Everything is read from the user's own index (:meth:`bff.sessions.SessionManager.sessions_of`): one read,
however many sessions other users have, and no upstream call. Sessions are named by their public handle
(:func:`bff.sessions.store.public_handle`), which rebuilds no cookie and is not even the Redis key name.

Ending a session is the logout's order (:class:`bff.services.login.LoginService`): the record first, so
every replica stops serving it at once, then its tokens are revoked at the provider (RFC 7009); both a few at a
time. Each action is one ``session_ended`` event of the audit trail, and each session it ended one
``sign_out`` (:mod:`bff.audit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

from bff import audit
from bff.services.login import LoginService
from bff.sessions import Session, SessionManager
from bff.sessions.device import device_label
from bff.sessions.manager import Listed
from bff.sessions.store import RedisBudget, redis_budget

By = Literal["user", "admin"]

LAST_ACTIVE_STEP = 300  # seconds: "last active" is shown to the 5 minutes, not to the second
_AT_ONCE = 8  # sessions ended (then revocations sent) concurrently per action
T = TypeVar("T")


class Devices:
    def __init__(self, sessions: SessionManager, login: LoginService, *, redis_timeout: float) -> None:
        self._sessions = sessions
        self._login = login
        self._redis_timeout = redis_timeout

    def __repr__(self) -> str:
        return "Devices(...)"

    async def listing(self, sub: str, current: str | None) -> list[dict[str, Any]]:
        """The live sessions of ``sub``, the caller's own (handle ``current``) first, then the most recent."""
        listed = await self._sessions.sessions_of(sub)
        listed.sort(key=lambda s: (s.handle != current, -s.entry.last_seen_at, -s.entry.created_at))
        return [
            {
                "handle": s.public,
                "kind": s.entry.kind,
                "device": device_label(s.entry.device),
                "created_at": s.entry.created_at,
                "last_active_at": s.entry.last_seen_at // LAST_ACTIVE_STEP * LAST_ACTIVE_STEP,
                "current": s.handle == current,
            }
            for s in listed
        ]

    async def end_one(self, sub: str, public: str, *, actor: str, by: By) -> str | None:
        """End the session of ``sub`` shown as ``public``; its handle, or None when ``sub`` has no such live
        session (someone else's handle included)."""
        found = [s for s in await self._sessions.sessions_of(sub) if s.public == public]
        ended = await self._end(found, sub, actor=actor, by=by, target={"sub": sub, "session": public}, scope="one")
        return ended[0] if ended else None

    async def end_all(self, sub: str, *, actor: str, by: By, keep: str | None = None) -> list[str]:
        """End every session of ``sub`` but the one of handle ``keep``; the handles ended."""
        listed = [s for s in await self._sessions.sessions_of(sub) if s.handle != keep]
        return await self._end(listed, sub, actor=actor, by=by, target={"sub": sub}, scope="others" if keep else "all")

    async def _end(
        self, listed: list[Listed], sub: str, *, actor: str, by: By, target: dict[str, Any], scope: str
    ) -> list[str]:
        """End ``listed``, a few at a time: every record first, so no session is served a moment longer for a
        slow provider, then the tokens of those that ended, even when Redis failed part-way (the rest are
        still listed for a retry). One ``session_ended`` event, whatever happened."""
        ended: list[tuple[str, Session]] = []
        failed = True
        try:
            for start in range(0, len(listed), _AT_ONCE):
                chunk = listed[start : start + _AT_ONCE]
                results = await asyncio.gather(
                    *(self._alone(self._sessions.end_handle(s.handle, reason=by, actor=actor, sub=sub)) for s in chunk),
                    return_exceptions=True,
                )
                ended += [(s.handle, r) for s, r in zip(chunk, results, strict=True) if isinstance(r, Session)]
                error = next((r for r in results if isinstance(r, BaseException)), None)
                if error is not None:
                    raise error
            failed = False
        finally:
            for start in range(0, len(ended), _AT_ONCE):
                await asyncio.gather(
                    *(
                        self._alone(self._login.revoke(s.refresh_token, s.access_token))
                        for _, s in ended[start : start + _AT_ONCE]
                    ),
                    return_exceptions=True,  # best effort, as at logout (the provider is told; records are gone)
                )
            audit.record(
                "session_ended",
                outcome="failure" if failed or (not ended and scope == "one") else "success",
                actor=actor,
                target=target,
                scope=scope,
                ended=len(ended),
            )
        return [handle for handle, _ in ended]

    async def _alone(self, work: Awaitable[T]) -> T:
        """``work`` with a Redis budget of its own (``BFF_REDIS_TIMEOUT``). Run by ``gather``, each task has its
        own copy of the context: concurrent calls must not each take their time off the request's one budget,
        which would run dry several times faster than the clock (a thousand sessions ended in 2 s is fine)."""
        redis_budget.set(RedisBudget(self._redis_timeout))
        return await work
