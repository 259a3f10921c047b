{{/* Chart name, overridable. */}}
{{- define "heapsnap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: RELEASE-heapsnap, or RELEASE when it already contains the
chart name. Truncated to 52 characters so that suffixed names ("-heapsnapshots") still fit
the 63 characters of a label value.
*/}}
{{- define "heapsnap.fullname" -}}
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

{{- define "heapsnap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them after a release: selectors are immutable. */}}
{{- define "heapsnap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "heapsnap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "heapsnap.labels" -}}
helm.sh/chart: {{ include "heapsnap.chart" . }}
{{ include "heapsnap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: heapsnap
{{- end }}

{{- define "heapsnap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "heapsnap.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "heapsnap.leaseName" -}}
{{- default (include "heapsnap.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "heapsnap.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
A Role and its RoleBinding in one watched namespace, or a ClusterRole and its
ClusterRoleBinding when .namespace is empty (cluster-wide mode). Takes a dict:
root (the chart context), namespace, purpose (name suffix) and rules (YAML text).
*/}}
{{- define "heapsnap.roleAndBinding" -}}
{{- $root := .root }}
{{- $name := printf "%s-%s" (include "heapsnap.fullname" $root) .purpose }}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if .namespace }}Role{{ else }}ClusterRole{{ end }}
metadata:
  name: {{ $name }}
  {{- with .namespace }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- include "heapsnap.labels" $root | nindent 4 }}
rules:
  {{- .rules | trim | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if .namespace }}RoleBinding{{ else }}ClusterRoleBinding{{ end }}
metadata:
  name: {{ $name }}
  {{- with .namespace }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- include "heapsnap.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ if .namespace }}Role{{ else }}ClusterRole{{ end }}
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "heapsnap.serviceAccountName" $root }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
