{{/* Chart name. */}}
{{- define "herder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-based prefix for every resource. */}}
{{- define "herder.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herder.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "herder.labels" -}}
helm.sh/chart: {{ include "herder.chart" . }}
app.kubernetes.io/name: {{ include "herder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herder
{{- end }}

{{/* Labels of the operator's Deployment, pods and metrics Service. */}}
{{- define "herder.operatorLabels" -}}
{{ include "herder.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "herder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "herder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herder.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "herder.peeringName" -}}
{{- default (printf "%s-operator" (include "herder.fullname" .)) .Values.operator.peering.name }}
{{- end }}

{{/* NetworkPolicy egress rules to Redis and DNS; called with .Values.networkPolicy. */}}
{{- define "herder.np.redisEgress" -}}
- to:
    {{- toYaml .redis.to | nindent 4 }}
  ports:
    {{- range .redis.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- if .dns.enabled }}
- to:
    {{- toYaml .dns.to | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- end }}

{{/* RBAC rules the operator needs in each namespace it watches (ClusterRole or Role). */}}
{{- define "herder.rbac.namespacedRules" -}}
# Herder: watch TaskQueues; kopf patches them (finalizers, its progress annotations).
- apiGroups: ["herder.dev"]
  resources: ["taskqueues"]
  verbs: ["get", "list", "watch", "patch"]
# Herder: status (phase, counts, conditions) is written through the status subresource.
- apiGroups: ["herder.dev"]
  resources: ["taskqueues/status"]
  verbs: ["get", "patch", "update"]
# Herder: one worker Deployment per TaskQueue, created, scaled and removed by the operator.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Herder: find idle worker pods and set controller.kubernetes.io/pod-deletion-cost on them.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# kopf and Herder: Kubernetes Events on TaskQueues.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
