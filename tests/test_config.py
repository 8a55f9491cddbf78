from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bff import cli
from bff.config import ConfigError, Settings, load_settings
from tests.support.processes import child_env

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


def _check_config_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``bff check-config`` as a process, with only ``env`` (and PATH) in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "bff", "check-config"],
        capture_output=True,
        text=True,
        env=child_env({"PATH": "/usr/bin", **env}),
        check=False,
    )


CheckConfig = Callable[[dict[str, str]], subprocess.CompletedProcess[str]]


@pytest.fixture
def check_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CheckConfig:
    """``bff check-config`` in this process (the same ``main`` the command runs; one test below runs the
    real process), with only ``env`` among the ``BFF_*`` variables."""

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        for name in [n for n in os.environ if n.startswith("BFF_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = cli.main(["check-config"])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["bff", "check-config"], code, out.out, out.err)

    return run


def test_check_config_command_prints_every_problem_and_exits_1() -> None:
    result = _check_config_process({})
    assert result.returncode == 1
    for name in ("BFF_CLIENT_ID", "BFF_CLIENT_SECRET", "BFF_PUBLIC_URL", "BFF_REDIS_URL"):
        assert name in result.stderr


def test_check_config_ok_hides_secrets(check_config: CheckConfig) -> None:
    result = check_config(GOOD)
    assert result.returncode == 0, result.stderr
    assert "settings OK" in result.stdout
    assert "s3cr3t" not in result.stdout and "redispw" not in result.stdout


@pytest.mark.parametrize(
    "url", ["redis+sentinel://:pw-secret-1@127.0.0.1:26379", "redis+cluster://:pw-secret-1@127.0.0.1:7000/3"]
)
def test_check_config_validates_redis_topology_urls_without_showing_them(url: str, check_config: CheckConfig) -> None:
    result = check_config({**GOOD, "BFF_REDIS_URL": url})
    assert result.returncode == 1
    assert "BFF_REDIS_URL" in result.stderr
    assert "pw-secret-1" not in result.stderr + result.stdout


@pytest.mark.parametrize(("name", "value"), [("BFF_SESSION_SECRETS", ","), ("BFF_ENCRYPTION_KEYS", " , ,")])
def test_a_key_list_without_a_key_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(dict(GOOD, **{name: value}))
    [problem] = info.value.problems
    assert problem.startswith(f"{name}: ") and "at least one" in problem


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example/",
        "/relative",
        "http://evil.example/",
        "https://app.example.com/#fragment",
        "https://user:pw@app.example.com/",
        "https://app.example.com/\nSet-Cookie: x=1",
    ],
)
def test_post_logout_redirect_must_be_an_absolute_https_url(uri: str) -> None:
    with pytest.raises(ConfigError, match="BFF_POST_LOGOUT_REDIRECT_URI"):
        load_settings(dict(GOOD, BFF_POST_LOGOUT_REDIRECT_URI=uri))


