{{/*
gatehouse.testPod: a helm test pod running the API image itself, restricted-compliant and
carrying the client label so the API NetworkPolicy admits it.
Call with (dict "ctx" $ "name" "<suffix>" "args" (list ...)).
*/}}
{{- define "gatehouse.testPod" -}}
{{- $ := .ctx -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ printf "%s-test-%s-%s" (include "gatehouse.fullname" $ | trunc 40 | trimSuffix "-") .name (randAlphaNum 5 | lower) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "gatehouse.labels" $ | nindent 4 }}
    app.kubernetes.io/component: test
    {{ $.Values.networkPolicy.clientLabel.key }}: {{ $.Values.networkPolicy.clientLabel.value | quote }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    sidecar.istio.io/inject: "false"
    linkerd.io/inject: disabled
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  serviceAccountName: {{ include "gatehouse.serviceAccountName" $ }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    {{- with include "gatehouse.podIdentity" (dict "identity" $.Values "fsGroup" false) | trim }}{{ . | nindent 4 }}{{ end }}
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: probe
      image: {{ include "gatehouse.image" $ | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      command:
        - python
      args:
        {{- toYaml .args | nindent 8 }}
      securityContext:
        {{- include "gatehouse.restrictedContainerSecurityContext" $ | nindent 8 }}
        {{- with include "gatehouse.podIdentity" (dict "identity" $.Values "fsGroup" false) | trim }}{{ . | nindent 8 }}{{ end }}
      resources:
        {{- toYaml $.Values.tests.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 16Mi
{{- end }}

{{/*
gatehouse.testBaseUrl: the API Service as the tests reach it.
*/}}
{{- define "gatehouse.testBaseUrl" -}}
{{- printf "http://%s:%v" (include "gatehouse.fullname" .) .Values.service.port }}
{{- end }}
