"""Play a misbehaving provider through the BFF's transport seam: re-sign ID tokens with a test key.

The test key is added to the JWKS the BFF downloads (unless the test wants an unknown key), so the only
thing wrong with the token is the claim the test changed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx2
from joserfc import jwt
from joserfc.jwk import RSAKey

TEST_KID = "test-tamper-key"
_KEY = RSAKey.generate_key(2048, parameters={"kid": TEST_KID, "alg": "RS256", "use": "sig"})


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _replace_json(response: httpx2.Response, body: dict[str, Any]) -> httpx2.Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")}
    return httpx2.Response(response.status_code, headers=headers, json=body, request=response.request)


def publish_test_key(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
    if not request.url.path.endswith("/jwks"):
        return response
    body = response.json()
    body["keys"].append(_KEY.as_dict(private=False))
    return _replace_json(response, body)


def resign_id_token(
    change: Callable[[dict[str, Any]], None], *, kid: str = TEST_KID
) -> Callable[[httpx2.Request, httpx2.Response], httpx2.Response]:
    """A rewriter that applies ``change`` to the ID token's claims and signs it again."""

    def rewrite(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        if not request.url.path.endswith("/token") or response.status_code != 200:
            return response
        body = response.json()
        claims = _claims(body["id_token"])
        change(claims)
        body["id_token"] = jwt.encode({"alg": "RS256", "kid": kid}, claims, _KEY)
        return _replace_json(response, body)

    return rewrite


def sign(claims: dict[str, Any], *, kid: str = TEST_KID, typ: str | None = "logout+jwt") -> str:
    """A JWT signed with the test key (published to the BFF by :func:`publish_test_key`)."""
    header: dict[str, Any] = {"alg": "RS256", "kid": kid}
    if typ:
        header["typ"] = typ
    return jwt.encode(header, claims, _KEY)


def id_token_claims(token: str) -> dict[str, Any]:
    return _claims(token)
