{{/* Labels of every object. */}}
{{- define "podflow.labels" -}}
app.kubernetes.io/name: podflow
app.kubernetes.io/part-of: podflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Labels that select the agent pods (the same as the kustomize base). */}}
{{- define "podflow.agentSelector" -}}
app.kubernetes.io/name: podflow
app.kubernetes.io/component: agent
{{- end }}

{{- define "podflow.namespace" -}}
{{ .Values.namespace.name | default .Release.Namespace }}
{{- end }}

{{- define "podflow.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
What this chart cannot render yet fails with a message rather than being ignored. Included by
the DaemonSet, so every rendering runs it.
*/}}
{{- define "podflow.validate" -}}
{{- if eq .Values.store.backend "clickhouse" }}
{{- fail "store.backend=clickhouse is not implemented yet: the agents write an embedded DuckDB file on each node (store.backend=duckdb); a shared ClickHouse store comes with the hub of a later issue" }}
{{- else if ne .Values.store.backend "duckdb" }}
{{- fail (printf "store.backend=%s is unknown: use duckdb (clickhouse is not implemented yet)" .Values.store.backend) }}
{{- end }}
{{- if not (hasPrefix "/" .Values.store.path) }}
{{- fail (printf "store.path=%s must be an absolute path on the node" .Values.store.path) }}
{{- end }}
{{- if .Values.hub.enabled }}
{{- fail "hub.enabled=true: the hub is not implemented yet (a later issue); the agents write to store.path on each node" }}
{{- end }}
{{- if .Values.ui.enabled }}
{{- fail "ui.enabled=true needs a hub, which does not exist yet: each agent writes its own DuckDB file on its node, and one UI Deployment cannot serve files spread over every node. For one node run `podflow serve --store <store.path>` on it (deploy/README.md)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.enabled=true (the agents serve the metrics it scrapes)" }}
{{- end }}
{{- if .Values.auth.enabled }}
{{- fail "auth.enabled=true: access control belongs to the hub, which is not implemented yet (a later issue); auth.* are documented placeholders" }}
{{- end }}
{{- end }}
