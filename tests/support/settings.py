"""Settings built in code for tests that run the app in-process with no provider or Redis behind it."""

from __future__ import annotations

from typing import Any

from bff.config import Settings


def minimal_settings(**overrides: Any) -> Settings:
    """Valid settings pointing at nothing (an unreachable issuer, the memory store), plus ``overrides``."""
    values: dict[str, Any] = {
        "client_id": "c",
        "client_secret": "s",
        "issuer": "http://127.0.0.1:9/oidc",
        "public_url": "https://app.example.com",
        "redis_url": "memory://",
        "session_secrets": ["a" * 32],
        "encryption_keys": ["b" * 32],
        "idp_timeout": 0.2,
    }
    values.update(overrides)
    return Settings.model_validate(values)
