"""The Kryptos Connect widget flow, server side: link tokens, the public-token exchange, status, disconnect,
revocation, and the idle sweep. The records themselves are :mod:`bff.sessions.connect`.

Every call to the Connect API carries the client credentials, which never leave bff; the ``cat_`` token
goes only to Kryptos (link tokens for a returning user, check-session, data calls). Three rules keep a
Guest's only handle (the grant id) from being lost:

* **revoke first, then forget**: disconnect, an administrator's revocation and the idle sweep forget a grant
  only after Kryptos confirmed the revocation; if Kryptos cannot be reached the grant is kept and the
  caller may retry;
* **forget only on Kryptos's word**: a data call answered 401 is checked with ``check-session`` before the
  grant is dropped, so a wrong client secret (which also answers 401) never wipes every Guest's grant;
* an exchange whose grant cannot be stored (Redis failed after Kryptos minted the token) revokes the new
  grant at once rather than leave it orphaned for 15 years.

Which grant a request may use: its session's; else the browser's grant cookie; else, for a signed-in user,
a grant bound to their subject. A grant becomes bound to the OpenID subject of the first signed-in session
that uses it, and from then on serves only that subject.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from bff import metrics
from bff.config import Settings
from bff.errors import BadGateway, BadRequest, BffError, Forbidden, NotFound, connect_revoked, session_expired
from bff.services.grant_facts import GrantFacts, data_of
from bff.services.upstream import Upstream
from bff.sessions import Session, SessionManager
from bff.sessions.connect import ConnectGrant, ConnectGrants
from bff.sessions.cookie import new_session_id
from bff.sessions.store import CONNECT_SWEEP_LOCK_KEY, KeyValueStore

log = logging.getLogger("bff.connect")

_PUBLIC_TOKEN = re.compile(r"^[A-Za-z0-9_.~-]{1,512}$")
_EXCHANGE_REFUSALS = {
    "TOKEN_ALREADY_USED": ("public_token_used", "This public token was already exchanged; connect again."),
    "TOKEN_EXPIRED": ("public_token_expired", "This public token has expired; connect again."),
    "INVALID_TOKEN": ("invalid_public_token", "This public token is not valid; connect again."),
}
_ALREADY_GONE = frozenset({"GRANT_NOT_FOUND", "INVALID_GRANT"})
SWEEP_BATCH = 100  # grants revoked per sweep round
_STATUS_CACHE_MAX = 10_000

NOT_CONNECTED: dict[str, Any] = {"connected": False, "workspace_id": None, "workspace_name": None, "scopes": []}


def check_public_token(value: object) -> str:
    if not isinstance(value, str) or not _PUBLIC_TOKEN.fullmatch(value):
        raise BadRequest("public_token must be the token the widget returned.", code="invalid_public_token")
    return value


class ConnectService:
    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        grants: ConnectGrants,
        sessions: SessionManager,
        store: KeyValueStore,
        client_headers: dict[str, str],
        facts: GrantFacts | None = None,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self.grants = grants
        self._sessions = sessions
        self._store = store  # the sweep lock
        self._facts = facts or GrantFacts(store)  # forgotten with a revoked grant
        self._headers = {**client_headers, "Content-Type": "application/json", "Accept": "application/json"}
        self._status_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._last_use_noted: dict[str, float] = {}
        # How often a grant's last use is written down (the idle sweep needs days of precision, not seconds).
        self._note_use_every = min(3600.0, settings.connect_idle_timeout / 100)

    def __repr__(self) -> str:
        return "ConnectService(...)"

    # -- the Connect API ----------------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to the Connect API; its status and JSON object (502 ``connect_failed`` when not JSON)."""
        url = self._upstream.bases["connect"] + path
        raw_body = json.dumps(body, separators=(",", ":")).encode()
        answer = await self._upstream.send("connect", "POST", url, self._headers, raw_body)
        status = answer.status
        raw = await Upstream.read(answer)
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            log.warning("connect API answered without a JSON object", extra={"path": path, "upstream_status": status})
            raise BadGateway("Kryptos answered something unexpected.", code="connect_failed")
        return status, doc

    @staticmethod
    def _failed(path: str, status: int, doc: dict[str, Any]) -> BadGateway:
        # The Connect API's own code is safe to log (INVALID_CLIENT, ...); its message is not echoed to anyone.
        log.warning(
            "connect API refused", extra={"path": path, "upstream_status": status, "reason": str(doc.get("code"))}
        )
        return BadGateway("Kryptos refused the request.", code="connect_failed")

    async def link_token(self, grant: ConnectGrant | None) -> tuple[str, bool]:
        """A link token for the widget, and whether Kryptos recognised the stored grant (``isAuthorized``)."""
        body: dict[str, Any] = {"scopes": " ".join(self._settings.connect_scopes)}
        if grant is not None:
            body["access_token"] = grant.access_token
        status, doc = await self._call("/link-token", body)
        data = data_of(doc)
        link_token = data.get("link_token")
        if status != 200 or doc.get("success") is not True or not isinstance(link_token, str) or not link_token:
            raise self._failed("/link-token", status, doc)
        # Only present when the stored token was accepted; an expired one silently yields a plain link token.
        return link_token, grant is not None and data.get("has_existing_grant") is True

    async def exchange(self, public_token: str, *, sub: str | None) -> tuple[str, ConnectGrant]:
        """Exchange the widget's public token and store the grant; returns ``(reference, grant)``."""
        status, doc = await self._call("/token/exchange", {"public_token": public_token})
        if doc.get("success") is not True:
            refusal = _EXCHANGE_REFUSALS.get(str(doc.get("code")))
            if refusal is not None and status < 500:
                raise BadRequest(refusal[1], code=refusal[0])
            raise self._failed("/token/exchange", status, doc)
        data = data_of(doc)
        fields = (data.get("access_token"), data.get("grant_id"), data.get("workspace_id"), data.get("scope"))
        expires_in = data.get("expires_in")
        if not all(isinstance(f, str) and f for f in fields) or not isinstance(expires_in, int | float):
            raise self._failed("/token/exchange", status, {"code": "MALFORMED"})
        access_token, grant_id, workspace_id, scope = (str(f) for f in fields)
        now = self.grants.clock()
        grant = ConnectGrant(access_token, grant_id, workspace_id, scope, now, now + float(expires_in), sub or None)
        try:
            reference = await self.grants.create(grant)
        except BffError:
            # Kryptos minted a 15-year token we cannot keep: revoke it now rather than orphan it.
            log.error("connect grant could not be stored; revoking it", extra={"grant_id": grant_id})
            try:
                await self._revoke_upstream(grant_id)
            except BffError:
                log.error("orphaned connect grant could not be revoked", extra={"grant_id": grant_id})
            raise
        metrics.connect_grants.labels(event="stored").inc()
        log.info("connect grant stored", extra={"grant_id": grant_id, "workspace_id": workspace_id})
        return reference, grant

    async def status(self, handle: str, grant: ConnectGrant) -> dict[str, Any]:
        """What ``/connect/status`` answers; Kryptos is asked at most once per ``BFF_CONNECT_STATUS_CACHE_SECONDS``."""
        now = self.grants.clock()
        cached = self._status_cache.get(handle)
        if cached is not None and cached[0] > now:
            return cached[1]
        status, doc = await self._call("/link-token/check-session", {"access_token": grant.access_token})
        data = data_of(doc)
        if status != 200 or doc.get("success") is not True:
            raise self._failed("/link-token/check-session", status, doc)
        if data.get("has_valid_session") is not True:
            await self._gone(handle, grant, reason=str(data.get("reason") or "invalid"))
            return NOT_CONNECTED
        await self._note_use(handle, grant)
        scopes = data.get("granted_scopes") if isinstance(data.get("granted_scopes"), str) else grant.scope
        workspace_id, workspace_name = data.get("workspace_id"), data.get("workspace_name")
        answer = {
            "connected": True,
            "workspace_id": workspace_id if isinstance(workspace_id, str) and workspace_id else grant.workspace_id,
            "workspace_name": workspace_name if isinstance(workspace_name, str) else None,
            "scopes": str(scopes).split(),
        }
        if len(self._status_cache) >= _STATUS_CACHE_MAX:
            self._status_cache.clear()
        self._status_cache[handle] = (now + self._settings.connect_status_cache_seconds, answer)
        return answer

    async def _revoke_upstream(self, grant_id: str) -> bool:
        """Revoke at Kryptos; True when revoked, False when Kryptos no longer knows the grant."""
        status, doc = await self._call("/token/revoke", {"grant_id": grant_id})
        if status == 200 and doc.get("success") is True:
            return True
        if str(doc.get("code")) in _ALREADY_GONE:
            return False
        if str(doc.get("code")) == "ACCESS_DENIED":
            raise Forbidden("That grant belongs to another client.", code="forbidden")
        raise self._failed("/token/revoke", status, doc)

    async def disconnect(self, handle: str, grant: ConnectGrant) -> None:
        """The user ends the grant: revoked at Kryptos, then forgotten here (and so by every replica)."""
        try:
            await self._revoke_upstream(grant.grant_id)
        except Forbidden:
            # Kryptos says it belongs to another client (BFF_CLIENT_ID changed since): it can serve this
            # client no more, and only its own client can revoke it. Keeping it would only trap the user.
            log.warning("connect grant of another client forgotten", extra={"grant_id": grant.grant_id})
        await self._forget(handle, grant.grant_id, grant.sub)
        metrics.connect_grants.labels(event="revoked").inc()
        log.info("connect grant revoked", extra={"grant_id": grant.grant_id, "reason": "user"})

    async def revoke(self, grant_id: str) -> None:
        """An administrator ends a grant by id, whether or not this bff holds it."""
        handle = await self.grants.handle_for_grant(grant_id)
        revoked = await self._revoke_upstream(grant_id)
        grant = await self.grants.load(handle) if handle is not None else None
        if handle is not None:
            await self._forget(handle, grant_id, grant.sub if grant is not None else None)
        await self._facts.forget(grant_id)
        if not revoked and handle is None:
            raise NotFound("Kryptos knows no such grant.")
        metrics.connect_grants.labels(event="revoked").inc()
        log.info("connect grant revoked", extra={"grant_id": grant_id, "reason": "admin"})

    async def _gone(self, handle: str, grant: ConnectGrant, *, reason: str) -> None:
        await self._forget(handle, grant.grant_id, grant.sub)
        metrics.connect_grants.labels(event="gone").inc()
        log.info("connect grant gone at Kryptos; forgotten", extra={"grant_id": grant.grant_id, "reason": reason})

    async def _forget(self, handle: str, grant_id: str, sub: str | None) -> None:
        await self.grants.forget(handle, grant_id, sub)
        self._status_cache.pop(handle, None)
        self._last_use_noted.pop(handle, None)

    async def sweep_idle(self) -> int:
        """Revoke (then forget) grants unused for ``BFF_CONNECT_IDLE_TIMEOUT``; one replica at a time.

        A grant Kryptos cannot revoke right now stays for the next round. Returns how many were ended."""
        owner = secrets.token_urlsafe(12).encode()
        if not await self._store.set_if_absent(CONNECT_SWEEP_LOCK_KEY, owner, ttl=300):
            return 0
        ended = 0
        try:
            cutoff = self.grants.clock() - self._settings.connect_idle_timeout
            for handle, grant_id in await self.grants.idle_since(cutoff, limit=SWEEP_BATCH):
                try:
                    await self._revoke_upstream(grant_id)
                except Forbidden:
                    pass  # another client's (BFF_CLIENT_ID changed): it serves us no more; forgotten below
                except BffError as exc:
                    log.warning("idle connect grant not revoked yet", extra={"grant_id": grant_id, "reason": exc.code})
                    continue
                grant = await self.grants.load(handle)  # None when unreadable: the grant id was enough
                await self._forget(handle, grant_id, grant.sub if grant is not None else None)
                metrics.connect_grants.labels(event="swept").inc()
                log.info("connect grant revoked", extra={"grant_id": grant_id, "reason": "idle"})
                ended += 1
        finally:
            await self._store.delete_if_equal(CONNECT_SWEEP_LOCK_KEY, owner)
        return ended

    # -- grants and sessions --------------------------------------------------------------------------------

    async def find(self, session: Session | None, reference: str | None) -> tuple[str, ConnectGrant] | None:
        """The grant a request may use (see the module docstring), or None."""
        candidates: list[str] = []
        if session is not None and session.connect:
            candidates.append(session.connect)
        if reference:
            candidates.append(self.grants.handle(reference))
        sub = session.sub if session is not None else ""
        if sub:
            candidates.extend(await self.grants.handles_for_subject(sub))
        for handle in dict.fromkeys(candidates):
            grant = await self.grants.load(handle)
            if grant is not None and grant.usable_by(sub):
                return handle, grant
        return None

    async def attach(
        self, session_id: str | None, session: Session | None, handle: str, grant: ConnectGrant
    ) -> tuple[str, bool]:
        """Make ``session`` use the grant (binding the grant to its subject); without a session, start a
        Connect-only one. Returns ``(session id, created)``."""
        if session_id is None or session is None:
            session_id = new_session_id()
            fresh = Session.connected_only(handle, now=self._sessions.clock(), lifetimes=self._sessions.lifetimes)
            if await self._sessions.save(session_id, fresh) is None:  # pragma: no cover - a fresh 256-bit id
                raise RuntimeError("a fresh session id collided")
            return session_id, True
        if session.sub and grant.sub is None and await self.grants.bind(handle, grant, session.sub) is None:
            log.info("connect grant changed while binding; left unbound", extra={"grant_id": grant.grant_id})
        if session.connect == handle:
            return session_id, False
        if await self._sessions.save(session_id, session.with_changes(connect=handle)) is None:
            raise session_expired()  # it ended (or changed) meanwhile: the caller starts over
        return session_id, False

    async def adopt(self, session_id: str, previous_session_id: str | None) -> None:
        """A sign-in just finished: its session uses the grant of the browser's previous session, or one
        bound to the subject.

        Best effort: the sign-in stands if this fails (the next ``/connect/status`` tries again)."""
        try:
            session = await self._sessions.load(session_id, cached=False)
            previous = await self._sessions.load(previous_session_id) if previous_session_id else None
            if session is not None and previous is not None and previous.connect:
                session = session.with_changes(connect=previous.connect)  # a candidate; find() checks it
            found = await self.find(session, None) if session is not None else None
            if session is not None and found is not None:
                await self.attach(session_id, session.with_changes(connect=None), *found)
        except BffError as exc:
            log.warning("connect grant not attached at sign-in", extra={"reason": exc.code})

    async def credential(self, session_id: str, session: Session) -> tuple[str, ConnectGrant]:
        """The session's grant for a data call, or 401 ``connect_revoked`` (and the session lets go of it)."""
        assert session.connect is not None
        handle = session.connect
        grant = await self.grants.load(handle)
        if grant is None or not grant.usable_by(session.sub):
            await self._detach(session_id, session)
            raise connect_revoked()
        await self._note_use(handle, grant)
        return handle, grant

    async def _note_use(self, handle: str, grant: ConnectGrant) -> None:
        """Move the grant's idle clock (the sweep's), at most once per ``_note_use_every`` per process."""
        now = self.grants.clock()
        if now - self._last_use_noted.get(handle, 0.0) >= self._note_use_every:
            await self.grants.used(handle, grant)
            if len(self._last_use_noted) >= _STATUS_CACHE_MAX:
                self._last_use_noted.clear()
            self._last_use_noted[handle] = now

    async def rejected(self, session_id: str, session: Session, handle: str, grant: ConnectGrant) -> BffError:
        """A data call with the grant's token was answered 401: what to answer, after asking Kryptos whether
        the grant is really gone (a wrong client secret answers 401 too, and must not cost every grant)."""
        self._status_cache.pop(handle, None)
        answer = await self.status(handle, grant)
        if answer["connected"]:
            return BadGateway("Kryptos refused a token it says is valid.", code="connect_failed")
        await self._detach(session_id, session)
        return connect_revoked()

    async def release(self, session_id: str, session: Session, handle: str) -> None:
        """After a disconnect: a signed-in session goes back to its own access token at once. A Connect-only
        session keeps naming the grant, so its next data call says ``connect_revoked`` (and ends it)."""
        if session.signed_in_with_oidc and session.connect == handle:
            await self._sessions.save(session_id, session.with_changes(connect=None))

    async def _detach(self, session_id: str, session: Session) -> None:
        if session.signed_in_with_oidc:
            await self._sessions.save(session_id, session.with_changes(connect=None))
        else:
            # A Connect-only session has nothing left to serve.
            await self._sessions.end(session_id, reason="connect_revoked")
