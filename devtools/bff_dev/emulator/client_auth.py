"""OAuth client authentication and RFC 6749 §5.2 error responses for the provider's back-channel endpoints.

Shared by the token, revocation and introspection endpoints. Supports `client_secret_post` and
`client_secret_basic`; a client may use only the methods it is registered for.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse

from bff_dev.emulator.config import EmulatorClient
from bff_dev.emulator.state import EmulatorState

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            # RFC 6749 §5.2: a 401 invalid_client carries a challenge for the scheme the client may use.
            headers["WWW-Authenticate"] = 'Basic realm="kryptos-emulator"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", f"client authentication failed ({description})", 401)


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("unsupported Authorization scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _invalid_client("malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _invalid_client("malformed Basic credentials")
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before being joined and base64-encoded.
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_client(state: EmulatorState, request: Request, form: Mapping[str, str]) -> EmulatorClient:
    header = request.headers.get("authorization")
    body_secret = form.get("client_secret")
    if header and body_secret is not None:
        raise OAuthError("invalid_request", "client authentication must only be provided using one mechanism")
    if header:
        method = "client_secret_basic"
        client_id, secret = _basic_credentials(header)
        if form.get("client_id") not in (None, client_id):
            raise OAuthError("invalid_request", "mismatch between client_id in the body and in Basic auth")
    elif body_secret is not None:
        method = "client_secret_post"
        client_id, secret = form.get("client_id", ""), body_secret
    else:
        raise _invalid_client("no client authentication mechanism provided")
    client = state.clients.get(client_id)
    if client is None:
        raise _invalid_client("client not found")
    if method not in client.token_endpoint_auth_methods:
        raise _invalid_client(f"{method} is not allowed for this client")
    if not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        raise _invalid_client("invalid secret provided")
    return client


def form_dict(form: Mapping[str, object]) -> dict[str, str]:
    return {key: value for key, value in form.items() if isinstance(value, str)}
