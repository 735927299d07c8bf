{{/* Names, labels, images and the generate-once secret helper. */}}

{{- define "coderforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "coderforge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "coderforge.labels" -}}
app.kubernetes.io/name: {{ include "coderforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coderforge
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "coderforge.selector" -}}
app.kubernetes.io/name: {{ include "coderforge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "coderforge.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.images.tag -}}
{{- printf "%s/coderforge-%s:%s" (trimSuffix "/" .root.Values.images.registry) .kind $tag -}}
{{- end -}}

{{- define "coderforge.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "coderforge.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{- define "coderforge.pullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The S3 credentials Secret: an existing one, or the one this chart generates. */}}
{{- define "coderforge.s3Secret" -}}
{{- default .Values.credentials.s3SecretName .Values.credentials.s3ExistingSecret -}}
{{- end -}}

{{- define "coderforge.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s-minio.%s.svc:9000" (include "coderforge.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "minio.enabled=false needs externalS3.endpoint" .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "coderforge.mlflowUrl" -}}
{{- printf "http://%s-mlflow.%s.svc:5000" (include "coderforge.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "coderforge.postgresSecret" -}}
{{- default (printf "%s-postgresql" (include "coderforge.fullname" .)) .Values.postgresql.existingSecret -}}
{{- end -}}

{{/*
Generate-once secret value: the base64 value already stored under `key` in Secret `name` of the
release namespace (so upgrades keep it), else a fresh random alphanumeric string.
Call with (dict "root" $ "name" "secret-name" "key" "key" "length" 40).
*/}}
{{- define "coderforge.keepOrGenerate" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}
