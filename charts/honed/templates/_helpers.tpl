{{/* Chart name, overridable. */}}
{{- define "honed.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. A release already named after the chart is not repeated
("honed", not "honed-honed"). Suffixes like "-operator" are added by callers, so the prefix is
cut to leave them room within 63 characters.
*/}}
{{- define "honed.fullname" -}}
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

{{- define "honed.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders, but the component. */}}
{{- define "honed.commonLabels" -}}
helm.sh/chart: {{ include "honed.chart" . }}
app.kubernetes.io/name: {{ include "honed.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: honed
{{- end }}

{{/* Labels of the operator and of what serves it (RBAC, Service, monitors). */}}
{{- define "honed.labels" -}}
{{ include "honed.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels that select the operator's pod; never change them on upgrade (selectors are immutable). */}}
{{- define "honed.selectorLabels" -}}
app.kubernetes.io/name: {{ include "honed.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "honed.operatorServiceAccountName" -}}
{{- if .Values.serviceAccount.operator.create }}
{{- default (printf "%s-operator" (include "honed.fullname" .)) .Values.serviceAccount.operator.name }}
{{- else }}
{{- required "serviceAccount.operator.name is required when serviceAccount.operator.create is false" .Values.serviceAccount.operator.name }}
{{- end }}
{{- end }}

{{- define "honed.optimizerServiceAccountName" -}}
{{- default (printf "%s-optimizer" (include "honed.fullname" .)) .Values.serviceAccount.optimizer.name }}
{{- end }}

{{/* "repository:tag" or "repository@digest"; the tag defaults to the chart's appVersion. */}}
{{- define "honed.image" -}}
{{- $image := index . 0 }}{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Watched namespaces, de-duplicated, in the order given. */}}
{{- define "honed.watchNamespaces" -}}
{{- .Values.operator.watchNamespaces | uniq | join "," }}
{{- end }}

{{/* Namespaces that get the optimizer ServiceAccount: the release's, the watched ones, the extra ones. */}}
{{- define "honed.optimizerNamespaces" -}}
{{- concat (list .Release.Namespace) .Values.operator.watchNamespaces .Values.serviceAccount.optimizer.extraNamespaces | uniq | join "," }}
{{- end }}

{{/*
HONED_POOLS: the pools as the operator's settings read them (image as one reference string).
Duplicate pool names would make `spec.targets[].pool` ambiguous, so they fail the render.
*/}}
{{- define "honed.poolsJson" -}}
{{- $root := . }}
{{- $pools := list }}
{{- $seen := dict }}
{{- range .Values.pools }}
{{- if hasKey $seen .name }}
{{- fail (printf "pools: the name %q is used twice; each pool needs its own name" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $pool := dict "name" .name "device" .device "image" (include "honed.image" (list .image $root)) "nodeSelector" (.nodeSelector | default dict) "tolerations" (.tolerations | default list) "resources" (.resources | default dict) }}
{{- if .image.pullPolicy }}
{{- $_ := set $pool "imagePullPolicy" .image.pullPolicy }}
{{- end }}
{{- if .servingResources }}
{{- $_ := set $pool "servingResources" .servingResources }}
{{- end }}
{{- if hasKey . "pricePerHour" }}
{{- $_ := set $pool "pricePerHour" .pricePerHour }}
{{- end }}
{{- $pools = append $pools $pool }}
{{- end }}
{{- $pools | toJson }}
{{- end }}

{{/*
What the operator does in a namespace it watches, and nothing more (docs/security.md explains
each rule). No access to Secrets: Jobs and Triton pods reference the artifact-store and model
credential Secrets by name, and the kubelet resolves them.
*/}}
{{- define "honed.operatorRules" -}}
# The resource it serves: kopf patches finalizers and its progress annotations on the object.
- apiGroups: [honed.dev]
  resources: [optimizedmodels]
  verbs: [get, list, watch, patch, update]
- apiGroups: [honed.dev]
  resources: [optimizedmodels/status]
  verbs: [get, patch, update]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [honed.dev]
  resources: [optimizedmodels/finalizers]
  verbs: [update]
# One optimization Job per target pool.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# Read-only: a failed Job's reason is in its pod's termination message, a waiting pod's in its
# conditions; the Triton pods say which version is ready.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Triton serving: its Deployment, Service and config.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# An Event at every transition (kopf posts through the core API; newer clients through events.k8s.io);
# list, watch: a Job without a pod is explained by its FailedCreate Event (Pod Security, quota).
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, list, watch]
{{- end }}

{{/* The Secret the pods read the store's credentials from ("" when none). */}}
{{- define "honed.artifactSecretName" -}}
{{- if .Values.artifactStore.secretName }}
{{- .Values.artifactStore.secretName }}
{{- else if .Values.artifactStore.credentials }}
{{- printf "%s-store" (include "honed.fullname" .) }}
{{- end }}
{{- end }}

{{/* The claim of a pvc:// artifact store ("" for other stores). */}}
{{- define "honed.artifactClaim" -}}
{{- if hasPrefix "pvc://" .Values.artifactStore.uri }}
{{- index (splitList "/" (trimPrefix "pvc://" .Values.artifactStore.uri)) 0 }}
{{- end }}
{{- end }}
