"""The emulated provider's RS256 signing keys: generation, rotation, the published JWKS, signing.

Keys are generated in memory at start-up, as node `oidc-provider` does without a configured JWKS. A
rotation adds a key that signs from then on; retired keys stay published unless dropped, so tests can
produce both "JWKS changed but the old kid is still there" and "signed by a key no longer published".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey


@dataclass
class _Key:
    key: RSAKey
    published: bool = True


class KeyStore:
    def __init__(self) -> None:
        self._keys: list[_Key] = []
        self.rotate()

    @staticmethod
    def _generate() -> RSAKey:
        kid = "emu-" + secrets.token_hex(6)
        return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})

    @property
    def current_kid(self) -> str:
        kid = self._keys[-1].key.kid
        assert kid is not None
        return kid

    def rotate(self, *, drop_old: bool = False) -> str:
        """Start signing with a fresh key; `drop_old` stops publishing every earlier key."""
        if drop_old:
            for entry in self._keys:
                entry.published = False
        self._keys.append(_Key(self._generate()))
        return self.current_kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [entry.key.as_dict(private=False) for entry in self._keys if entry.published]}

    def published_kids(self) -> list[str]:
        return [str(entry.key.kid) for entry in self._keys if entry.published]

    def sign(self, claims: dict[str, Any], *, typ: str = "JWT") -> str:
        key = self._keys[-1].key
        return jwt.encode({"alg": "RS256", "typ": typ, "kid": key.kid}, claims, key)

    def verify(self, token: str) -> dict[str, Any] | None:
        """Claims of a JWT this provider signed (with any key it ever held), or None; expiry not checked.

        Used for `id_token_hint`, which OpenID Connect RP-Initiated Logout accepts even when expired.
        """
        try:
            return dict(jwt.decode(token, KeySet([entry.key for entry in self._keys]), algorithms=["RS256"]).claims)
        except (JoseError, ValueError):
            return None
