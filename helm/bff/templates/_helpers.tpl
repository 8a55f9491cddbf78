{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "bff.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, prefixed to the chart name unless it already contains it. */}}
{{- define "bff.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bff.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bff.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bff.labels" -}}
helm.sh/chart: {{ include "bff.chart" . }}
{{ include "bff.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "bff.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bff.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bff.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Replicas that run at the least: what decides whether a PodDisruptionBudget makes sense. */}}
{{- define "bff.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end }}
{{- end }}

{{/* A string as is, or a list joined with the separator given as "sep". */}}
{{- define "bff.joinList" -}}
{{- if kindIs "slice" .value }}{{ join .sep .value }}{{ else }}{{ .value }}{{ end }}
{{- end }}

{{/*
Secrets: where each one comes from. The chart's own Secret (named fullname) is created when any value has to
be stored: the application secrets from values, or the Redis URL from values/mode fields.
*/}}
{{- define "bff.chartSecretName" -}}
{{- include "bff.fullname" . }}
{{- end }}

{{- define "bff.appSecretName" -}}
{{- default (include "bff.chartSecretName" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "bff.redisSecretName" -}}
{{- default (include "bff.chartSecretName" .) .Values.redis.existingSecret }}
{{- end }}

{{/* The key holding the Redis URL: existingSecretKey in a user's Secret, "redis-url" in the chart's. */}}
{{- define "bff.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{- define "bff.createSecret" -}}
{{- if or (not .Values.secrets.existingSecret) (not .Values.redis.existingSecret) }}true{{ end }}
{{- end }}

{{/* userinfo part of a Redis URL: ":<percent-encoded password>@" or nothing. */}}
{{- define "bff.redisAuth" -}}
{{- with .Values.redis.password }}:{{ urlquery . | replace "+" "%20" }}@{{ end }}
{{- end }}

{{/* The Redis URL stored in the chart's Secret: redis.url, or built from the mode fields. */}}
{{- define "bff.redisUrl" -}}
{{- $r := .Values.redis }}
{{- if $r.url }}
{{- $r.url }}
{{- else }}
{{- $tls := ternary "rediss" "redis" $r.tls.enabled }}
{{- $auth := include "bff.redisAuth" . }}
{{- if eq $r.mode "standalone" }}
{{- printf "%s://%s%s:%v/%v" $tls $auth $r.standalone.host ($r.standalone.port | int) ($r.db | int) }}
{{- else if eq $r.mode "sentinel" }}
{{- printf "%s+sentinel://%s%s/%s/%v" $tls $auth (join "," $r.sentinel.hosts) $r.sentinel.masterName ($r.db | int) }}
{{- else if eq $r.mode "cluster" }}
{{- printf "%s+cluster://%s%s" $tls $auth (join "," $r.cluster.nodes) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A NetworkPolicy peer (as a one-item list) from {namespaceSelector, podSelector}: an empty namespaceSelector
is left out, which means "the release namespace" rather than "every namespace".
*/}}
{{- define "bff.networkPeer" -}}
{{- $peer := dict "podSelector" (.podSelector | default dict) }}
{{- with .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end }}
{{- toYaml (list $peer) }}
{{- end }}

{{/* Mount points inside the container. */}}
{{- define "bff.secretsDir" -}}/etc/bff/secrets{{- end }}
{{- define "bff.redisCaFile" -}}/etc/bff/redis-ca/ca.crt{{- end }}

{{- define "bff.redisCaEnabled" -}}
{{- if or .Values.redis.tls.caSecret.name .Values.redis.tls.caConfigMap.name }}true{{ end }}
{{- end }}

{{/*
External authorization (externalAuth): where the Kryptos data API is, as JSON {scheme, host, port, path}.
config.dataApiUrl, or bff's own default when it is empty (bff.config.Settings.data_api_url; a test keeps the
two equal): the ingress must call the API bff refreshes tokens for.
*/}}
{{- define "bff.dataApi" -}}
{{- $url := urlParse (default "https://connect.kryptos.io/api" .Values.config.dataApiUrl) }}
{{- $hostPort := splitList ":" $url.host }}
{{- $port := ternary 443 80 (eq $url.scheme "https") }}
{{- if gt (len $hostPort) 1 }}{{ $port = index $hostPort 1 | int }}{{ end }}
{{- toJson (dict "scheme" $url.scheme "host" (first $hostPort) "port" $port "path" (trimSuffix "/" $url.path)) }}
{{- end }}

{{/* The host the API Ingress serves: externalAuth.host, else the host of config.publicUrl. */}}
{{- define "bff.externalAuth.host" -}}
{{- default (first (splitList ":" (urlParse .Values.config.publicUrl).host)) .Values.externalAuth.host }}
{{- end }}

{{/* What the controller asks before each API call: bff's Service, by its cluster DNS name. */}}
{{- define "bff.externalAuth.verifyUrl" -}}
{{- printf "http://%s.%s.svc.%s:%d/auth/verify" (include "bff.fullname" .) .Release.Namespace .Values.externalAuth.clusterDomain (.Values.externalAuth.verifyPort | int) }}
{{- end }}

{{/*
The upstream path for /api/v1/<rest>: "<data API path>/v1/<rest>". Empty when that is the same path (the
default, https://connect.kryptos.io/api), so no rewrite is rendered: an ingress-nginx rewrite turns every path
of the host into a case-insensitive regular expression.
*/}}
{{- define "bff.externalAuth.rewrite" -}}
{{- $api := include "bff.dataApi" . | fromJson }}
{{- if ne $api.path "/api" }}{{ $api.path }}/v1/$1{{ end }}
{{- end }}

{{- define "bff.externalAuth.tls" -}}
{{- toYaml (default .Values.ingress.tls .Values.externalAuth.tls) }}
{{- end }}

{{- define "bff.externalAuth.className" -}}
{{- default .Values.ingress.className .Values.externalAuth.className }}
{{- end }}

{{/*
Refuse to render an installation that cannot work, with a message saying what to set.
Included by the Deployment (and therefore by every `helm template` / `helm install`).
*/}}
{{- define "bff.validate" -}}
{{- $c := .Values.config }}
{{- if not $c.issuer }}
{{- fail "config.issuer is required: the Kryptos OIDC issuer URL (e.g. https://oauth.kryptos.io/oidc)." }}
{{- end }}
{{- if not $c.clientId }}
{{- fail "config.clientId is required: the OAuth client id registered at Kryptos." }}
{{- end }}
{{- if not $c.publicUrl }}
{{- fail "config.publicUrl is required: the external origin of the app, e.g. https://app.example.com (the redirect URI is {publicUrl}/auth/callback)." }}
{{- end }}
{{- if and $c.sessionIdleTimeout $c.sessionMaxLifetime (lt (int $c.sessionMaxLifetime) (int $c.sessionIdleTimeout)) }}
{{- fail "config.sessionMaxLifetime must not be shorter than config.sessionIdleTimeout." }}
{{- end }}
{{- range $name, $_ := $c.extraEnv }}
{{- if has $name (list "BFF_CLIENT_SECRET" "BFF_SESSION_SECRETS" "BFF_ENCRYPTION_KEYS" "BFF_REDIS_URL") }}
{{- fail (printf "config.extraEnv.%s would put a secret into the ConfigMap: use the secrets/redis sections (mounted as %s_FILE)." $name $name) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if and (has .name (list "BFF_CLIENT_SECRET" "BFF_SESSION_SECRETS" "BFF_ENCRYPTION_KEYS" "BFF_REDIS_URL")) (hasKey . "value") }}
{{- fail (printf "extraEnv %s must not carry a secret as a plain value: use the secrets/redis sections (mounted as %s_FILE)." .name .name) }}
{{- end }}
{{- end }}
{{- $s := .Values.secrets }}
{{- if $s.existingSecret }}
{{- if or $s.clientSecret $s.sessionSecrets $s.encryptionKeys }}
{{- fail "secrets.existingSecret is set together with secrets.clientSecret/sessionSecrets/encryptionKeys: use one or the other." }}
{{- end }}
{{- else }}
{{- if not $s.clientSecret }}
{{- fail "secrets.clientSecret is required (or set secrets.existingSecret to a Secret holding client-secret, session-secrets and encryption-keys)." }}
{{- end }}
{{- if not $s.sessionSecrets }}
{{- fail "secrets.sessionSecrets is required: one or more random cookie-signing keys, newest first (or use secrets.existingSecret)." }}
{{- end }}
{{- if not $s.encryptionKeys }}
{{- fail "secrets.encryptionKeys is required: one or more keys encrypting sessions at rest, newest first (or use secrets.existingSecret)." }}
{{- end }}
{{- range $setting := list "sessionSecrets" "encryptionKeys" }}
{{- range splitList "," (include "bff.joinList" (dict "value" (index $s $setting) "sep" ",")) }}
{{- if lt (len (trim .)) 32 }}
{{- fail (printf "secrets.%s: every key must be at least 32 characters (generate one with: openssl rand -base64 48)." $setting) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $r := .Values.redis }}
{{- if and $r.existingSecret $r.url }}
{{- fail "redis.existingSecret and redis.url are both set: use one or the other." }}
{{- end }}
{{- if not (or $r.existingSecret $r.url) }}
{{- if eq $r.mode "standalone" }}
{{- if not $r.standalone.host }}
{{- fail "Redis is not configured: set redis.url, redis.existingSecret, or redis.standalone.host (or redis.mode sentinel/cluster with their fields)." }}
{{- end }}
{{- else if eq $r.mode "sentinel" }}
{{- if not $r.sentinel.hosts }}
{{- fail "redis.mode=sentinel needs redis.sentinel.hosts (host:port of each sentinel)." }}
{{- end }}
{{- if not $r.sentinel.masterName }}
{{- fail "redis.mode=sentinel needs redis.sentinel.masterName (the monitored master's service name)." }}
{{- end }}
{{- else if eq $r.mode "cluster" }}
{{- if not $r.cluster.nodes }}
{{- fail "redis.mode=cluster needs redis.cluster.nodes (host:port of one or more cluster nodes)." }}
{{- end }}
{{- else }}
{{- fail (printf "redis.mode must be standalone, sentinel or cluster, not %q." $r.mode) }}
{{- end }}
{{- end }}
{{- if and $r.tls.enabled $r.url (not (hasPrefix "rediss" $r.url)) }}
{{- fail "redis.tls.enabled is true but redis.url does not start with rediss:// (or rediss+sentinel://, rediss+cluster://)." }}
{{- end }}
{{- if and $r.tls.caSecret.name $r.tls.caConfigMap.name }}
{{- fail "redis.tls.caSecret and redis.tls.caConfigMap are both set: give the CA bundle once." }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled." }}
{{- end }}
{{- $x := .Values.externalAuth }}
{{- if $x.enabled }}
{{- if not $c.trustedProxies }}
{{- fail "externalAuth.enabled needs config.trustedProxies: /auth/verify answers only peers in BFF_TRUSTED_PROXIES (its answer carries the client secret), so set it to the ingress controller's pod CIDR, e.g. [10.42.0.0/16]." }}
{{- end }}
{{- $api := include "bff.dataApi" . | fromJson }}
{{- if not (has $api.scheme (list "http" "https")) }}
{{- fail (printf "externalAuth needs config.dataApiUrl to be an http(s) URL, not %q." (default "" .Values.config.dataApiUrl)) }}
{{- end }}
{{- range $name, $_ := $x.annotations }}
{{- if has $name (list "nginx.ingress.kubernetes.io/auth-cache-key" "nginx.ingress.kubernetes.io/auth-cache-duration") }}
{{- fail (printf "externalAuth.annotations.%s: never cache bff's answers; a logout (or an ended session) must take effect on the next call." $name) }}
{{- end }}
{{- if or (hasPrefix "nginx.ingress.kubernetes.io/auth-" $name) (has $name (list "nginx.ingress.kubernetes.io/upstream-vhost" "nginx.ingress.kubernetes.io/backend-protocol" "nginx.ingress.kubernetes.io/rewrite-target" "nginx.ingress.kubernetes.io/configuration-snippet" "traefik.ingress.kubernetes.io/router.middlewares")) }}
{{- fail (printf "externalAuth.annotations.%s is rendered by the chart from the externalAuth settings; it cannot be overridden." $name) }}
{{- end }}
{{- end }}
{{- if and (eq $x.controller "ingress-nginx") (eq $api.scheme "https") (not $x.ingressNginx.upstreamCASecret) (not $x.ingressNginx.insecureSkipUpstreamVerify) }}
{{- fail "externalAuth with ingress-nginx needs externalAuth.ingressNginx.upstreamCASecret: a Secret in the release namespace holding the CAs to verify Kryptos with under ca.crt (ingress-nginx otherwise verifies no upstream certificate while sending the client secret). Or set externalAuth.ingressNginx.insecureSkipUpstreamVerify=true." }}
{{- end }}
{{- end }}
{{- range $name, $_ := .Values.tracing.env }}
{{- if not (hasPrefix "OTEL_" $name) }}
{{- fail (printf "tracing.env.%s: only OTEL_* variables belong here (others go to extraEnv or config.extraEnv)." $name) }}
{{- end }}
{{- if has $name (list "OTEL_EXPORTER_OTLP_ENDPOINT" "OTEL_SERVICE_NAME") }}
{{- fail (printf "tracing.env.%s: use tracing.otlpEndpoint / tracing.serviceName." $name) }}
{{- end }}
{{- if has $name (list "OTEL_EXPORTER_OTLP_HEADERS" "OTEL_EXPORTER_OTLP_TRACES_HEADERS") }}
{{- fail (printf "tracing.env.%s usually carries a collector's API key: give it in extraEnv with valueFrom.secretKeyRef, not as a plain value." $name) }}
{{- end }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) }}
{{- fail "terminationGracePeriodSeconds must be longer than preStopSleepSeconds, leaving time to drain requests." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is greater than autoscaling.maxReplicas." }}
{{- end }}
{{- end }}
