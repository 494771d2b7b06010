{{/*
Helpers of the tcr-addon chart. Object names are fixed (the original add-on's names, see
docs/DESIGN.md "Names and markers"): one release per cluster.
*/}}

{{/* Chart name and version, as used in the helm.sh/chart label. */}}
{{- define "tcr-addon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the ServiceAccount the controller runs as (also used by the admission policy). */}}
{{- define "tcr-addon.controller.serviceAccountName" -}}
tcr-assistant-controller-manager
{{- end -}}

{{/* The Secret holding the passwords given inline in values (credentials-secret.yaml). */}}
{{- define "tcr-addon.credentialsSecretName" -}}
tcr-assistant-registry-credentials
{{- end -}}

{{/* The user name the API server gives the controller's ServiceAccount. */}}
{{- define "tcr-addon.controller.userName" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "tcr-addon.controller.serviceAccountName" .) -}}
{{- end -}}

{{/*
Selector labels of one component. Never change these: Deployment and DaemonSet selectors are
immutable. Call with (dict "context" $ "component" "controller").
*/}}
{{- define "tcr-addon.selectorLabels" -}}
app.kubernetes.io/name: {{ .context.Chart.Name }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Standard labels of every object. Call with (dict "context" $ "component" "controller");
component may be empty.
*/}}
{{- define "tcr-addon.labels" -}}
app.kubernetes.io/name: {{ .context.Chart.Name }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: tcr-addon
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
helm.sh/chart: {{ include "tcr-addon.chart" .context }}
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
metadata.labels plus metadata.annotations (commonAnnotations and the given extra map).
Call with (dict "context" $ "component" "x" "annotations" (dict ...)).
*/}}
{{- define "tcr-addon.metadata" -}}
labels:
  {{- include "tcr-addon.labels" . | nindent 2 }}
{{- $annotations := merge (dict) (.annotations | default dict) (.context.Values.commonAnnotations | default dict) }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Image reference. Call with (dict "context" $ "image" .Values.controller.image). */}}
{{- define "tcr-addon.image" -}}
{{- $tag := .image.tag | default .context.Chart.AppVersion | toString -}}
{{- $ref := printf "%s/%s" .image.registry .image.repository | trimPrefix "/" -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $ref $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{/* "true" when hosts-updater runs (auto: when global.hosts has entries). */}}
{{- define "tcr-addon.hostsUpdater.enabled" -}}
{{- $mode := .Values.hostsUpdater.enabled -}}
{{- if eq (toString $mode) "auto" -}}
{{- if .Values.global.hosts }}true{{ end -}}
{{- else if eq (toString $mode) "remove" -}}
{{- else if $mode -}}
true
{{- end -}}
{{- end -}}

{{/*
What hosts-updater does: "apply" (enabled), "remove" or "" (not installed). "remove" keeps the
DaemonSet with --remove, so every node's lines are taken off; it stays in that light mode until
re-enabled or uninstalled. hostsUpdater.enabled=remove asks for it by the values alone (so
`helm template` and GitOps tools render it); with plain helm, turning the updater off while its
DaemonSet still runs (lookup) does the same.
*/}}
{{- define "tcr-addon.hostsUpdater.mode" -}}
{{- if include "tcr-addon.hostsUpdater.enabled" . -}}
apply
{{- else if eq (toString .Values.hostsUpdater.enabled) "remove" -}}
remove
{{- else if lookup "apps/v1" "DaemonSet" .Release.Namespace "hosts-updater" -}}
remove
{{- end -}}
{{- end -}}

{{/*
"true" when the ValidatingAdmissionPolicy is rendered. Every Kubernetes the chart accepts (1.30+)
serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy, so it never depends on what
Helm can discover: `helm template` renders it too. `auto` (earlier default) means the same as true.
*/}}
{{- define "tcr-addon.vap.enabled" -}}
{{- $mode := .Values.validatingAdmissionPolicy.enabled -}}
{{- if or (eq (toString $mode) "auto") (eq (toString $mode) "true") -}}
true
{{- end -}}
{{- end -}}

{{/*
Pod security context of every Pod that runs the controller image (PSS "restricted").
*/}}
{{- define "tcr-addon.restrictedPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of every container that runs the controller image. */}}
{{- define "tcr-addon.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* "true" when the Pod webhook is registered (it is served by the same server as the validating one). */}}
{{- define "tcr-addon.podWebhook.enabled" -}}
{{- if and .Values.webhook.enabled .Values.podWebhook.enabled }}true{{ end -}}
{{- end -}}

{{/* "true" when the controller keeps the webhook's serving certificate (webhook on, no cert-manager). */}}
{{- define "tcr-addon.webhook.controllerCert" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) }}true{{ end -}}
{{- end -}}

{{/*
Validate what the JSON schema cannot say (exactly one of dockerPassword/dockerPasswordSecret,
unique names); fail with the key named.
*/}}
{{- define "tcr-addon.validateValues" -}}
{{- if and (gt (int .Values.controller.replicas) 1) (not .Values.controller.leaderElection.enabled) -}}
{{- fail (printf "controller.replicas: %d replicas need controller.leaderElection.enabled=true (without it every replica writes and they fight over the same objects); enable leader election or set replicas to 1" (int .Values.controller.replicas)) -}}
{{- end -}}
{{- $names := dict -}}
{{- range $i, $cr := .Values.global.imagePullSecretsCrs -}}
{{- $key := printf "global.imagePullSecretsCrs[%d]" $i -}}
{{- $sources := 0 -}}
{{- range $source := list $cr.dockerPassword $cr.dockerPasswordSecret $cr.dockerTokenFrom -}}
{{- if $source }}{{ $sources = add1 $sources }}{{ end -}}
{{- end -}}
{{- if gt $sources 1 -}}
{{- fail (printf "%s: set exactly one of dockerPassword, dockerPasswordSecret or dockerTokenFrom" $key) -}}
{{- end -}}
{{- if eq $sources 0 -}}
{{- fail (printf "%s.dockerPassword: required (or set dockerPasswordSecret: {name, key} to read it from a Secret in namespace %s, or dockerTokenFrom to mint it from the TCR API)" $key $.Release.Namespace) -}}
{{- end -}}
{{- if and $cr.dockerTokenFrom (hasKey $cr "dockerUsername") -}}
{{- fail (printf "%s.dockerUsername: leave it out with dockerTokenFrom (the TCR API names the user with each token)" $key) -}}
{{- end -}}
{{- if and (not $cr.dockerTokenFrom) (not (hasKey $cr "dockerUsername")) -}}
{{- fail (printf "%s.dockerUsername: required (the registry user name; it needs pull access)" $key) -}}
{{- end -}}
{{- if hasKey $names $cr.name -}}
{{- fail (printf "%s.name: %q is used by another entry; names must be unique" $key $cr.name) -}}
{{- end -}}
{{- $_ := set $names $cr.name true -}}
{{- range $item := splitList "," ($cr.serviceAccounts | default "" | toString) -}}
{{- if gt (len (trim $item)) 253 -}}
{{- fail (printf "%s.serviceAccounts: a ServiceAccount name has at most 253 characters (%q has %d)" $key (trunc 20 (trim $item)) (len (trim $item))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A value as a string; whole numbers (YAML numbers such as an unquoted account id, which Helm
reads as float64) are written without exponent or decimals.
*/}}
{{- define "tcr-addon.string" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
The policy-scanner findings (checkov) that stay by design, each with its reason, as
`checkov.io/skipN` annotations. Call with a list of "CHECK_ID=reason" strings; the result is YAML
(`fromYaml` it into the annotations of tcr-addon.metadata).
*/}}
{{- define "tcr-addon.scannerSkips" -}}
{{- range $i, $skip := . }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end -}}

{{/* Findings every Pod of the chart's own images keeps: image policy and digest. */}}
{{- define "tcr-addon.imageSkips" -}}
- "CKV_K8S_15=IfNotPresent on purpose: release tags are never moved; pin a digest with the image's digest value"
- "CKV_K8S_43=a digest is optional: set the image's digest value to pin one"
{{- end -}}
