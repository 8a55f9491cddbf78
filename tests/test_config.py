from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bff.config import ConfigError, load_settings

GOOD = {
    "BFF_CLIENT_ID": "client",
    "BFF_CLIENT_SECRET": "s3cr3t-value-for-tests",
    "BFF_PUBLIC_URL": "https://app.example.com",
    "BFF_REDIS_URL": "redis://:redispw@redis:6379/0",
    "BFF_SESSION_SECRETS": "a" * 32 + "," + "b" * 32,
    "BFF_ENCRYPTION_KEYS": "c" * 40,
}


def test_valid_settings_parse() -> None:
    s = load_settings(GOOD)
    assert s.client_id == "client"
    assert s.redirect_uri == "https://app.example.com/auth/callback"
    assert s.session_cookie_name == "__Host-bff-session"
    assert len(s.session_secrets) == 2
    assert s.effective_allowed_origins == {"https://app.example.com"}
    assert "openid" in s.scopes


def test_secrets_never_in_repr() -> None:
    s = load_settings(GOOD)
    text = repr(s) + str(s)
    for secret in ("s3cr3t-value-for-tests", "a" * 32, "c" * 40, "redispw"):
        assert secret not in text


def test_every_missing_setting_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({})
    text = "\n".join(info.value.problems)
    for name in (
        "BFF_CLIENT_ID",
        "BFF_CLIENT_SECRET",
        "BFF_PUBLIC_URL",
        "BFF_REDIS_URL",
        "BFF_SESSION_SECRETS",
        "BFF_ENCRYPTION_KEYS",
    ):
        assert name in text


def test_invalid_values_are_all_reported_without_their_values() -> None:
    env = dict(
        GOOD,
        BFF_PUBLIC_URL="http://app.example.com/path",
        BFF_SESSION_SECRETS="short-secret",
        BFF_TRUSTED_PROXIES="10.0.0.0/8,not-an-ip",
        BFF_TOKEN_AUTH_METHOD="private_key_jwt",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = "\n".join(info.value.problems)
    assert "BFF_PUBLIC_URL" in text and "BFF_SESSION_SECRETS" in text and "BFF_TRUSTED_PROXIES" in text
    assert "BFF_TOKEN_AUTH_METHOD" in text
    assert "short-secret" not in text


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-a-file-secret\n")
    env = {k: v for k, v in GOOD.items() if k != "BFF_CLIENT_SECRET"}
    env["BFF_CLIENT_SECRET_FILE"] = str(tmp_path / "secret")
    assert load_settings(env).client_secret.get_secret_value() == "from-a-file-secret"
    env["BFF_CLIENT_SECRET_FILE"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="BFF_CLIENT_SECRET_FILE"):
        load_settings(env)


def test_dev_defaults_need_no_secrets() -> None:
    s = load_settings({"BFF_CLIENT_ID": "c", "BFF_CLIENT_SECRET": "x"}, dev=True)
    assert s.public_url == "http://localhost:8000"
    assert s.session_cookie_name == "bff-session"  # plain-http dev: no __Host- prefix
    assert s.uses_memory_store


def test_plain_http_refused_outside_dev_except_loopback() -> None:
    with pytest.raises(ConfigError, match="BFF_ISSUER"):
        load_settings(dict(GOOD, BFF_ISSUER="http://idp.example.com/oidc"))
    assert load_settings(dict(GOOD, BFF_ISSUER="http://127.0.0.1:9000/oidc")).issuer.startswith("http://127")


def test_check_config_command_prints_every_problem_and_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bff", "check-config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin"},
        check=False,
    )
    assert result.returncode == 1
    for name in ("BFF_CLIENT_ID", "BFF_CLIENT_SECRET", "BFF_PUBLIC_URL", "BFF_REDIS_URL"):
        assert name in result.stderr


def test_check_config_ok_hides_secrets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bff", "check-config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin", **GOOD},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "settings OK" in result.stdout
    assert "s3cr3t" not in result.stdout and "redispw" not in result.stdout


@pytest.mark.parametrize(
    "url", ["redis+sentinel://:pw-secret-1@127.0.0.1:26379", "redis+cluster://:pw-secret-1@127.0.0.1:7000/3"]
)
def test_check_config_validates_redis_topology_urls_without_showing_them(url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bff", "check-config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin", **GOOD, "BFF_REDIS_URL": url},
        check=False,
    )
    assert result.returncode == 1
    assert "BFF_REDIS_URL" in result.stderr
    assert "pw-secret-1" not in result.stderr + result.stdout
