"""How the chart reacts to changes in its values: rollouts, refusals, Redis URLs, optional parts, NOTES."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.deploy.deploy_support import CHART, Helm, Rendered, load_yaml

CI = CHART / "ci"
DEFAULT = CI / "default-values.yaml"


def _annotations(rendered: Rendered) -> dict[str, str]:
    annotations: dict[str, str] = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _redis_url(rendered: Rendered) -> str:
    return base64.b64decode(rendered.one("Secret")["data"]["redis-url"]).decode()


def _env(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in rendered.container["env"]}


# --- rollouts -------------------------------------------------------------------------------------------


def test_config_change_rolls_the_pods(helm: Helm) -> None:
    before = _annotations(helm.template("-f", str(DEFAULT)))
    after = _annotations(helm.template("-f", str(DEFAULT), "--set", "config.logLevel=debug"))
    assert after["checksum/config"] != before["checksum/config"]
    assert after["checksum/secret"] == before["checksum/secret"]


def test_secret_change_rolls_the_pods(helm: Helm) -> None:
    before = _annotations(helm.template("-f", str(DEFAULT)))
    after = _annotations(helm.template("-f", str(DEFAULT), "--set", "secrets.clientSecret=SENTINEL-rotated"))
    assert after["checksum/secret"] != before["checksum/secret"]
    assert after["checksum/config"] == before["checksum/config"]


def test_pointing_at_another_existing_secret_rolls_the_pods(helm: Helm) -> None:
    scenario = str(CI / "existing-secret-values.yaml")
    before = _annotations(helm.template("-f", scenario))
    after = _annotations(helm.template("-f", scenario, "--set", "secrets.existingSecret=bff-credentials-v2"))
    assert after["checksum/secret"] != before["checksum/secret"]


# --- refusals -------------------------------------------------------------------------------------------

SENTINEL = CI / "sentinel-values.yaml"
EXISTING = CI / "existing-secret-values.yaml"


@pytest.mark.parametrize(
    ("base", "args", "message"),
    [
        pytest.param(None, (), "config.clientId is required", id="no-values-at-all"),
        pytest.param(DEFAULT, ("--set", "config.clientId="), "config.clientId is required", id="client-id"),
        pytest.param(DEFAULT, ("--set", "config.publicUrl="), "config.publicUrl is required", id="public-url"),
        pytest.param(DEFAULT, ("--set", "config.issuer="), "config.issuer is required", id="issuer"),
        pytest.param(
            DEFAULT, ("--set", "secrets.clientSecret="), "secrets.clientSecret is required", id="client-secret"
        ),
        pytest.param(
            DEFAULT,
            ("--set-json", "secrets.sessionSecrets=[]"),
            "secrets.sessionSecrets is required",
            id="session-secrets",
        ),
        pytest.param(
            DEFAULT,
            ("--set-json", "secrets.encryptionKeys=[]"),
            "secrets.encryptionKeys is required",
            id="encryption-keys",
        ),
        pytest.param(DEFAULT, ("--set", "redis.url="), "Redis is not configured", id="redis"),
        pytest.param(
            SENTINEL, ("--set", "redis.sentinel.masterName="), "redis.sentinel.masterName", id="sentinel-master"
        ),
        pytest.param(SENTINEL, ("--set-json", "redis.sentinel.hosts=[]"), "redis.sentinel.hosts", id="sentinel-hosts"),
        pytest.param(
            SENTINEL,
            ("--set", "redis.mode=cluster"),
            "redis.mode=cluster needs redis.cluster.nodes",
            id="cluster-nodes",
        ),
        pytest.param(
            EXISTING,
            ("--set", "secrets.clientSecret=SENTINEL-x"),
            "use one or the other",
            id="existing-secret-and-values",
        ),
        pytest.param(
            EXISTING, ("--set", "redis.url=redis://redis:6379/0"), "use one or the other", id="redis-url-twice"
        ),
        pytest.param(
            DEFAULT,
            ("--set", "redis.tls.enabled=true"),
            "does not start with rediss://",
            id="tls-with-plain-url",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "config.extraEnv.BFF_CLIENT_SECRET=SENTINEL-x"),
            "would put a secret into the ConfigMap",
            id="secret-in-configmap",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "extraEnv[0].name=BFF_SESSION_SECRETS", "--set", "extraEnv[0].value=SENTINEL-x"),
            "must not carry a secret as a plain value",
            id="secret-in-extra-env",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "serviceMonitor.enabled=true", "--set", "metrics.enabled=false"),
            "serviceMonitor.enabled needs metrics.enabled",
            id="monitor-without-metrics",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "terminationGracePeriodSeconds=5"),
            "terminationGracePeriodSeconds must be longer than preStopSleepSeconds",
            id="grace-period",
        ),
        pytest.param(
            DEFAULT,
            ("--set-json", 'secrets.encryptionKeys=["too-short"]'),
            "every key must be at least 32 characters",
            id="short-key",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "config.sessionIdleTimeout=3600", "--set", "config.sessionMaxLifetime=600"),
            "must not be shorter than config.sessionIdleTimeout",
            id="lifetime-shorter-than-idle",
        ),
        # values.schema.json
        pytest.param(DEFAULT, ("--set", "config.logLevel=INFO"), "logLevel", id="schema-log-level"),
        pytest.param(DEFAULT, ("--set", "config.sessionIdleTimeout=30"), "sessionIdleTimeout", id="schema-timeout"),
        pytest.param(DEFAULT, ("--set", "config.logFormat=xml"), "logFormat", id="schema-enum"),
        pytest.param(DEFAULT, ("--set", "redis.mode=replica"), "mode", id="schema-redis-mode"),
        pytest.param(DEFAULT, ("--set", "config.clientID=typo"), "clientID", id="schema-unknown-key"),
        pytest.param(DEFAULT, ("--set-string", "replicaCount=two"), "replicaCount", id="schema-type"),
        pytest.param(DEFAULT, ("--set", "redis.url=http://redis"), "url", id="schema-redis-url"),
    ],
)
def test_refuses_to_render_with_a_helpful_message(
    helm: Helm, base: Path | None, args: tuple[str, ...], message: str
) -> None:
    files = ("-f", str(base)) if base else ()
    error = helm.template_error(*files, *args)
    assert message in error


# --- Redis ----------------------------------------------------------------------------------------------


def test_sentinel_url_is_built_from_the_mode_fields(helm: Helm) -> None:
    url = _redis_url(helm.template("-f", str(SENTINEL)))
    assert url == (
        "redis+sentinel://:SENTINEL-redis-pw-sentinel@redis-node-0.redis-headless:26379,"
        "redis-node-1.redis-headless:26379,redis-node-2.redis-headless:26379/mymaster/2"
    )


def test_cluster_tls_url_and_ca_file(helm: Helm) -> None:
    rendered = helm.template("-f", str(CI / "cluster-tls-values.yaml"))
    assert _redis_url(rendered) == (
        "rediss+cluster://:SENTINEL-redis-pw-cluster@redis-cluster-0.redis-cluster-headless:6380,"
        "redis-cluster-1.redis-cluster-headless:6380"
    )
    ca_file = _env(rendered)["BFF_REDIS_TLS_CA_FILE"]["value"]
    volume = _mounted_volume(rendered, ca_file)
    assert volume["configMap"]["name"] == "redis-ca-bundle"
    assert volume["configMap"]["items"] == [{"key": "ca.pem", "path": Path(ca_file).name}]


def test_ca_from_a_secret(helm: Helm) -> None:
    rendered = helm.template("-f", str(CI / "full-values.yaml"))
    volume = _mounted_volume(rendered, _env(rendered)["BFF_REDIS_TLS_CA_FILE"]["value"])
    assert volume["secret"]["secretName"] == "redis-ca"


def test_no_ca_file_without_a_ca(helm: Helm) -> None:
    assert "BFF_REDIS_TLS_CA_FILE" not in _env(helm.template("-f", str(DEFAULT)))


def test_password_is_percent_encoded_in_the_built_url(helm: Helm) -> None:
    password = "p@ss w/rd:+%?#"
    rendered = helm.template("-f", str(CI / "single-replica-values.yaml"), "--set-string", f"redis.password={password}")
    url = urlsplit(_redis_url(rendered))
    assert (url.scheme, url.hostname, url.port, url.path) == ("redis", "redis", 6379, "/0")
    assert url.password is not None
    assert unquote(url.password) == password


def _mounted_volume(rendered: Rendered, path: str) -> dict[str, Any]:
    mounts = [m for m in rendered.container["volumeMounts"] if Path(m["mountPath"]) in Path(path).parents]
    assert len(mounts) == 1, f"{path} is not in exactly one mounted volume"
    volume: dict[str, Any] = next(v for v in rendered.pod["volumes"] if v["name"] == mounts[0]["name"])
    return volume


# --- optional parts -------------------------------------------------------------------------------------


def test_metrics_off(helm: Helm) -> None:
    rendered = helm.template(
        "-f", str(CI / "full-values.yaml"), "--set", "metrics.enabled=false", "--set", "serviceMonitor.enabled=false"
    )
    assert rendered.one("ConfigMap")["data"]["BFF_METRICS_PORT"] == "0"
    assert [p["name"] for p in rendered.container["ports"]] == ["http"]
    assert [p["name"] for p in rendered.one("Service")["spec"]["ports"]] == ["http"]
    ingress_ports = [rule["ports"] for rule in rendered.one("NetworkPolicy")["spec"]["ingress"]]
    assert ingress_ports == [[{"port": 8000, "protocol": "TCP"}]]


def test_no_pdb_when_the_autoscaler_may_go_down_to_one(helm: Helm) -> None:
    rendered = helm.template("-f", str(CI / "full-values.yaml"), "--set", "autoscaling.minReplicas=1")
    assert rendered.of_kind("PodDisruptionBudget") == []


def test_redis_egress_by_pod_selector_stays_in_the_namespace(helm: Helm) -> None:
    rendered = helm.template("-f", str(CI / "cluster-tls-values.yaml"))
    egress = rendered.one("NetworkPolicy")["spec"]["egress"]
    redis = next(rule for rule in egress if rule["ports"] == [{"port": 6380, "protocol": "TCP"}])
    assert redis["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]
    https = next(rule for rule in egress if rule["ports"] == [{"port": 443, "protocol": "TCP"}])
    blocked = https["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in blocked, "the cloud metadata service must stay unreachable"
    assert "10.0.0.0/8" in blocked


def test_image_defaults_to_the_app_version(helm: Helm) -> None:
    app_version = load_yaml((CHART / "Chart.yaml").read_text())["appVersion"]
    image = helm.template("-f", str(DEFAULT)).container["image"]
    assert image.endswith(f":{app_version}")
    digest = "sha256:" + "a" * 64
    pinned = helm.template("-f", str(DEFAULT), "--set", f"image.digest={digest}").container["image"]
    assert pinned.endswith(f"@{digest}")


def test_extras_reach_the_pod(helm: Helm) -> None:
    rendered = helm.template("-f", str(CI / "full-values.yaml"))
    pod, container = rendered.pod, rendered.container
    assert container["image"] == "registry.example.com/platform/bff:0.1.0-rc1"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert _env(rendered)["OTEL_SERVICE_NAME"] == {"name": "OTEL_SERVICE_NAME", "value": "bff"}
    assert "valueFrom" in _env(rendered)["NODE_NAME"]
    assert {"name": "extra-config", "mountPath": "/etc/bff/extra", "readOnly": True} in container["volumeMounts"]
    assert {"name": "extra-config", "configMap": {"name": "bff-extra"}} in pod["volumes"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["priorityClassName"] == "high-priority"
    metadata = rendered.deployment["spec"]["template"]["metadata"]
    assert metadata["annotations"]["example.com/team"] == "identity"
    assert metadata["labels"]["example.com/tier"] == "edge"
    data = rendered.one("ConfigMap")["data"]
    assert data["BFF_EXTRA_SETTING"] == "on"
    assert data["BFF_SCOPES"] == "openid profile email offline_access integrations:read users:read"
    assert data["BFF_TRUSTED_PROXIES"] == "10.42.0.0/16,10.43.0.0/16"
    assert data["BFF_ADMIN_SUBJECTS"] == "admin-sub-1,admin-sub-2"


# --- NOTES.txt ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that also renders NOTES.txt as a manifest (`helm template` skips the notes)."""
    chart = tmp_path_factory.mktemp("notes") / "bff"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text('notes: {{ include "bff/templates/NOTES.txt" . | toJson }}\n')
    return chart


def _notes(helm: Helm, chart: Path, scenario: Path) -> str:
    result = helm.run("template", "bff", str(chart), "-f", str(scenario), "--show-only", "templates/zz-notes.yaml")
    assert result.returncode == 0, result.stderr
    notes: str = load_yaml(result.stdout)["notes"]
    return notes


def test_notes_explain_readiness_and_remind_of_proxies_and_metrics(helm: Helm, notes_chart: Path) -> None:
    notes = _notes(helm, notes_chart, DEFAULT)
    assert "https://app.example.com/auth/callback" in notes
    assert "/readyz" in notes
    assert "config.trustedProxies is empty" in notes
    assert "never expose it through the Ingress" in notes
    with_proxies = _notes(helm, notes_chart, CI / "full-values.yaml")
    assert "trustedProxies is empty" not in with_proxies
    assert "https://app.example.com/" in with_proxies
