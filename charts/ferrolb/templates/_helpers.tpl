{{/* Names, labels and derived settings shared by the templates. */}}

{{- define "ferrolb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: the release name, prefixed with the chart name unless
it already contains it. Kept to 52 characters so `-controller` still fits in 63.
*/}}
{{- define "ferrolb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferrolb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ferrolb.controller.name" -}}
{{- printf "%s-controller" (include "ferrolb.fullname" .) }}
{{- end }}

{{- define "ferrolb.speaker.name" -}}
{{- printf "%s-speaker" (include "ferrolb.fullname" .) }}
{{- end }}

{{- define "ferrolb.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "ferrolb.controller.name" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrolb.speaker.serviceAccountName" -}}
{{- if .Values.speaker.serviceAccount.create }}
{{- default (include "ferrolb.speaker.name" .) .Values.speaker.serviceAccount.name }}
{{- else }}
{{- required "speaker.serviceAccount.name is required when speaker.serviceAccount.create is false" .Values.speaker.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrolb.leaseName" -}}
{{- default (include "ferrolb.controller.name" .) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{- define "ferrolb.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Whether the speaker is deployed: asked for (the default), and bare metal. The
AWS provider has no speaker, so `speaker.enabled` means nothing there.
*/}}
{{- define "ferrolb.speaker.enabled" -}}
{{- if and .Values.speaker.enabled (eq .Values.provider "baremetal") }}true{{ end }}
{{- end }}

{{/* The class this install serves. */}}
{{- define "ferrolb.loadBalancerClass" -}}
{{- default (printf "ferrolb.io/%s" .Values.provider) .Values.loadBalancerClass }}
{{- end }}

{{/*
A duration the schema has checked (`500ms`, `15s`, `2m`) in milliseconds, for
comparing two of them.
*/}}
{{- define "ferrolb.durationMs" -}}
{{- if hasSuffix "ms" . }}{{ trimSuffix "ms" . | int64 }}
{{- else if hasSuffix "s" . }}{{ mul (trimSuffix "s" . | int64) 1000 }}
{{- else }}{{ mul (trimSuffix "m" . | int64) 60000 }}
{{- end }}
{{- end }}
