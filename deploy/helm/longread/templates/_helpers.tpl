{{/* Names and labels shared by every template. */}}

{{- define "longread.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names are DNS labels: at most 63 characters; "-headless" must still fit. */}}
{{- define "longread.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "longread.selectorLabels" -}}
app.kubernetes.io/name: {{ include "longread.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "longread.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "longread.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "longread.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "longread.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "longread.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The kubelet must not SIGKILL before the gateway's drain is over: the drain delay, the grace
period, then a margin for the cut RPCs' statuses and the telemetry flush.
*/}}
{{- define "longread.terminationGracePeriodSeconds" -}}
{{- $drain := addf .Values.server.drainDelaySeconds .Values.server.graceSeconds | ceil | int }}
{{- add $drain .Values.server.terminationMarginSeconds }}
{{- end }}

{{- define "longread.secretEnv" -}}
{{- $secret := .secret }}
{{- range $env, $key := .spec.keys }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: {{ $.spec.optional }}
{{- end }}
{{- end }}
