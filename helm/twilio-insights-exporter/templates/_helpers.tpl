{{/*
Expand the name of the chart.
*/}}
{{- define "twilio-insights-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming
spec). If release name contains chart name it will be used as a full name. The Services append
"-metrics"/"-webhook", so the full name is cut to 55 characters to leave room for them.
*/}}
{{- define "twilio-insights-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "twilio-insights-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "twilio-insights-exporter.labels" -}}
helm.sh/chart: {{ include "twilio-insights-exporter.chart" . }}
{{ include "twilio-insights-exporter.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: twilio-insights-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "twilio-insights-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twilio-insights-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "twilio-insights-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "twilio-insights-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: registry/repository, then @digest when pinned, else :tag (appVersion by default).
*/}}
{{- define "twilio-insights-exporter.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" . $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the Twilio credentials: the user's, or the one the chart creates.
*/}}
{{- define "twilio-insights-exporter.secretName" -}}
{{- default (include "twilio-insights-exporter.fullname" .) .Values.twilio.existingSecret }}
{{- end }}

{{- define "twilio-insights-exporter.metricsServiceName" -}}
{{- printf "%s-metrics" (include "twilio-insights-exporter.fullname" .) }}
{{- end }}

{{- define "twilio-insights-exporter.webhookServiceName" -}}
{{- printf "%s-webhook" (include "twilio-insights-exporter.fullname" .) }}
{{- end }}

{{/*
The URL Twilio calls, which is the URL it signs. Explicit value first; else the first Ingress host
(https when a TLS entry names it); else the first HTTPRoute hostname (TLS ends at the Gateway, and
Twilio requires https). Empty when the exporter is not exposed by this chart.
*/}}
{{- define "twilio-insights-exporter.publicUrl" -}}
{{- if .Values.webhook.publicUrl }}
{{- .Values.webhook.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := first .Values.ingress.hosts }}
{{- $scheme := "http" }}
{{- range .Values.ingress.tls }}
{{- if has $host (.hosts | default list) }}
{{- $scheme = "https" }}
{{- end }}
{{- end }}
{{- printf "%s://%s%s" $scheme $host .Values.webhook.path }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostnames }}
{{- printf "https://%s%s" (first .Values.httpRoute.hostnames) .Values.webhook.path }}
{{- end }}
{{- end }}

{{/*
Where the exporter's YAML configuration is mounted.
*/}}
{{- define "twilio-insights-exporter.configDir" -}}
/etc/twilio-insights-exporter
{{- end }}
