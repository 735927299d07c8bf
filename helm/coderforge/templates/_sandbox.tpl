{{/* The sandbox's privileges for KFP task pods (templates/sandbox-policy.yaml). */}}

{{/*
The container securityContext the sandbox steps' containers get: values `sandbox.containerSecurityContext`
plus the user and seccomp settings of `sandbox.podSecurityContext` (a KFP pod's own pod-level settings stay
as KFP makes them, so they move to the container). Equal to
coderforge.images.privileges.DOCKER_SANDBOX.k8s_security_context() (tests/k8s/test_sandbox_policy.py).
*/}}
{{- define "coderforge.sandboxContainerContext" -}}
{{- $pod := pick .Values.sandbox.podSecurityContext "runAsNonRoot" "runAsUser" "runAsGroup" "seccompProfile" -}}
{{- toYaml (merge (deepCopy .Values.sandbox.containerSecurityContext) $pod) -}}
{{- end -}}

{{/*
The admissionregistration.k8s.io version the cluster serves MutatingAdmissionPolicy in: values
`sandbox.admissionPolicy.apiVersion`, else the first of v1 (Kubernetes >= 1.36), v1beta1 (1.34-1.35 with the
MutatingAdmissionPolicy feature gate), v1alpha1 (1.32-1.33, gate too) that Helm's capabilities list, else v1
when the Kubernetes version is >= 1.36 (an offline `helm template` lists no kinds), else empty: no policy.
*/}}
{{- define "coderforge.sandboxPolicyApiVersion" -}}
{{- $p := .Values.sandbox.admissionPolicy -}}
{{- $found := $p.apiVersion | default "" -}}
{{- range list "v1" "v1beta1" "v1alpha1" -}}
{{- if and (not $found) ($.Capabilities.APIVersions.Has (printf "admissionregistration.k8s.io/%s/MutatingAdmissionPolicy" .)) -}}
{{- $found = printf "admissionregistration.k8s.io/%s" . -}}
{{- end -}}
{{- end -}}
{{- if and (not $found) (semverCompare ">=1.36.0-0" .Capabilities.KubeVersion.Version) -}}
{{- $found = "admissionregistration.k8s.io/v1" -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{/*
A value as a CEL literal for an admission policy's mutation: maps become object initialisers of the Kubernetes
type at `type` (e.g. Object.spec.containers.securityContext{...}, nested fields Object....capabilities{...}),
lists CEL lists (elements of list fields keep the field's type), strings JSON-quoted (a valid CEL string),
booleans and whole numbers as they are. Call with (dict "type" "Object.spec..." "value" $v).
*/}}
{{- define "coderforge.celLiteral" -}}
{{- $type := .type -}}
{{- $v := .value -}}
{{- if kindIs "map" $v -}}
{{- $fields := list -}}
{{- range $key := keys $v | sortAlpha -}}
{{- $fields = append $fields (printf "%s: %s" $key (include "coderforge.celLiteral" (dict "type" (printf "%s.%s" $type $key) "value" (get $v $key)))) -}}
{{- end -}}
{{- printf "%s{%s}" $type (join ", " $fields) -}}
{{- else if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $v -}}
{{- $items = append $items (include "coderforge.celLiteral" (dict "type" $type "value" .)) -}}
{{- end -}}
{{- printf "[%s]" (join ", " $items) -}}
{{- else if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- if ne (float64 (int64 $v)) (float64 $v) -}}
{{- fail (printf "sandbox security context: %v is not a whole number" $v) -}}
{{- end -}}
{{- int64 $v -}}
{{- else -}}
{{- fail (printf "sandbox security context: cannot write %v (%s) in CEL" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}
