"""Invariants of the Helm chart, checked for every scenario in helm/bff/ci/*-values.yaml.

Each scenario is linted (`helm lint --strict`, which also applies values.schema.json) and rendered once per
session; the assertions read the rendered manifests and compare them with the scenario's values.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group

from tests.deploy.deploy_support import RELEASE, Helm, Rendered

SECRET_FILES = {
    # env var -> (file name in the secrets volume, values section, key setting)
    "BFF_CLIENT_SECRET_FILE": ("client-secret", "secrets", "clientSecretKey"),
    "BFF_SESSION_SECRETS_FILE": ("session-secrets", "secrets", "sessionSecretsKey"),
    "BFF_ENCRYPTION_KEYS_FILE": ("encryption-keys", "secrets", "encryptionKeysKey"),
    "BFF_REDIS_URL_FILE": ("redis-url", "redis", "existingSecretKey"),
}


def _expected_secret_ref(values: dict[str, Any], section: str, key_setting: str) -> tuple[str, str]:
    """(Secret name, key) the value must come from: the user's existing Secret, or the chart's own."""
    existing = values[section]["existingSecret"]
    if existing:
        return existing, values[section][key_setting]
    key = values["secrets"][key_setting] if section == "secrets" else "redis-url"
    return RELEASE, key


def _min_replicas(values: dict[str, Any]) -> int:
    autoscaling = values["autoscaling"]
    return int(autoscaling["minReplicas"] if autoscaling["enabled"] else values["replicaCount"])


def _secret_sentinels(values: dict[str, Any]) -> list[str]:
    """Every secret value the scenario gives to the chart (strings and list items)."""
    raw = [
        values["secrets"]["clientSecret"],
        values["secrets"]["sessionSecrets"],
        values["secrets"]["encryptionKeys"],
        values["redis"]["password"],
        values["redis"]["url"],
    ]
    found: list[str] = []
    for item in raw:
        found.extend(item if isinstance(item, list) else [item])
    return [value for value in found if value]


def _env(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in rendered.container.get("env", [])}


def _volume_for(rendered: Rendered, path: str) -> tuple[dict[str, Any], str]:
    """The pod volume mounted at the directory holding `path`, and the file's path inside that volume."""
    for mount in rendered.container["volumeMounts"]:
        mount_path = PurePosixPath(mount["mountPath"])
        if mount_path in PurePosixPath(path).parents:
            volume = next(v for v in rendered.pod["volumes"] if v["name"] == mount["name"])
            return volume, str(PurePosixPath(path).relative_to(mount_path))
    raise AssertionError(f"{path} is not inside any mounted volume")


def test_lint_strict_passes(helm: Helm, scenario: Path) -> None:
    result = helm.lint("-f", str(scenario))
    assert result.returncode == 0, result.stdout + result.stderr


