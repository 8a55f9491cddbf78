"""How the chart reacts to changes in its values: rollouts, refusals, Redis URLs, optional parts, NOTES."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.deploy.deploy_support import CHART, REPO, Helm, Rendered, load_yaml

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
EXT_NGINX = CI / "external-auth-nginx-values.yaml"
EXT_TRAEFIK = CI / "external-auth-traefik-values.yaml"


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
        pytest.param(
            DEFAULT,
            ("--set", "externalAuth.enabled=true", "--set", "externalAuth.ingressNginx.upstreamCASecret=ca"),
            "externalAuth.enabled needs config.trustedProxies",
            id="external-auth-without-trusted-proxies",
        ),
        pytest.param(
            EXT_NGINX,
            ("--set", "externalAuth.ingressNginx.upstreamCASecret="),
            "needs externalAuth.ingressNginx.upstreamCASecret",
            id="external-auth-unverified-upstream",
        ),
        pytest.param(
            EXT_NGINX,
            ("--set-string", "externalAuth.annotations.nginx\\.ingress\\.kubernetes\\.io/auth-cache-key=$cookie_s"),
            "never cache bff's answers",
            id="external-auth-cache",
        ),
        pytest.param(
            EXT_NGINX,
            ("--set-string", "externalAuth.annotations.nginx\\.ingress\\.kubernetes\\.io/auth-response-headers=X"),
            "cannot be overridden",
            id="external-auth-override",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "tracing.env.OTEL_EXPORTER_OTLP_HEADERS=x-api-key=SENTINEL-x"),
            "valueFrom.secretKeyRef",
            id="tracing-secret-header",
        ),
        pytest.param(
            DEFAULT,
            ("--set", "tracing.env.OTEL_SERVICE_NAME=x"),
            "use tracing.otlpEndpoint / tracing.serviceName",
            id="tracing-twice",
        ),
        # values.schema.json
        pytest.param(DEFAULT, ("--set", "tracing.env.LOG_LEVEL=debug"), "LOG_LEVEL", id="schema-tracing-env"),
        pytest.param(DEFAULT, ("--set", "externalAuth.controller=haproxy"), "controller", id="schema-controller"),
        pytest.param(DEFAULT, ("--set", "config.logLevel=INFO"), "logLevel", id="schema-log-level"),
        pytest.param(DEFAULT, ("--set", "config.sessionIdleTimeout=30"), "sessionIdleTimeout", id="schema-timeout"),
        pytest.param(DEFAULT, ("--set", "config.logFormat=xml"), "logFormat", id="schema-enum"),
        pytest.param(DEFAULT, ("--set", "config.auditLog=/var/log/audit"), "auditLog", id="schema-audit-log"),
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
    assert [p["name"] for p in rendered.service["spec"]["ports"]] == ["http"]
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
    assert data["BFF_AUDIT_LOG"] == "stdout"


def test_audit_log_stream_is_the_applications_default_unless_set(helm: Helm) -> None:
    """config.auditLog is BFF_AUDIT_LOG; left empty, the application's default (stderr, with the other logs)."""
    assert "BFF_AUDIT_LOG" not in helm.template("-f", str(DEFAULT)).one("ConfigMap")["data"]
    for stream in ("stdout", "stderr"):
        rendered = helm.template("-f", str(DEFAULT), "--set", f"config.auditLog={stream}")
        assert rendered.one("ConfigMap")["data"]["BFF_AUDIT_LOG"] == stream
    config = pytest.importorskip("bff.config")
    assert config.Settings.model_fields["audit_log"].default == "stderr"


# --- external authorization ---------------------------------------------------------------------------

_NGINX = "nginx.ingress.kubernetes.io/"


def _ingress(rendered: Rendered, name: str) -> dict[str, Any]:
    return rendered.named("Ingress", name)


def _api_annotations(rendered: Rendered, name: str = "bff-api") -> dict[str, str]:
    annotations: dict[str, str] = _ingress(rendered, name)["metadata"]["annotations"]
    return annotations


