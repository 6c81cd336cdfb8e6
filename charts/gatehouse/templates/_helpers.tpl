{{/*
gatehouse.name: the chart name, or nameOverride; trimmed to 63 characters because
Kubernetes label values and DNS names stop there.
*/}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
gatehouse.fullname: the prefix of every resource name. <release>-<name>, or the release
name alone when it already contains the chart name, or fullnameOverride. Trimmed to 63
characters (DNS-1123 label limit); "-redis" is appended for Redis, so keep releases short.
*/}}
{{- define "gatehouse.fullname" -}}
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

{{/*
gatehouse.chart: name-version for the helm.sh/chart label ("+" is not allowed in labels).
*/}}
{{- define "gatehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
gatehouse.labels: common labels on every resource.
*/}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ include "gatehouse.chart" . }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
gatehouse.selectorLabels: name and instance, so two releases in one namespace never
select each other's pods. Each workload adds app.kubernetes.io/component (api, redis, test).
*/}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
gatehouse.serviceAccountName: the ServiceAccount the pods run as.
*/}}
{{- define "gatehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gatehouse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
gatehouse.image: the API image, repository@digest when a digest is set, else
repository:tag with the tag defaulting to the chart's appVersion.
*/}}
{{- define "gatehouse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
gatehouse.redis.fullname: name of the bundled Redis Deployment, Service and NetworkPolicy.
*/}}
{{- define "gatehouse.redis.fullname" -}}
{{- printf "%s-redis" (include "gatehouse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
gatehouse.redis.image: the Redis image, by digest when set.
*/}}
{{- define "gatehouse.redis.image" -}}
{{- with .Values.redis.image }}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}
{{- end }}

{{/*
gatehouse.configMapName: the ConfigMap the API reads, the chart's or existingConfigMap.
*/}}
{{- define "gatehouse.configMapName" -}}
{{- default (include "gatehouse.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
gatehouse.secretName: the Secret rendered by the chart (Redis password or external URL).
*/}}
{{- define "gatehouse.secretName" -}}
{{- include "gatehouse.fullname" . }}
{{- end }}

{{/*
gatehouse.renderSecret: "true" when the chart must render its own Secret.
*/}}
{{- define "gatehouse.renderSecret" -}}
{{- if and .Values.redis.enabled (not .Values.redis.auth.existingSecret) }}true
{{- else if and (not .Values.redis.enabled) (not .Values.externalRedis.existingSecret) }}true
{{- end }}
{{- end }}

{{/*
gatehouse.redis.passwordSecret: name and key of the Secret holding the bundled Redis
password, as "name:key".
*/}}
{{- define "gatehouse.redis.passwordSecretName" -}}
{{- default (include "gatehouse.secretName" .) .Values.redis.auth.existingSecret }}
{{- end }}
{{- define "gatehouse.redis.passwordSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{/*
gatehouse.redis.url: APP_REDIS_URL for the bundled Redis (no password: that comes from
APP_REDIS_PASSWORD).
*/}}
{{- define "gatehouse.redis.url" -}}
{{- printf "redis://%s:6379/0" (include "gatehouse.redis.fullname" .) }}
{{- end }}

{{/*
gatehouse.replicas: the number of pods the release runs, handed to the app as APP_REPLICAS.
*/}}
{{- define "gatehouse.replicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
gatehouse.forwardedAllowIps: the trusted proxy CIDRs, comma-joined for uvicorn.
*/}}
{{- define "gatehouse.forwardedAllowIps" -}}
{{- join "," .Values.proxy.trustedCIDRs }}
{{- end }}

{{/*
gatehouse.trustedHosts: config.trustedHosts plus, when asked, the Service's in-cluster names.
*/}}
{{- define "gatehouse.trustedHosts" -}}
{{- $hosts := .Values.config.trustedHosts }}
{{- if .Values.config.trustServiceHostnames }}
{{- $svc := include "gatehouse.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts = concat $hosts (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.config.clusterDomain)) }}
{{- end }}
{{- join "," (uniq $hosts) }}
{{- end }}

{{/*
gatehouse.restrictedContainerSecurityContext: the Pod Security "restricted" container
settings shared by every container of the chart (API, Redis, test pods).
*/}}
{{- define "gatehouse.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
gatehouse.validate: cross-field checks the schema cannot express; fails the render with
a message naming the values involved.
*/}}
{{- define "gatehouse.validate" -}}
{{- $s := .Values.shutdown }}
{{- if ge (add $s.preStopSleepSeconds $s.timeoutGracefulShutdownSeconds | int) ($s.terminationGracePeriodSeconds | int) }}
{{- fail (printf "shutdown: preStopSleepSeconds (%v) + timeoutGracefulShutdownSeconds (%v) must be less than terminationGracePeriodSeconds (%v)" $s.preStopSleepSeconds $s.timeoutGracefulShutdownSeconds $s.terminationGracePeriodSeconds) }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) }}
{{- fail "externalRedis: with redis.enabled=false set externalRedis.url or externalRedis.existingSecret" }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) }}
{{- fail "externalRedis: set redis.enabled=false to use an external Redis" }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.httpRoute.enabled }}
{{- fail "ingress.enabled and httpRoute.enabled: choose one way in" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs: at least one Gateway is needed when httpRoute.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail "autoscaling: minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- end }}
