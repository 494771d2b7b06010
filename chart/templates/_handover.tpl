{{/*
The webhook certificate a previous chart version rendered (0.1.0 did: Secret
tcr-assistant-webhook-server-cert with ca.crt, tls.crt and tls.key, and the caBundle in the
validating webhook configuration), handed over to the controller without a refused call.

Left out of the manifest, Helm would delete that Secret on `helm upgrade` and its patch would
remove the caBundle, while the old Pods still serve the old certificate. So while the live
Secret is this release's (Helm's release annotations name it, and it is labelled managed-by Helm
or carries the hand-over annotation), the chart renders it with its live data, the annotation
that hands it to the controller (tcr.tencentcloudcr.com/handed-over-to: tcr-assistant) and
helm.sh/resource-policy: keep, and renders the caBundle from its live value. The controller
serves and publishes that certificate as it is, and renews it in place when it is due. A
certificate the controller issued itself (label managed-by tcr-assistant, no release
annotations) is never rendered; `helm template` (lookup finds nothing) renders neither.

"tcr-addon.webhook.handover" is the live Secret's data (ca.crt, tls.crt, tls.key; never ca.key,
which stays out of Helm's release history) as YAML, or nothing.
*/}}
{{- define "tcr-addon.webhook.handover" -}}
{{- if and (include "tcr-addon.webhook.controllerCert" .) (not .Values.webhook.existingCertSecret) -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace "tcr-assistant-webhook-server-cert" -}}
{{- if $live -}}
{{- $labels := $live.metadata.labels | default dict -}}
{{- $annotations := $live.metadata.annotations | default dict -}}
{{- $data := $live.data | default dict -}}
{{- $release := and (eq (index $annotations "meta.helm.sh/release-name" | default "") .Release.Name) (eq (index $annotations "meta.helm.sh/release-namespace" | default "") .Release.Namespace) -}}
{{- $marked := or (eq (index $labels "app.kubernetes.io/managed-by" | default "") "Helm") (eq (index $annotations "tcr.tencentcloudcr.com/handed-over-to" | default "") "tcr-assistant") -}}
{{- if and $release $marked (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- toYaml (dict "ca.crt" (index $data "ca.crt") "tls.crt" (index $data "tls.crt") "tls.key" (index $data "tls.key")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The live caBundle of the ImagePullSecret webhook, while the certificate is handed over; else nothing. */}}
{{- define "tcr-addon.webhook.handoverCaBundle" -}}
{{- if include "tcr-addon.webhook.handover" . -}}
{{- $live := lookup "admissionregistration.k8s.io/v1" "ValidatingWebhookConfiguration" "" "tcr-assistant-validating-webhook-configuration" -}}
{{- range (($live | default dict).webhooks | default list) -}}
{{- if eq .name "vimagepullsecret.tcr.tencentcloudcr.com" -}}
{{- (.clientConfig | default dict).caBundle | default "" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