def test_verify_address_is_the_release_service(helm: Helm) -> None:
    args = ("--namespace", "edge", "--set", "fullnameOverride=front", "--set", "externalAuth.verifyPort=8080")
    nginx = helm.template("-f", str(EXT_NGINX), *args, "--set", "externalAuth.clusterDomain=corp.internal")
    url = "http://front.edge.svc.corp.internal:8080/auth/verify"
    assert _api_annotations(nginx, "front-api")[_NGINX + "auth-url"] == url
    traefik = helm.template("-f", str(EXT_TRAEFIK), *args)
    forward = traefik.named("Middleware", "front-verify")["spec"]["forwardAuth"]
    assert forward["address"] == "http://front.edge.svc.cluster.local:8080/auth/verify"
    chain = _api_annotations(traefik, "front-api")["traefik.ingress.kubernetes.io/router.middlewares"]
    assert chain.startswith("edge-front-verify@kubernetescrd,edge-front-api-headers@kubernetescrd")
    # That port is bff's BFF_VERIFY_PORT, the container's and the Service's "verify", and no Ingress's backend.
    for rendered in (nginx, traefik):
        assert rendered.one("ConfigMap")["data"]["BFF_VERIFY_PORT"] == "8080"
        [container] = rendered.pod["containers"]
        assert {"name": "verify", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
        service = rendered.named("Service", "front")
        service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert service_ports["verify"] == (8080, "verify")
        for ingress in rendered.of_kind("Ingress"):
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert path["backend"]["service"].get("port") != {"name": "verify"}
                    assert path["backend"]["service"].get("port") != {"number": 8080}
    assert "BFF_VERIFY_PORT" not in helm.template("-f", str(DEFAULT)).one("ConfigMap")["data"]


def test_api_ingress_follows_the_data_api(helm: Helm) -> None:
    """The default data API (https://connect.kryptos.io/api) needs no rewrite: /api/v1/x is /api/v1/x there.
    Anywhere else the path is rewritten, which in ingress-nginx makes every path of the host a regex."""
    default = helm.template("-f", str(EXT_NGINX))
    annotations = _api_annotations(default)
    assert annotations[_NGINX + "upstream-vhost"] == "connect.kryptos.io"
    assert annotations[_NGINX + "backend-protocol"] == "HTTPS"
    assert _NGINX + "rewrite-target" not in annotations
    assert _NGINX + "use-regex" not in annotations
    path = _ingress(default, "bff-api")["spec"]["rules"][0]["http"]["paths"][0]
    assert (path["path"], path["pathType"]) == ("/api/v1", "Prefix")

    elsewhere = helm.template(
        "-f", str(EXT_NGINX), "--set", "config.dataApiUrl=http://kryptos-emulator.dev:9000/emu/api/"
    )
    annotations = _api_annotations(elsewhere)
    assert annotations[_NGINX + "rewrite-target"] == "/emu/api/v1/$1"
    assert annotations[_NGINX + "use-regex"] == "true"
    assert annotations[_NGINX + "upstream-vhost"] == "kryptos-emulator.dev:9000"
    assert annotations[_NGINX + "backend-protocol"] == "HTTP"
    assert not any(name.startswith(_NGINX + "proxy-ssl") for name in annotations), "plain http: no TLS settings"
    path = _ingress(elsewhere, "bff-api")["spec"]["rules"][0]["http"]["paths"][0]
    assert (path["path"], path["pathType"]) == ("/api/v1/(.*)", "ImplementationSpecific")
    service = elsewhere.named("Service", "bff-kryptos-data")["spec"]
    assert (service["externalName"], service["ports"][0]["port"]) == ("kryptos-emulator.dev", 9000)


def test_upstream_certificate_checks_can_only_be_waived_explicitly(helm: Helm) -> None:
    waived = helm.template(
        "-f",
        str(EXT_NGINX),
        "--set",
        "externalAuth.ingressNginx.upstreamCASecret=",
        "--set",
        "externalAuth.ingressNginx.insecureSkipUpstreamVerify=true",
    )
    assert not any(name.startswith(_NGINX + "proxy-ssl") for name in _api_annotations(waived))


def test_set_cookie_snippet_only_when_allowed(helm: Helm) -> None:
    plain = helm.template("-f", str(EXT_NGINX))
    for ingress in plain.of_kind("Ingress"):
        assert not any(name.endswith("snippet") for name in ingress["metadata"].get("annotations", {}))
    allowed = helm.template("-f", str(EXT_NGINX), "--set", "externalAuth.ingressNginx.hideUpstreamSetCookie=true")
    snippet = _api_annotations(allowed)[_NGINX + "configuration-snippet"]
    assert snippet.strip() == "proxy_hide_header Set-Cookie;"


def test_api_host_is_the_public_origin_unless_given(helm: Helm) -> None:
    rendered = helm.template("-f", str(EXT_NGINX), "--set", "config.publicUrl=https://shop.example.org:8443")
    for name in ("bff-api", "bff-verify-deny"):
        assert _ingress(rendered, name)["spec"]["rules"][0]["host"] == "shop.example.org"
    rendered = helm.template("-f", str(EXT_NGINX), "--set", "externalAuth.host=api.example.org")
    assert _ingress(rendered, "bff-api")["spec"]["rules"][0]["host"] == "api.example.org"


def test_verify_is_refused_on_every_host_that_reaches_bff(helm: Helm) -> None:
    hosts = '[{"host":"app.example.com","paths":[{"path":"/auth"}]},{"host":"","paths":[{"path":"/"}]}]'
    rendered = helm.template("-f", str(EXT_NGINX), "--set-json", f"ingress.hosts={hosts}")
    rules = _ingress(rendered, "bff-verify-deny")["spec"]["rules"]
    assert [rule.get("host") for rule in rules] == ["app.example.com", None], "a rule without host: any host"
    assert {path["path"] for rule in rules for path in rule["http"]["paths"]} == {"/auth/verify"}


def test_chart_default_data_api_is_bffs() -> None:
    config = pytest.importorskip("bff.config")
    chart_default = re.search(
        r'default "([^"]+)" \.Values\.config\.dataApiUrl', (CHART / "templates" / "_helpers.tpl").read_text()
    )
    assert chart_default is not None
    assert chart_default.group(1) == config.Settings.model_fields["data_api_url"].default


_BFF = ("bff", {"name": "bff", "port": {"name": "http"}})


def test_admin_routes_stay_on_bff_when_the_data_api_path_is_rewritten(helm: Helm) -> None:
    """With a rewrite, ingress-nginx reads every path of the host as a regular expression: /api/v1/(.*) goes to
    Kryptos, and /api/admin/... (bff's own, refused by /auth/verify) still only matches bff's /api."""
    rendered = helm.template(
        "-f", str(EXT_NGINX), "--set", "config.dataApiUrl=http://kryptos-emulator.dev:9000/emu/api/"
    )
    assert rendered.route("app.example.com", "/api/admin/users/user_admin_ada/sessions") == _BFF
    assert rendered.route("app.example.com", "/api/developer/grants/g1/revoke") == _BFF
    api = rendered.route("app.example.com", "/api/v1/integrations")
    assert api is not None
    assert api[0] == "bff-api"


def test_nothing_external_when_disabled(helm: Helm) -> None:
    rendered = helm.template("-f", str(EXT_NGINX), "--set", "externalAuth.enabled=false")
    assert [i["metadata"]["name"] for i in rendered.of_kind("Ingress")] == ["bff"]
    assert [s["metadata"]["name"] for s in rendered.of_kind("Service")] == ["bff"]
    assert "auth-url" not in json.dumps(rendered.docs)


# --- the README's external-authorization section --------------------------------------------------------

_INGRESS_EXAMPLES = REPO / "tests" / "ingress"


def _readme_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## External authorization (the ingress does the hop)")
    return readme[start : readme.index("\n## ", start + 3)]


def _shell_args(block: str) -> list[str]:
    """The arguments after `helm <verb> bff ./helm/bff` of a README command (continuation lines joined)."""
    command = block.replace("\\\n", " ")
    return shlex.split(command.split("./helm/bff", 1)[1])


def test_readme_chart_commands_render(helm: Helm) -> None:
    """Each `helm upgrade --reuse-values` of the section, on top of the install command of "Deploy on
    Kubernetes", renders the external-authorization objects."""
    readme = (REPO / "README.md").read_text()
    install = re.search(r"(helm install bff \./helm/bff \\\n.*?)\n\s*```", readme, re.DOTALL)
    assert install is not None
    upgrades = re.findall(r"(helm upgrade bff \./helm/bff --reuse-values \\\n.*?)\n```", _readme_section(), re.DOTALL)
    assert len(upgrades) == 2, "one command for ingress-nginx, one for Traefik"
    for upgrade in upgrades:
        args = [arg for arg in _shell_args(upgrade) if arg != "--reuse-values"]
        rendered = helm.template(*_shell_args(install.group(1)), *args)
        assert {i["metadata"]["name"] for i in rendered.of_kind("Ingress")} == {"bff", "bff-api", "bff-verify-deny"}
        assert rendered.named("Service", "bff-kryptos-data")["spec"]["externalName"] == "connect.kryptos.io"
        # bff's own routes stay on bff: /auth/verify refuses them (route_not_allowed).
        for path in ("/api/admin/users/user_admin_ada/sessions", "/auth/sessions", "/auth/sessions/end-others"):
            assert rendered.route("app.example.com", path) == _BFF, path
        assert rendered.route("app.example.com", "/api/v1/userinfo") == (
            "bff-api",
            {"name": "bff-kryptos-data", "port": {"number": 443}},
        )


@pytest.mark.parametrize(
    ("language", "template", "values"),
    [
        pytest.param(
            "nginx",
            "nginx.conf.template",
            {
                "LISTEN": "443 ssl",
                "BFF": "http://bff:8000",
                "BFF_VERIFY": "http://bff:8001",
                "DATA_API": "https://connect.kryptos.io/api",
                "CONNECT_API": "https://connect-api.kryptos.io",
            },
            id="nginx",
        ),
        pytest.param(
            "caddyfile",
            "Caddyfile.template",
            {
                "SITE": "app.example.com",
                "BFF": "bff:8000",
                "BFF_VERIFY": "bff:8001",
                "DATA_API_ORIGIN": "https://connect.kryptos.io",
                "DATA_API_PATH": "/api",
                "CONNECT_API_ORIGIN": "https://connect-api.kryptos.io",
                "CONNECT_API_PATH": "",
            },
            id="caddy",
        ),
    ],
)
def test_readme_ingress_configurations_are_the_tested_ones(
    language: str, template: str, values: dict[str, str]
) -> None:
    """The README's nginx and Caddy configurations are tests/ingress's templates (which run against the real
    servers), filled in with the README's example addresses and without their leading comment."""
    path = _INGRESS_EXAMPLES / template
    if not path.exists():
        pytest.skip(f"{path} is not there")
    lines = path.read_text().splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    expected = "\n".join(lines).strip("\n")
    for name, value in values.items():
        expected = expected.replace("{{" + name + "}}", value)
    block = re.search(rf"```{language}\n(.*?)\n```", _readme_section(), re.DOTALL)
    assert block is not None, f"no {language} block in the README's section"
    assert block.group(1) == expected


# --- tracing --------------------------------------------------------------------------------------------


def _otel(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {name: entry for name, entry in _env(rendered).items() if name.startswith("OTEL_")}


def test_tracing_is_off_by_default(helm: Helm) -> None:
    assert _otel(helm.template("-f", str(DEFAULT))) == {}


def test_tracing_variables(helm: Helm) -> None:
    rendered = helm.template(
        "-f",
        str(DEFAULT),
        "--set",
        "tracing.otlpEndpoint=http://otel-collector.monitoring:4318",
        "--set-string",
        "tracing.env.OTEL_TRACES_SAMPLER_ARG=0.25",
        "--set",
        "tracing.env.OTEL_TRACES_SAMPLER=parentbased_traceidratio",
    )
    assert {name: entry["value"] for name, entry in _otel(rendered).items()} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
        "OTEL_SERVICE_NAME": "bff",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    named = helm.template(
        "-f", str(DEFAULT), "--set", "tracing.env.OTEL_TRACES_EXPORTER=otlp", "--set", "tracing.serviceName=edge"
    )
    assert _otel(named)["OTEL_SERVICE_NAME"]["value"] == "edge"


def test_extra_env_wins_over_tracing(helm: Helm) -> None:
    """full-values sets OTEL_SERVICE_NAME in extraEnv: the container gets it once, from there."""
    rendered = helm.template("-f", str(CI / "full-values.yaml"), "--set", "tracing.otlpEndpoint=http://collector:4318")
    names = [entry["name"] for entry in rendered.container["env"]]
    assert names.count("OTEL_SERVICE_NAME") == 1
    assert _otel(rendered)["OTEL_SERVICE_NAME"]["value"] == "bff"


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


def test_notes_name_the_external_authorization(helm: Helm, notes_chart: Path) -> None:
    notes = _notes(helm, notes_chart, EXT_TRAEFIK)
    assert "http://bff.default.svc.cluster.local:8001/auth/verify" in notes
    assert "allowExternalNameServices=true" in notes
    assert "/api/admin/" in notes
    assert "verify" not in _notes(helm, notes_chart, DEFAULT)