def test_post_logout_redirect_accepts_https_and_loopback_http() -> None:
    for uri in ("https://app.example.com/bye?from=bff", "http://127.0.0.1:8000/", "http://localhost:3000/"):
        assert load_settings(dict(GOOD, BFF_POST_LOGOUT_REDIRECT_URI=uri)).effective_post_logout_redirect_uri == uri


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/7", "::ffff:0:0/96", "::/64", "2000::/3"]
)
def test_absurdly_broad_trusted_proxies_are_refused(cidr: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(dict(GOOD, BFF_TRUSTED_PROXIES=f"10.42.0.0/16,{cidr}"))
    [problem] = info.value.problems
    assert problem.startswith("BFF_TRUSTED_PROXIES: ") and "too broad" in problem


def test_trusted_proxies_as_wide_as_a_pod_network_are_accepted() -> None:
    proxies = "10.0.0.0/8,10.42.0.0/16,192.0.2.7,fd00:1234::/32,::ffff:10.0.0.0/104,2001:db8::1"
    assert len(load_settings(dict(GOOD, BFF_TRUSTED_PROXIES=proxies)).trusted_proxies) == 6


def test_plain_http_allowed_origins_only_for_loopback_or_in_dev() -> None:
    with pytest.raises(ConfigError, match="BFF_ALLOWED_ORIGINS"):
        load_settings(dict(GOOD, BFF_ALLOWED_ORIGINS="https://app.example.com,http://evil.example"))
    local = load_settings(dict(GOOD, BFF_ALLOWED_ORIGINS="https://app.example.com,http://127.0.0.1:3000"))
    assert local.effective_allowed_origins == {"https://app.example.com", "http://127.0.0.1:3000"}
    dev = load_settings(
        {"BFF_CLIENT_ID": "c", "BFF_CLIENT_SECRET": "x", "BFF_ALLOWED_ORIGINS": "http://box.lan"}, dev=True
    )
    assert dev.effective_allowed_origins == {"http://box.lan"}


def test_unknown_bff_variables_are_named_with_the_closest_known_one() -> None:
    from bff.config import unknown_variables

    env = {
        **GOOD,
        "BFF_REDIS_UR": "redis://typo:6379",
        "BFF_CLIENT_SECRET_FILE": "/run/secrets/x",  # known: a secret's _FILE form
        "BFF_ISSUER_FILE": "/run/x",  # not a secret: no _FILE form
        "BFF_EMULATOR_CLIENT_SECRET": "emu",  # the emulator's
        "BFF_TEST_REDIS_URL": "redis://127.0.0.1:1",  # the test command's
        "BFF_MAX_HEADER_BYTES": "16384",
        "OTHER_REDIS_UR": "not ours",
    }
    assert unknown_variables(env) == [
        "BFF_ISSUER_FILE (did you mean BFF_ISSUER?)",
        "BFF_REDIS_UR (did you mean BFF_REDIS_URL?)",
    ]


def test_check_config_warns_about_unknown_names_without_values(check_config: CheckConfig) -> None:
    result = check_config({**GOOD, "BFF_REDIS_UR": "redis://:typo-secret@h:6379"})
    assert result.returncode == 0, result.stderr  # a warning, not a failure
    assert "warning: BFF_REDIS_UR (did you mean BFF_REDIS_URL?) is not a bff setting" in result.stderr
    assert "typo-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Sx7Q#Wv3K@redis:6379/0",
        "redis://:Sx7Q/Wv3K@redis:6379/0",
        "redis://:Sx7Q?Wv3K@redis:6379/0",
        "redis://Sx7Q:1234?Wv3K=1@redis:6379",
        "redis://Sx7Q:1234/Wv3K@redis:6379/0",
        "rediss+cluster://:Sx7Q/Wv3K@10.0.0.1:7000,[::1]:7001",
        "redis+sentinel://:Sx7Q#Wv3K@s1:26379,s2/mymaster",
        "redis+sentinel://Sx7Q:1/Wv3K@s1:26379/0",
        "redis+sentinel://:Sx7Q?Wv3K@s1:26379/mymaster",
        "Sx7QWv3K@redis:6379",
    ],
)
def test_check_config_never_echoes_any_part_of_a_password(url: str, check_config: CheckConfig) -> None:
    result = check_config({**GOOD, "BFF_REDIS_URL": url})
    assert result.returncode == 1
    assert "BFF_REDIS_URL" in result.stderr
    for part in ("Sx7Q", "Wv3K"):
        assert part not in result.stderr + result.stdout


def test_check_config_accepts_a_percent_encoded_password_with_reserved_characters(check_config: CheckConfig) -> None:
    url = "rediss+cluster://:Sx7Q%23%2F%3F%40Wv3K@10.0.0.1:7000,[::1]:7001"
    result = check_config({**GOOD, "BFF_REDIS_URL": url})
    assert result.returncode == 0, result.stderr
    assert "Sx7Q" not in result.stderr + result.stdout


# --- native apps' redirect URIs (BFF_MOBILE_REDIRECT_URIS) ------------------------------------------------------------


def _load(uris: str) -> Settings:
    return load_settings({"BFF_CLIENT_ID": "c", "BFF_CLIENT_SECRET": "s", "BFF_MOBILE_REDIRECT_URIS": uris}, dev=True)


def test_settings_accept_app_links_and_reverse_dns_schemes() -> None:
    settings = _load(" com.example.app:/oauth2redirect , https://app.example.com/cb?x=1,com.example.app://cb ")
    assert settings.mobile_redirect_uris == (
        "com.example.app:/oauth2redirect",
        "https://app.example.com/cb?x=1",
        "com.example.app://cb",
    )
    assert _load("").mobile_redirect_uris == ()


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.com/cb",  # not https
        "myapp:/cb",  # not reverse-DNS
        "javascript:alert(1)",
        "com.example.app:/cb#frag",
        "https:///cb",
        "https://user:pw@app.example.com/cb",
        "/relative/cb",
        "com.example.app",
        "Com.Example.App:/cb",
    ],
)
def test_settings_refuse_other_redirect_uris(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(uri)
    assert any(p.startswith("BFF_MOBILE_REDIRECT_URIS:") for p in info.value.problems)
