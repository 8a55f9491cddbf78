"""Server-side sessions: the record, the storage seam and its two stores, encryption, the cookie codec."""

from bff.sessions.manager import SessionManager
from bff.sessions.model import LoginState, Session

__all__ = ["LoginState", "Session", "SessionManager"]
