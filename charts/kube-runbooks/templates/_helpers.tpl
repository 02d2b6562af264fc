{{- define "kube-runbooks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kube-runbooks.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kube-runbooks.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kube-runbooks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kube-runbooks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-runbooks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-runbooks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-runbooks.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ClusterRoles' rules: permissions.yaml, generated from the runbooks' declared permissions. */}}
{{- define "kube-runbooks.permissions" -}}
{{- .Files.Get "permissions.yaml" }}
{{- end }}

{{/* The permission profile (ServiceAccount suffix) of a scheduled runbook: apply-NAME, read-secrets or read. */}}
{{- define "kube-runbooks.profile" -}}
{{- $perms := include "kube-runbooks.permissions" .root | fromYaml }}
{{- if .spec.approvePlan }}
{{- printf "apply-%s" .name }}
{{- else if and .root.Values.rbac.readSecrets (has .name $perms.needSecrets) }}
{{- "read-secrets" }}
{{- else }}
{{- "read" }}
{{- end }}
{{- end }}

{{/* The names of the enabled schedules, one per line (empty: none). */}}
{{- define "kube-runbooks.enabledSchedules" -}}
{{- range $name, $spec := .Values.schedules.runbooks }}
{{- if $spec.enabled }}
{{ $name }}
{{- end }}
{{- end }}
{{- end }}
