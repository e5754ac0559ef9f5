{{/* Chart name, overridable. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<name>, or the release name when it already contains the name. */}}
{{- define "modeldeploy.fullname" -}}
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

{{/* helm.sh/chart label value. */}}
{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels of every resource. */}}
{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeldeploy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference. */}}
{{- define "modeldeploy.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}{{ $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Default runtime agent image passed to the operator. */}}
{{- define "modeldeploy.runtimeImage" -}}
{{- $r := .Values.defaultImages.runtime }}
{{- $repo := $r.repository }}
{{- if $r.registry }}{{ $repo = printf "%s/%s" $r.registry $r.repository }}{{ end }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $r.tag) }}
{{- end }}

{{/* Default runtime image of pods serving an LLM (agent + OpenAI-compatible endpoint). */}}
{{- define "modeldeploy.runtimeLLMImage" -}}
{{- $r := .Values.defaultImages.runtimeLLM }}
{{- $repo := $r.repository }}
{{- if $r.registry }}{{ $repo = printf "%s/%s" $r.registry $r.repository }}{{ end }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $r.tag) }}
{{- end }}

{{/*
RBAC rules for namespaced resources: exactly what the operator uses (see docs/install.md#rbac).
kopf stores its finalizer and progress annotations by patching the ModelDeployment itself.
*/}}
{{- define "modeldeploy.namespacedRules" -}}
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers subresource
# where the OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# prefetch Jobs of the shared model cache (spec.cache)
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- if .Values.integrations.keda.enabled }}
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.integrations.prometheusOperator.enabled }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# No Secrets in the namespaces it manages: pods reference storage credentials by name, Triton's
# control key is made inside each pod, and manifest pushes are signed with the operator's one key
# (its Secret lives in the release namespace: "modeldeploy.pushKeyRules").
# ReplicaSets (read only): which rolling revisions' manifest ConfigMaps still have pods.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
# Events: posted on transitions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The operator's own Secret in the release namespace: the Ed25519 key it signs manifest pushes to the
runtime agents with (one key for every ModelDeployment). It reads that one Secret by name and
creates it on first start (create cannot be limited by name); nothing else on Secrets.
*/}}
{{- define "modeldeploy.pushKeyRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["modeldeploy-push-key"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}

{{/* Name of cluster-scoped objects: unique per release namespace, so two releases never clash. */}}
{{- define "modeldeploy.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "modeldeploy.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped rules: kopf scans CRDs to resolve the resources it watches. */}}
{{- define "modeldeploy.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}
