"""The session cookie's value: an itsdangerous-signed random id, and nothing else.

The browser holds an opaque reference, never a token (RFC 10017, the BFF pattern).

``BFF_SESSION_SECRETS`` lists keys newest first: the newest signs, every listed key verifies, so a key can
be rotated in without logging anyone out and rotated out to end the sessions it signed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from itsdangerous import BadData, Signer
from itsdangerous.encoding import base64_decode

# Signed values longer than this are refused before any HMAC is computed.
_MAX_SIGNED_LENGTH = 256


def new_session_id() -> str:
    """256 random bits, URL-safe: a session id nobody can guess (128 bits is the usual floor)."""
    return secrets.token_urlsafe(32)


class SignedValueCodec:
    """Signs and verifies opaque ids under a rotating list of secrets; ``salt`` separates purposes."""

    def __init__(self, secrets_newest_first: Sequence[str], *, salt: str) -> None:
        if not secrets_newest_first:
            raise ValueError("at least one signing secret is required")
        # itsdangerous wants the newest key last.
        self._signer = Signer(
            list(reversed(secrets_newest_first)),
            salt=salt,
            digest_method=hashlib.sha256,
            key_derivation="hmac",
        )
        # Each verification would derive every key again (one more HMAC per key and request): derived once here,
        # newest first, and checked with the signer's own algorithm.
        self._keys = [self._signer.derive_key(k) for k in reversed(self._signer.secret_keys)]
        self._sep = self._signer.sep.decode()

    def __repr__(self) -> str:
        return "SignedValueCodec(...)"

    def sign(self, value: str) -> str:
        return self._signer.sign(value).decode()

    def unsign(self, signed: str | None) -> str | None:
        """The id, or None when missing, oversized, tampered with, or signed by a removed key."""
        if not signed or len(signed) > _MAX_SIGNED_LENGTH:
            return None
        value, sep, signature = signed.rpartition(self._sep)
        if not sep:
            return None
        try:
            raw_signature = base64_decode(signature)
            raw_value = value.encode()
        except (BadData, UnicodeEncodeError):
            return None
        verify = self._signer.algorithm.verify_signature
        return value if any(verify(key, raw_value, raw_signature) for key in self._keys) else None
