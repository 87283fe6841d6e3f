{{/* Names, labels and the few computed values every template shares. */}}

{{- define "volbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Release-scoped base name of every object: fullnameOverride, else <release>-<name> (just
<release> when it already contains the name). At most 50 characters: suffixes such as
"-flex-installer" keep names within 63.
*/}}
{{- define "volbridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "volbridge.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "volbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "volbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: volbridge
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "node"). */}}
{{- define "volbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "volbridge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "volbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* A sidecar's image: include with a sidecars.<name> map. */}}
{{- define "volbridge.sidecarImage" -}}
{{- printf "%s:%s" .image.repository .image.tag -}}
{{- end -}}

{{- define "volbridge.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "volbridge.fullname" .)) .Values.serviceAccount.controller.name -}}
{{- end -}}

{{- define "volbridge.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "volbridge.fullname" .)) .Values.serviceAccount.node.name -}}
{{- end -}}

{{/* The Secret the StorageClass and VolumeSnapshotClass name (the CSI `secrets`). */}}
{{- define "volbridge.cspSecretName" -}}
{{- if .Values.csp.existingSecret -}}
{{- .Values.csp.existingSecret -}}
{{- else -}}
{{- default (printf "%s-csp" (include "volbridge.fullname" .)) .Values.csp.secretName -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the daemons' volbridge.toml. */}}
{{- define "volbridge.configSecretName" -}}
{{- default (printf "%s-config" (include "volbridge.fullname" .)) .Values.daemonConfig.existingSecret -}}
{{- end -}}

{{- define "volbridge.localCspName" -}}
{{- printf "%s-csp" (include "volbridge.fullname" .) -}}
{{- end -}}

{{/* Where node-driver-registrar tells kubelet to find the plugin socket (a host path). */}}
{{- define "volbridge.pluginDir" -}}
{{- printf "%s/plugins/%s" .Values.kubeletDir .Values.driverName -}}
{{- end -}}

{{/*
The CSP credentials other than the password, as a YAML map of strings (empty keys left
out). With localCsp.enabled they point at the local CSP's Service (service mode).
*/}}
{{- define "volbridge.cspCredentials" -}}
{{- $c := dict -}}
{{- if .Values.localCsp.enabled -}}
{{- $_ := set $c "backend" (include "volbridge.localCspName" .) -}}
{{- $_ := set $c "username" .Values.localCsp.username -}}
{{- $_ := set $c "serviceName" (printf "%s.%s.svc" (include "volbridge.localCspName" .) .Release.Namespace) -}}
{{- $_ := set $c "servicePort" (toString .Values.localCsp.port) -}}
{{- else -}}
{{- with .Values.csp -}}
{{- $_ := set $c "backend" .backend -}}
{{- $_ := set $c "username" .username -}}
{{- if .serviceName }}{{ $_ := set $c "serviceName" .serviceName }}{{ end -}}
{{- if .servicePort }}{{ $_ := set $c "servicePort" (toString .servicePort) }}{{ end -}}
{{- if .path }}{{ $_ := set $c "path" .path }}{{ end -}}
{{- if .timeoutSeconds }}{{ $_ := set $c "timeoutSeconds" (toString .timeoutSeconds) }}{{ end -}}
{{- if .tlsInsecure }}{{ $_ := set $c "tlsInsecure" "true" }}{{ end -}}
{{- if .caBundle }}{{ $_ := set $c "caBundle" .caBundle }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Refuses value combinations the daemons could not start with, with a clear message. */}}
{{- define "volbridge.validate" -}}
{{- if .Values.localCsp.enabled -}}
{{- if or .Values.csp.existingSecret .Values.csp.backend .Values.csp.serviceName -}}
{{- fail "localCsp.enabled=true serves the volumes from the chart's local CSP: set localCsp.enabled=false to use csp.backend / csp.existingSecret" -}}
{{- end -}}
{{- else if .Values.csp.existingSecret -}}
{{- if not .Values.daemonConfig.existingSecret -}}
{{- fail "csp.existingSecret needs daemonConfig.existingSecret: a Secret whose key volbridge.toml sets default_backend and [backends.<name>] with the same credentials" -}}
{{- end -}}
{{- else -}}
{{- if not (and .Values.csp.backend .Values.csp.username .Values.csp.password) -}}
{{- fail "no CSP configured: set csp.backend, csp.username and csp.password (or csp.existingSecret), or localCsp.enabled=true to try volbridge without an array" -}}
{{- end -}}
{{- if and .Values.csp.serviceName (not .Values.csp.servicePort) -}}
{{- fail "csp.servicePort is required when csp.serviceName is set (service mode)" -}}
{{- end -}}
{{- end -}}
{{- if not (or .Values.controller.enabled .Values.node.enabled .Values.flex.enabled .Values.localCsp.enabled) -}}
{{- fail "nothing to deploy: enable controller, node, flex or localCsp" -}}
{{- end -}}
{{- end -}}

{{/* The CSI endpoint inside the pods: the socket directory is mounted at /csi. */}}
{{- define "volbridge.csiAddress" -}}/csi/csi.sock{{- end -}}

{{/* volbridge.toml for one role: include with (dict "ctx" $ "role" "node" "password" $pw). */}}
{{- define "volbridge.daemonToml" -}}
{{- $v := .ctx.Values -}}
# volbridge daemon config ({{ .role }}), rendered by the Helm chart.
default_backend = "csp"
default_volume_size = {{ $v.daemonConfig.defaultVolumeSize | toJson }}
[local_csp]
enabled = false
[node]
tool_timeout_seconds = {{ int $v.daemonConfig.toolTimeoutSeconds }}
reconcile_seconds = {{ int $v.daemonConfig.reconcileSeconds }}
protocols = {{ $v.daemonConfig.protocols | toJson }}
{{- if and (eq .role "node") $v.localCsp.enabled }}
local_roots = [{{ $v.localCsp.dataDir | toJson }}]
{{- end }}
# The default backend: the CSP of the chart's credentials Secret.
[backends.csp]
{{- $creds := include "volbridge.cspCredentials" .ctx | fromYaml }}
{{- range $k := keys $creds | sortAlpha }}
{{ $k }} = {{ get $creds $k | toString | toJson }}
{{- end }}
password = {{ .password | toJson }}
{{- end -}}

{{/* The metrics listener's container port and readiness probe (metrics.enabled). */}}
{{- define "volbridge.metricsPort" -}}
- name: metrics
  containerPort: {{ .Values.metrics.port }}
  protocol: TCP
{{- end -}}

{{- define "volbridge.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{- define "volbridge.readinessProbe" -}}
# /readyz: start-up reconciliation done and the default backend answering.
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}
