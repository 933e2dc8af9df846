{{/*
Shared helpers. Component templates get a context made by "emoserve.component":
  (dict "root" $ "name" "encoder" "c" .Values.encoder)
*/}}

{{/* The four components, gateway first. */}}
{{- define "emoserve.components" -}}
gateway encoder acoustic vocoder
{{- end -}}

{{/* The three model stages. */}}
{{- define "emoserve.stages" -}}
encoder acoustic vocoder
{{- end -}}

{{- define "emoserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; component objects append "-<component>" (kept within 63 characters). */}}
{{- define "emoserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "emoserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's objects: <fullname>-<component>. Context: component context. */}}
{{- define "emoserve.componentName" -}}
{{- printf "%s-%s" (include "emoserve.fullname" .root) .name -}}
{{- end -}}

{{/* Labels shared by every object of the release. */}}
{{- define "emoserve.commonLabels" -}}
helm.sh/chart: {{ include "emoserve.chart" . }}
app.kubernetes.io/name: {{ include "emoserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: emoserve
{{- end -}}

{{/* Selector labels of a component. Context: component context. */}}
{{- define "emoserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emoserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* All labels of a component's objects. Context: component context. */}}
{{- define "emoserve.labels" -}}
{{ include "emoserve.commonLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Image reference of a component (its own repository/tag override the shared ones). */}}
{{- define "emoserve.image" -}}
{{- $repository := .c.image.repository | default .root.Values.image.repository -}}
{{- $tag := .c.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* ServiceAccount name of a component. */}}
{{- define "emoserve.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- include "emoserve.componentName" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/*
Deep merge: sets every key of the second map into the first, recursing into maps present in both.
Unlike sprig's merge, false/0/"" in the second map do override. Argument: (list $dst $src).
*/}}
{{- define "emoserve.mergeInto" -}}
{{- $dst := index . 0 -}}
{{- range $key, $value := index . 1 -}}
{{- $current := get $dst $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- include "emoserve.mergeInto" (list $current $value) -}}
{{- else -}}
{{- $_ := set $dst $key (deepCopy $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The component's emoserve configuration as a dict: server.grace_period_s from drain.gracePeriodSeconds, then
the shared `config`, then the component's `config`; engine.cache_dir defaults to the engine cache volume when
one is mounted. Returned as YAML; use fromYaml to read it.
*/}}
{{- define "emoserve.config" -}}
{{- $config := dict "server" (dict "grace_period_s" .root.Values.drain.gracePeriodSeconds) -}}
{{- include "emoserve.mergeInto" (list $config .root.Values.config) -}}
{{- include "emoserve.mergeInto" (list $config .c.config) -}}
{{- if and (hasKey .c "engineCache") .c.engineCache.enabled -}}
{{- $engine := get $config "engine" | default dict -}}
{{- if not (hasKey $engine "cache_dir") -}}
{{- $_ := set $engine "cache_dir" .c.engineCache.mountPath -}}
{{- end -}}
{{- $_ := set $config "engine" $engine -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* SIGTERM to SIGKILL: preStop sleep + the server's drain grace period + a margin, whole seconds. */}}
{{- define "emoserve.terminationGracePeriod" -}}
{{- $config := include "emoserve.config" . | fromYaml -}}
{{- $grace := dig "server" "grace_period_s" 0 $config | float64 | ceil | int -}}
{{- add .root.Values.drain.preStopSleepSeconds $grace .root.Values.drain.marginSeconds -}}
{{- end -}}

{{/* Address of a stage as the gateway's --encoder/--acoustic/--vocoder option. Context: stage context. */}}
{{- define "emoserve.stageTarget" -}}
{{- $service := include "emoserve.componentName" . -}}
{{- $discovery := .root.Values.gateway.discovery -}}
{{- if eq $discovery "kubernetes" -}}
k8s://{{ $service }}.{{ .root.Release.Namespace }}:grpc
{{- else -}}
dns:///{{ $service }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain }}:{{ .root.Values.grpcPort }}
{{- end -}}
{{- end -}}

{{/* Whether a component's model comes through an init container into an emptyDir. */}}
{{- define "emoserve.modelDownloaded" -}}
{{- if has .root.Values.model.source (list "url" "bucket") -}}true{{- end -}}
{{- end -}}

{{/* "true" when a numeric value (possibly a json.Number from values) is above zero, else "". */}}
{{- define "emoserve.positive" -}}
{{- if gt (float64 (default 0 .)) 0.0 -}}true{{- end -}}
{{- end -}}
