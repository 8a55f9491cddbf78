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
from typing import Any, Literal

from bff import audit
from bff.services.login import LoginService
from bff.sessions import Session, SessionManager
from bff.sessions.device import device_label
from bff.sessions.manager import Listed

LAST_ACTIVE_STEP = 300  # seconds: "last active" is shown to the 5 minutes, not to the second
_AT_ONCE = 8  # sessions ended (then revocations sent) concurrently per action


class Devices:
    def __init__(self, sessions: SessionManager, login: LoginService) -> None:
        self._sessions = sessions
        self._login = login

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

    async def end_one(self, sub: str, public: str, *, actor: str, by: Literal["user", "admin"]) -> str | None:
        """End the session of ``sub`` shown as ``public``; its handle, or None when ``sub`` has no such live
        session (someone else's handle included)."""
        found = next((s for s in await self._sessions.sessions_of(sub) if s.public == public), None)
        ended = await self._end([found] if found else [], sub, actor=actor, by=by)
        audit.record(
            "session_ended",
            outcome="success" if found else "failure",
            actor=actor,
            target={"sub": sub, "session": public},
            scope="one",
            ended=len(ended),
        )
        return found.handle if found else None

    async def end_all(
        self, sub: str, *, actor: str, by: Literal["user", "admin"], keep: str | None = None
    ) -> list[str]:
        """End every session of ``sub`` but the one of handle ``keep``; the handles ended."""
        listed = [s for s in await self._sessions.sessions_of(sub) if s.handle != keep]
        ended = await self._end(listed, sub, actor=actor, by=by)
        audit.record(
            "session_ended",
            actor=actor,
            target={"sub": sub},
            scope="others" if keep else "all",
            ended=len(ended),
        )
        return ended

    async def _end(self, listed: list[Listed], sub: str, *, actor: str, by: Literal["user", "admin"]) -> list[str]:
        # Every record first, so no session is served a moment longer for a slow provider; then the tokens.
        # A few at a time each: a user with thousands of sessions neither waits for them one by one nor
        # floods Redis or the provider.
        gate = asyncio.Semaphore(_AT_ONCE)

        async def end(s: Listed) -> Session | None:
            async with gate:
                return await self._sessions.end_handle(s.handle, reason=by, actor=actor, sub=sub)

        async def revoke(session: Session) -> None:
            async with gate:
                await self._login.revoke(session.refresh_token, session.access_token)

        sessions = await asyncio.gather(*(end(s) for s in listed))
        ended = [(s.handle, session) for s, session in zip(listed, sessions, strict=True) if session is not None]
        await asyncio.gather(*(revoke(session) for _, session in ended))
        return [handle for handle, _ in ended]