def test_pod_runs_non_root_with_runtime_default_seccomp(rendered: Rendered) -> None:
    pod = rendered.pod["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_is_locked_down(rendered: Rendered) -> None:
    container = rendered.container["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container["capabilities"]
    assert container.get("privileged", False) is False
    # The read-only root filesystem leaves /tmp as the one writable place.
    volume, _ = _volume_for(rendered, "/tmp/x")
    assert "emptyDir" in volume


def test_pod_has_no_api_token_and_no_service_links(rendered: Rendered) -> None:
    assert rendered.pod["automountServiceAccountToken"] is False
    # Service links inject variables such as BFF_PORT=tcp://... for a Service named "bff".
    assert rendered.pod["enableServiceLinks"] is False
    for account in rendered.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_probes(rendered: Rendered) -> None:
    container = rendered.container
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8000)


def test_serves_http_on_8000_and_shuts_down_gracefully(rendered: Rendered, values: dict[str, Any]) -> None:
    container = rendered.container
    # All interfaces inside the pod: the Service and the kubelet probes reach it through the pod IP.
    assert container["args"][:5] == ["serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == 8000
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert int(sleep[1]) > 0
    assert rendered.pod["terminationGracePeriodSeconds"] > int(sleep[1])
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_each_secret_is_a_file_from_the_right_secret(rendered: Rendered, values: dict[str, Any]) -> None:
    env = _env(rendered)
    for variable, (file_name, section, key_setting) in SECRET_FILES.items():
        plain = variable.removesuffix("_FILE")
        assert plain not in env, f"{plain} must not be an env var (visible in /proc/*/environ)"
        assert "value" in env[variable], f"{variable} must be a plain path"
        volume, path_in_volume = _volume_for(rendered, env[variable]["value"])
        assert path_in_volume == file_name
        sources = volume["projected"]["sources"] if "projected" in volume else [{"secret": volume["secret"]}]
        matches = [
            (source["secret"]["name"], item["key"])
            for source in sources
            for item in source["secret"].get("items", [])
            if item["path"] == file_name
        ]
        assert matches == [_expected_secret_ref(values, section, key_setting)], variable


def test_chart_secret_holds_exactly_what_is_referenced(rendered: Rendered, values: dict[str, Any]) -> None:
    referenced = {_expected_secret_ref(values, s, k) for _, s, k in SECRET_FILES.values()}
    own_keys = {key for name, key in referenced if name == RELEASE}
    secrets = rendered.of_kind("Secret")
    if not own_keys:
        assert secrets == [], "with existing Secrets only, the chart must not create one"
        return
    secret = rendered.one("Secret")
    assert secret["metadata"]["name"] == RELEASE
    assert set(secret["data"]) == own_keys
    for encoded in secret["data"].values():
        assert base64.b64decode(encoded), "empty secret value"


def test_secret_values_appear_only_in_the_secret(rendered: Rendered, values: dict[str, Any]) -> None:
    sentinels = _secret_sentinels(values)
    for doc in rendered.docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        assert "SENTINEL-" not in text, f"a secret value leaked into {doc['kind']} {doc['metadata']['name']}"
        for sentinel in sentinels:
            assert sentinel not in text, f"{sentinel!r} leaked into {doc['kind']}"
    if sentinels:
        # Positive control: the sentinels are searchable, and they are in the Secret.
        decoded = " ".join(base64.b64decode(v).decode() for s in rendered.of_kind("Secret") for v in s["data"].values())
        for sentinel in sentinels:
            assert sentinel in decoded


def test_settings_come_from_the_configmap(rendered: Rendered, values: dict[str, Any]) -> None:
    configmap = rendered.one("ConfigMap")
    assert rendered.container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    data = configmap["data"]
    assert all(isinstance(value, str) for value in data.values())
    assert data["BFF_CLIENT_ID"] == values["config"]["clientId"]
    assert data["BFF_PUBLIC_URL"] == values["config"]["publicUrl"]
    assert data["BFF_ISSUER"] == values["config"]["issuer"]
    metrics_port = str(values["metrics"]["port"]) if values["metrics"]["enabled"] else "0"
    assert data["BFF_METRICS_PORT"] == metrics_port
    plain_secrets = {name.removesuffix("_FILE") for name in SECRET_FILES}
    assert not plain_secrets & set(data), "secrets must never be ConfigMap settings"


def test_checksum_annotations(rendered: Rendered) -> None:
    annotations = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    for name in ("checksum/config", "checksum/secret"):
        assert re.fullmatch(r"[0-9a-f]{64}", annotations[name]), name


def test_pdb_only_with_more_than_one_replica(rendered: Rendered, values: dict[str, Any]) -> None:
    pdbs = rendered.of_kind("PodDisruptionBudget")
    if values["podDisruptionBudget"]["enabled"] and _min_replicas(values) > 1:
        assert len(pdbs) == 1
        pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
        assert pdbs[0]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    else:
        assert pdbs == []


def test_hpa_only_when_enabled(rendered: Rendered, values: dict[str, Any]) -> None:
    hpas = rendered.of_kind("HorizontalPodAutoscaler")
    if not values["autoscaling"]["enabled"]:
        assert hpas == []
        assert rendered.deployment["spec"]["replicas"] == values["replicaCount"]
        return
    assert rendered.one("HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    spec = hpas[0]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert spec["minReplicas"] == values["autoscaling"]["minReplicas"]
    assert spec["metrics"][0]["resource"]["name"] == "cpu"
    # The HPA owns the replica count; a fixed value would fight it on every upgrade.
    assert "replicas" not in rendered.deployment["spec"]


def test_service_ports(rendered: Rendered, values: dict[str, Any]) -> None:
    service = rendered.service
    assert service["spec"]["type"] == values["service"]["type"]
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert ports["http"]["port"] == values["service"]["port"]
    assert ports["http"]["targetPort"] == "http"
    container_ports = {port["name"]: port["containerPort"] for port in rendered.container["ports"]}
    if values["metrics"]["enabled"]:
        assert ports["metrics"]["targetPort"] == "metrics"
        assert container_ports["metrics"] == values["metrics"]["port"]
    else:
        assert "metrics" not in ports
        assert "metrics" not in container_ports


def test_ingress_only_when_enabled_and_never_routes_metrics(rendered: Rendered, values: dict[str, Any]) -> None:
    ingresses = [i for i in rendered.of_kind("Ingress") if i["metadata"]["name"] == RELEASE]
    if not values["ingress"]["enabled"]:
        assert ingresses == []
        return
    ingress = rendered.named("Ingress", RELEASE)
    text = json.dumps(ingress)
    assert "/metrics" not in text
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            port = path["backend"]["service"]["port"]
            assert port in ({"name": "http"}, {"number": values["service"]["port"]}), port
    assert [t["secretName"] for t in ingress["spec"].get("tls", [])] == [
        t["secretName"] for t in values["ingress"]["tls"]
    ]
    if values["ingress"]["className"]:
        assert ingress["spec"]["ingressClassName"] == values["ingress"]["className"]


def test_network_policy_only_when_enabled(rendered: Rendered, values: dict[str, Any]) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    if not values["networkPolicy"]["enabled"]:
        assert policies == []
        return
    spec = rendered.one("NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()

    inbound = [{(p["port"], p["protocol"]) for p in rule["ports"]} for rule in spec["ingress"]]
    expected_in = [{(8000, "TCP")}]
    if values["externalAuth"]["enabled"]:  # the controller also asks /auth/verify on its own port
        expected_in = [{(8000, "TCP"), (values["externalAuth"]["verifyPort"], "TCP")}]
    if values["metrics"]["enabled"]:
        expected_in.append({(values["metrics"]["port"], "TCP")})
    assert inbound == expected_in, "in: HTTP from the ingress controller, metrics from monitoring, nothing else"
    assert all(rule["from"] for rule in spec["ingress"]), "an empty 'from' would admit everyone"

    outbound = [{(p["port"], p["protocol"]) for p in rule["ports"]} for rule in spec["egress"]]
    assert {(53, "UDP"), (53, "TCP")} in outbound
    assert {(port, "TCP") for port in values["networkPolicy"]["redis"]["ports"]} in outbound
    assert {(443, "TCP")} in outbound
    assert len(outbound) == 3
    assert all(rule["to"] for rule in spec["egress"]), "an empty 'to' would allow every destination"


def test_service_monitor_only_when_enabled(rendered: Rendered, values: dict[str, Any]) -> None:
    monitors = rendered.of_kind("ServiceMonitor")
    if not values["serviceMonitor"]["enabled"]:
        assert monitors == []
        return
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service_labels = rendered.service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert values["serviceMonitor"]["labels"].items() <= monitor["metadata"]["labels"].items()


def test_topology_spread_by_zone_and_host(rendered: Rendered, values: dict[str, Any]) -> None:
    constraints = rendered.pod.get("topologySpreadConstraints", [])
    if not values["topologySpread"]["enabled"]:
        assert constraints == []
        return
    assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    for constraint in constraints:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_the_application_accepts_what_the_pod_gets(rendered: Rendered, tmp_path: Path) -> None:
    """The ConfigMap plus the mounted files, fed to the application's own settings parser."""
    config = pytest.importorskip("bff.config")
    chart_secret = {
        key: base64.b64decode(value).decode()
        for secret in rendered.of_kind("Secret")
        for key, value in secret["data"].items()
    }
    # Content of Secrets the chart does not create (existingSecret): plausible stand-ins.
    stand_ins = {
        "client-secret": "client-secret",
        "session-secrets": "s" * 32,
        "encryption-keys": "e" * 32,
        "redis-url": "redis://redis:6379/0",
    }
    files: dict[str, str] = {}
    for volume in rendered.pod["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                own = source["secret"]["name"] == RELEASE
                files[item["path"]] = chart_secret[item["key"]] if own else stand_ins[item["path"]]
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    environ = dict(rendered.one("ConfigMap")["data"])
    for variable, entry in _env(rendered).items():
        if variable.startswith("BFF_") and "value" in entry:
            environ[variable] = str(tmp_path / PurePosixPath(entry["value"]).name)
    settings = config.load_settings(environ)
    assert settings.client_id == environ["BFF_CLIENT_ID"]
    assert settings.metrics_port == int(environ["BFF_METRICS_PORT"])
    assert not settings.uses_memory_store


# --- external authorization and tracing ---------------------------------------------------------------

_AUTH_HEADERS = ["Authorization", "X-Client-Id", "X-Client-Secret"]
_CHART_DEFAULT_DATA_API = "https://connect.kryptos.io/api"


def _verify_url(values: dict[str, Any]) -> str:
    domain = values["externalAuth"]["clusterDomain"]
    return f"http://{RELEASE}.default.svc.{domain}:{values['externalAuth']['verifyPort']}/auth/verify"


def _public_host(values: dict[str, Any]) -> str:
    return values["externalAuth"]["host"] or str(urlsplit(values["config"]["publicUrl"]).hostname)


def _paths(ingress: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(host, path, backend service) of every path of an Ingress."""
    return [
        (rule["host"], path["path"], path["backend"]["service"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


def test_external_authorization_only_when_enabled(rendered: Rendered, values: dict[str, Any]) -> None:
    external = values["externalAuth"]
    if not external["enabled"]:
        assert [s["metadata"]["name"] for s in rendered.of_kind("Service")] == [RELEASE]
        bff_ingress = [RELEASE] if values["ingress"]["enabled"] else []
        assert [i["metadata"]["name"] for i in rendered.of_kind("Ingress")] == bff_ingress
        assert [d for d in rendered.docs if d["apiVersion"].startswith("traefik.")] == []
        assert "/auth/verify" not in json.dumps(rendered.docs)
        return
    data_api = urlsplit(values["config"]["dataApiUrl"] or _CHART_DEFAULT_DATA_API)
    kryptos = rendered.named("Service", f"{RELEASE}-kryptos-data")
    assert kryptos["spec"]["type"] == "ExternalName"
    assert kryptos["spec"]["externalName"] == data_api.hostname
    [port] = kryptos["spec"]["ports"]
    assert port["port"] == (data_api.port or 443)

    api = rendered.named("Ingress", f"{RELEASE}-api")
    [(host, path, backend)] = _paths(api)
    assert host == _public_host(values), "the API must stay on the SPA's origin (host-only session cookie)"
    assert path.startswith("/api/v1")
    assert backend == {"name": kryptos["metadata"]["name"], "port": {"number": port["port"]}}

    # /auth/verify's answer carries the client secret: from outside it is refused, on every path under it.
    deny = rendered.named("Ingress", f"{RELEASE}-verify-deny")
    bff_hosts = [h["host"] for h in values["ingress"]["hosts"]] if values["ingress"]["enabled"] else []
    assert {h for h, _, _ in _paths(deny)} == {_public_host(values), *bff_hosts}, "every host that reaches bff"
    for rule in deny["spec"]["rules"]:
        assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/auth/verify", "Prefix")]
    for ingress in (api, deny):
        assert [t["secretName"] for t in ingress["spec"].get("tls", [])] == [
            t["secretName"] for t in (external["tls"] or values["ingress"]["tls"])
        ]
        annotations = ingress["metadata"]["annotations"]
        assert not any("auth-cache" in name for name in annotations), "auth answers must never be cached"

    # /auth/verify answers only BFF_TRUSTED_PROXIES; the controller is what the network policy lets in.
    assert rendered.one("ConfigMap")["data"]["BFF_TRUSTED_PROXIES"]
    if values["networkPolicy"]["enabled"]:
        first = rendered.one("NetworkPolicy")["spec"]["ingress"][0]
        assert first["ports"] == [
            {"port": 8000, "protocol": "TCP"},
            {"port": external["verifyPort"], "protocol": "TCP"},
        ]
        assert first["from"][0]["podSelector"] == values["networkPolicy"]["ingressController"]["podSelector"]

    if external["controller"] == "ingress-nginx":
        _check_ingress_nginx(rendered, values)
    else:
        _check_traefik(rendered, values)


# bff's own routes under the prefixes external authorization shares with Kryptos: /auth/verify answers the
# /api ones 403 route_not_allowed (they are not Kryptos calls), so the ingress must leave them on bff.
_HANDLE = "0123456789abcdef0123456789abcdef"
_BFFS_OWN = [
    "/auth/sessions",
    "/auth/sessions/end-others",
    f"/auth/sessions/{_HANDLE}",
    "/api/admin/users/user_admin_ada/sessions",
    f"/api/admin/users/user_admin_ada/sessions/{_HANDLE}",
    "/api/developer/grants",
    "/api/developer/grants/g1/revoke",
]


def test_external_authorization_leaves_bffs_own_routes_on_bff(rendered: Rendered, values: dict[str, Any]) -> None:
    """Whatever the controller, /api/v1/... goes to Kryptos and the rest of /auth and /api to bff's Service."""
    if not (values["externalAuth"]["enabled"] and values["ingress"]["enabled"]):
        return
    host = _public_host(values)
    bff = (RELEASE, {"name": RELEASE, "port": {"name": "http"}})
    for path in _BFFS_OWN:
        assert rendered.route(host, path) == bff, path
    api = rendered.route(host, "/api/v1/integrations")
    assert api is not None
    assert api[0] == f"{RELEASE}-api"
    assert api[1]["name"] == f"{RELEASE}-kryptos-data"
    for path in ("/auth/verify", "/auth/verify/api/v1/userinfo"):
        assert rendered.route(host, path) == (f"{RELEASE}-verify-deny", bff[1]), path


def _check_ingress_nginx(rendered: Rendered, values: dict[str, Any]) -> None:
    external = values["externalAuth"]
    annotations = rendered.named("Ingress", f"{RELEASE}-api")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "auth-url"] == _verify_url(values)
    # X-Original-URI is sent only when an auth method is set.
    assert annotations[prefix + "auth-method"] == "GET"
    copied = annotations[prefix + "auth-response-headers"].split(",")
    assert copied[:3] == _AUTH_HEADERS
    assert "Cookie" in copied, "the browser's Cookie must not reach Kryptos"
    data_api = urlsplit(values["config"]["dataApiUrl"] or _CHART_DEFAULT_DATA_API)
    assert annotations[prefix + "backend-protocol"] == data_api.scheme.upper()
    assert annotations[prefix + "upstream-vhost"] == data_api.netloc
    ca = external["ingressNginx"]["upstreamCASecret"]
    if data_api.scheme == "https" and ca:
        assert annotations[prefix + "proxy-ssl-verify"] == "on"
        assert annotations[prefix + "proxy-ssl-secret"] == f"default/{ca}"
        assert annotations[prefix + "proxy-ssl-name"] == data_api.hostname
        assert annotations[prefix + "proxy-ssl-server-name"] == "on"
    if not external["ingressNginx"]["hideUpstreamSetCookie"]:
        assert not any(name.endswith("-snippet") for name in annotations), "snippets are off in ingress-nginx"
    for name, value in external["annotations"].items():
        assert annotations[name] == value
    deny = rendered.named("Ingress", f"{RELEASE}-verify-deny")["metadata"]["annotations"]
    assert deny[prefix + "denylist-source-range"] == "0.0.0.0/0,::/0"


def _check_traefik(rendered: Rendered, values: dict[str, Any]) -> None:
    middlewares = {m["metadata"]["name"]: m["spec"] for m in rendered.of_api("traefik.io/v1alpha1", "Middleware")}
    forward = middlewares[f"{RELEASE}-verify"]["forwardAuth"]
    assert forward["address"] == _verify_url(values)
    assert forward["authResponseHeaders"] == _AUTH_HEADERS
    # Traefik sets X-Forwarded-Method / -Uri itself; trusting the client's would let it name the request. A
    # client's X-Original-Method / -URI would name a second one (bff refuses that; they are not passed on).
    assert forward["trustForwardHeader"] is False
    passed = {name.lower() for name in forward["authRequestHeaders"]}
    assert {"cookie", "authorization", "x-csrf", "origin"} <= passed
    assert not any(name.startswith(("x-original-", "x-forwarded-")) for name in passed)
    headers = middlewares[f"{RELEASE}-api-headers"]["headers"]
    assert headers["customRequestHeaders"] == {"Cookie": ""}
    assert headers["customResponseHeaders"] == {"Set-Cookie": ""}

    annotations = rendered.named("Ingress", f"{RELEASE}-api")["metadata"]["annotations"]
    chain = annotations["traefik.ingress.kubernetes.io/router.middlewares"].split(",")
    assert chain[:2] == [f"default-{RELEASE}-verify@kubernetescrd", f"default-{RELEASE}-api-headers@kubernetescrd"]
    assert all(ref.removeprefix("default-").removesuffix("@kubernetescrd") in middlewares for ref in chain)
    data_api = urlsplit(values["config"]["dataApiUrl"] or _CHART_DEFAULT_DATA_API)
    kryptos = rendered.named("Service", f"{RELEASE}-kryptos-data")["metadata"]["annotations"]
    assert kryptos["traefik.ingress.kubernetes.io/service.serversscheme"] == data_api.scheme
    assert kryptos["traefik.ingress.kubernetes.io/service.passhostheader"] == "false"
    if data_api.path.rstrip("/") != "/api":
        rewrite = middlewares[f"{RELEASE}-api-path"]["replacePathRegex"]
        assert rewrite == {"regex": "^/api/v1/(.*)", "replacement": data_api.path.rstrip("/") + "/v1/$1"}

    deny = rendered.named("Ingress", f"{RELEASE}-verify-deny")["metadata"]["annotations"]
    [ref] = deny["traefik.ingress.kubernetes.io/router.middlewares"].split(",")
    allowed = middlewares[ref.removeprefix("default-").removesuffix("@kubernetescrd")]["ipAllowList"]["sourceRange"]
    assert allowed == ["127.0.0.1/32"]


def test_tracing_variables_reach_the_container(rendered: Rendered, values: dict[str, Any]) -> None:
    env = _env(rendered)
    tracing = values["tracing"]
    extra = {entry["name"] for entry in values["extraEnv"]}
    names = [entry["name"] for entry in rendered.container.get("env", [])]
    assert len(names) == len(set(names)), "an env name given twice"
    if tracing["otlpEndpoint"]:
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == tracing["otlpEndpoint"]
    else:
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    for name, value in tracing["env"].items():
        if name not in extra:
            assert env[name] == {"name": name, "value": str(value)}
    on = tracing["otlpEndpoint"] or {"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} & set(tracing["env"])
    if on and "OTEL_SERVICE_NAME" not in extra:
        assert env["OTEL_SERVICE_NAME"]["value"] == (tracing["serviceName"] or RELEASE)
    if not on:
        assert {n for n in env if n.startswith("OTEL_")} <= extra, "tracing must stay off unless configured"
