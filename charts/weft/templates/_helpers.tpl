{{/* Chart name, truncated to 63 characters (a label value's limit). */}}
{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Object-name prefix. "weft" for a release named weft; "<release>-weft" otherwise. Truncated to
47 characters so that "<prefix>-controller-metrics" stays within 63.
*/}}
{{- define "weft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels. Call with (dict "ctx" $ "component" "controller"); component may be "". */}}
{{- define "weft.labels" -}}
helm.sh/chart: {{ include "weft.chart" .ctx }}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: weft
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels (immutable on Deployments and DaemonSets: never add to these). */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "weft.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "weft.controller.fullname" -}}
{{- printf "%s-controller" (include "weft.fullname" .) -}}
{{- end -}}

{{- define "weft.agent.fullname" -}}
{{- printf "%s-agent" (include "weft.fullname" .) -}}
{{- end -}}

{{- define "weft.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "weft.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "weft.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "weft.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Whether the metrics Services are rendered. */}}
{{- define "weft.metricsServices" -}}
{{- if or .Values.metricsService.enabled .Values.serviceMonitor.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The CNI network configuration (one line of JSON), in cni.cniVersion. The plugin's binary is
<binDir>/weft, so its type is "weft". "socket" is written only when the agent listens somewhere else than the
plugin's default (/run/weft/cni.sock).
*/}}
{{- define "weft.cniConfig" -}}
{{- $socket := "" -}}
{{- if ne .Values.agent.cniSocket "/run/weft/cni.sock" -}}
{{- $socket = printf ",\"socket\":%s" (toJson .Values.agent.cniSocket) -}}
{{- end -}}
{{- printf "{\"cniVersion\":%s,\"name\":\"weft\",\"plugins\":[{\"type\":\"weft\",\"network\":%s%s,\"capabilities\":{\"portMappings\":true,\"ips\":true,\"mac\":true}}]}" (toJson .Values.cni.cniVersion) (toJson .Values.cni.network) $socket -}}
{{- end -}}
