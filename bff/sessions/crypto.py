"""Encryption of session data at rest: AES-256-GCM under a ring of keys (newest encrypts, all decrypt).

Blob layout: ``version(1) | key id(4) | nonce(12) | ciphertext+tag``. The key id lets decryption pick the
right key at once instead of trying each. Every write encrypts under the newest key, so a session read
under an older key moves to the newest one the next time it is written (a sliding write at the latest);
nothing re-encrypts records on its own. The Redis key name is bound in as associated data, so a blob
copied to another session's key does not decrypt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_HEADER = 1 + 4 + 12


def _derive(secret: str) -> bytes:
    # Operators paste random strings of any shape; HKDF turns each into a uniform 256-bit key.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bff session encryption v1").derive(
        secret.encode()
    )


class Keyring:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one encryption key is required")
        derived = [_derive(s) for s in secrets]
        self._ciphers = {hashlib.sha256(k).digest()[:4]: AESGCM(k) for k in derived}
        self._current_id = hashlib.sha256(derived[0]).digest()[:4]
        self._current = self._ciphers[self._current_id]

    def __repr__(self) -> str:
        return f"Keyring(keys={len(self._ciphers)})"

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + self._current_id + nonce + self._current.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None when no key in the ring can read the blob (removed key, tampering)."""
        if len(blob) <= _HEADER or blob[:1] != _VERSION:
            return None
        cipher = self._ciphers.get(blob[1:5])
        if cipher is None:
            return None
        try:
            return cipher.decrypt(blob[5:17], blob[17:], aad)
        except InvalidTag:
            return None
