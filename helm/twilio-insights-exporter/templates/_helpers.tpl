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

{{/*
"true" when the process listens for webhooks: always, but in Kinesis mode (kinesis.streamName),
where it reads the stream instead (--no-webhook.enabled) and nothing of the webhook is rendered:
no Service, no container port, no Ingress or HTTPRoute, no webhook step in the NOTES.
*/}}
{{- define "twilio-insights-exporter.webhookEnabled" -}}
{{- if not .Values.kinesis.streamName }}true{{ end -}}
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

{{/*
Where the web configuration (--web.config.file) and the metrics listener's TLS Secret are mounted:
beside the config directory, not inside it (a mount inside a read-only ConfigMap volume is fragile).
*/}}
{{- define "twilio-insights-exporter.webConfigDir" -}}
/etc/twilio-insights-exporter-web
{{- end }}

{{- define "twilio-insights-exporter.tlsDir" -}}
/etc/twilio-insights-exporter-tls
{{- end }}

{{- define "twilio-insights-exporter.webConfigTLS" -}}
{{- and .Values.webConfig.enabled .Values.webConfig.tls.enabled | ternary "true" "" -}}
{{- end }}

{{- define "twilio-insights-exporter.clientCertRequired" -}}
{{- if and (include "twilio-insights-exporter.webConfigTLS" .) (eq .Values.webConfig.tls.clientAuthType "RequireAndVerifyClientCert") }}true{{ end -}}
{{- end }}

{{- define "twilio-insights-exporter.webConfigBasicAuth" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.basicAuthUsers }}true{{ end -}}
{{- end }}

{{/*
The web configuration file, in the exporter-toolkit format the exporter reads.
*/}}
{{- define "twilio-insights-exporter.webConfig" -}}
{{- $wc := .Values.webConfig -}}
{{- $tlsDir := include "twilio-insights-exporter.tlsDir" . -}}
{{- $config := dict -}}
{{- if $wc.tls.enabled }}
{{- if not $wc.tls.secretName }}
{{- fail "webConfig.tls.enabled needs webConfig.tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key" }}
{{- end }}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" $tlsDir) "key_file" (printf "%s/tls.key" $tlsDir) "client_auth_type" $wc.tls.clientAuthType "min_version" $wc.tls.minVersion }}
{{- if ne $wc.tls.clientAuthType "NoClientCert" }}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" $tlsDir) }}
{{- end }}
{{- $_ := set $config "tls_server_config" $tls }}
{{- end }}
{{- with $wc.basicAuthUsers }}
{{- $_ := set $config "basic_auth_users" . }}
{{- end }}
{{- with $wc.headers }}
{{- $_ := set $config "http_server_config" (dict "headers" .) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
A probe of the metrics listener, as the web configuration lets it through: HTTPS with TLS (the
kubelet does not verify the certificate), a TCP check when client certificates are required (the
kubelet has none to show). /-/healthy and /-/ready never need basic-auth credentials.
Usage: include "twilio-insights-exporter.probe" (dict "probe" .Values.livenessProbe "root" $)
*/}}
{{- define "twilio-insights-exporter.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- if and (include "twilio-insights-exporter.webConfigTLS" .root) (hasKey $probe "httpGet") -}}
{{- if include "twilio-insights-exporter.clientCertRequired" .root -}}
{{- $port := $probe.httpGet.port -}}
{{- $probe = omit $probe "httpGet" -}}
{{- $_ := set $probe "tcpSocket" (dict "port" $port) -}}
{{- else -}}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" -}}
{{- end -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end }}
