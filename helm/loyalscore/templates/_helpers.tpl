{{- define "loyalscore.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "loyalscore.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "loyalscore.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "loyalscore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "loyalscore.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "loyalscore.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Pod security shared by the server and the trainer: non-root, read-only root. */}}
{{- define "loyalscore.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "loyalscore.commonEnv" -}}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
A probe of one health service: the kubelet's native gRPC probe, or, with TLS on (which the
kubelet's gRPC probe does not speak), `loyalscore health` over TLS from inside the pod.
*/}}
{{- define "loyalscore.probe" -}}
{{- $root := index . 0 -}}
{{- $service := index . 1 -}}
{{- if $root.Values.server.tls.secretName -}}
exec:
  command:
    - loyalscore
    - health
    - --server
    - https://localhost:{{ $root.Values.service.grpcPort }}
    - --tls-ca
    - /etc/loyalscore/tls/ca.crt
    {{- if $root.Values.server.tls.clientCertificates }}
    - --tls-cert
    - /etc/loyalscore/tls/tls.crt
    - --tls-key
    - /etc/loyalscore/tls/tls.key
    {{- end }}
    - --service
    - {{ $service }}
{{- else -}}
grpc:
  port: {{ $root.Values.service.grpcPort }}
  service: {{ $service }}
{{- end -}}
{{- end -}}
