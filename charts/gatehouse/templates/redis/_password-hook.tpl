{{/*
gatehouse.redis.passwordHookMetadata: metadata shared by the password hook's objects: they
exist while `helm install` / `helm upgrade` runs the Job, are replaced before the next run,
and deleted once it succeeds (a failed run's stay, to be read). Argo CD maps these
annotations to a PreSync hook. Call with (dict "ctx" $ "weight" "-1").
*/}}
{{- define "gatehouse.redis.passwordHookMetadata" -}}
name: {{ include "gatehouse.redis.passwordJobName" .ctx }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "gatehouse.labels" .ctx | nindent 2 }}
  app.kubernetes.io/component: redis-password
annotations:
  helm.sh/hook: pre-install,pre-upgrade
  helm.sh/hook-weight: {{ .weight | quote }}
  helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
