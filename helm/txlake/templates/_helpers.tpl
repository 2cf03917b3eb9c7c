{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "txlake.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-txlake, or the release name if it already contains the chart name. */}}
{{- define "txlake.fullname" -}}
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

{{- define "txlake.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource of the release, except the component. */}}
{{- define "txlake.commonLabels" -}}
helm.sh/chart: {{ include "txlake.chart" . }}
app.kubernetes.io/name: {{ include "txlake.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: txlake
{{- end }}

{{/* Labels on the worker's resources. */}}
{{- define "txlake.labels" -}}
{{ include "txlake.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/* Labels that select the worker pods (never change them: Deployment selectors are immutable). */}}
{{- define "txlake.selectorLabels" -}}
app.kubernetes.io/name: {{ include "txlake.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Labels of one worker Deployment and its pods, by component: "worker" (the main Deployment: every
role, or the stream side with roles=split) or "tables" (the table side with roles=split).
Parameters: root, component.
*/}}
{{- define "txlake.componentLabels" -}}
{{ include "txlake.commonLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- define "txlake.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "txlake.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A label selector (matchLabels + matchExpressions) of every worker pod, either Deployment. */}}
{{- define "txlake.allWorkersSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ include "txlake.name" . }}
  app.kubernetes.io/instance: {{ .Release.Name }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [worker, tables]
{{- end }}

{{/* Name of the table side's Deployment (roles=split): <fullname>-tables. */}}
{{- define "txlake.tablesName" -}}
{{- printf "%s-tables" (include "txlake.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{- define "txlake.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "txlake.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "txlake.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret mounted at /run/secrets/txlake. */}}
{{- define "txlake.secretName" -}}
{{- default (include "txlake.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Name of the lake claim, or "" when the lake is not on a volume (S3). */}}
{{- define "txlake.lakeClaimName" -}}
{{- if .Values.lake.persistentVolumeClaim.claimName }}
{{- .Values.lake.persistentVolumeClaim.claimName }}
{{- else if and (not .Values.lake.s3.uri) .Values.lake.persistentVolumeClaim.create }}
{{- printf "%s-lake" (include "txlake.fullname" .) }}
{{- end }}
{{- end }}

{{/* KEDA bounds: min defaults to replicaCount, max to kafka.partitions. */}}
{{- define "txlake.keda.min" -}}
{{- if kindIs "invalid" .Values.keda.minReplicaCount }}{{ .Values.replicaCount | int }}{{ else }}{{ .Values.keda.minReplicaCount | int }}{{ end }}
{{- end }}
{{- define "txlake.keda.max" -}}
{{- if kindIs "invalid" .Values.keda.maxReplicaCount }}{{ .Values.kafka.partitions | int }}{{ else }}{{ .Values.keda.maxReplicaCount | int }}{{ end }}
{{- end }}
{{/* KEDA bounds of the table side (roles=split): min defaults to tables.replicaCount, max to tables.partitions. */}}
{{- define "txlake.tablesKeda.min" -}}
{{- if kindIs "invalid" .Values.tables.keda.minReplicaCount }}{{ .Values.tables.replicaCount | int }}{{ else }}{{ .Values.tables.keda.minReplicaCount | int }}{{ end }}
{{- end }}
{{- define "txlake.tablesKeda.max" -}}
{{- if kindIs "invalid" .Values.tables.keda.maxReplicaCount }}{{ .Values.tables.partitions | int }}{{ else }}{{ .Values.tables.keda.maxReplicaCount | int }}{{ end }}
{{- end }}

{{/*
Checks that stop a bad configuration at render time (included by the Deployment, so every
`helm install/upgrade/template` runs them).
*/}}
{{- define "txlake.validate" -}}
{{- if lt (int .Values.kafka.partitions) 1 }}
{{- fail "kafka.partitions must be >= 1: the partition count of the busiest feed topic" }}
{{- end }}
{{- if lt (int .Values.terminationGracePeriodSeconds) 60 }}
{{- fail (printf "terminationGracePeriodSeconds is %v: it must be >= 60 so the batch in flight can land after SIGTERM" .Values.terminationGracePeriodSeconds) }}
{{- end }}
{{- if and (not .Values.lake.s3.uri) (not .Values.lake.persistentVolumeClaim.claimName) (not .Values.lake.persistentVolumeClaim.create) }}
{{- fail "the lake needs a home: set lake.persistentVolumeClaim.claimName (an existing ReadWriteMany claim), lake.persistentVolumeClaim.create=true, or lake.s3.uri" }}
{{- end }}
{{- /* settings.json is generated from txlake's settings (python -m tools.chart_settings): the names
     of every setting and of the secret ones, so these guards follow the code. */ -}}
{{- $settings := .Files.Get "settings.json" | fromJson }}
{{- if not $settings.variables }}
{{- fail "settings.json is missing from the chart: run python -m tools.chart_settings" }}
{{- end }}
{{- range $name, $value := .Values.config }}
{{- $upper := upper $name }}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $name) }}
{{- fail (printf "config: %q is not a valid environment variable name" $name) }}
{{- end }}
{{- if has $upper $settings.secrets }}
{{- fail (printf "config: %s is a secret; set it in `secrets` or in the existingSecret (file %s), never in the ConfigMap" $name (lower (trimPrefix "TXLAKE_" $upper))) }}
{{- end }}
{{- if and (hasPrefix "TXLAKE_" $upper) (not (has $upper $settings.variables)) }}
{{- fail (printf "config: %s matches no txlake setting (sections and fields are separated by two underscores: TXLAKE_MYSQL__PORT); `txlake settings` lists them" $name) }}
{{- end }}
{{- $secretFields := get $settings.secretFields $upper }}
{{- if $secretFields }}
{{- $fields := $value }}
{{- if kindIs "string" $value }}{{ $fields = fromJson $value }}{{ end }}
{{- if kindIs "map" $fields }}
{{- range $field, $_ := $fields }}
{{- if has (upper $field) $secretFields }}
{{- fail (printf "config: %s sets %s, a secret; set it in `secrets` or in the existingSecret (file %s__%s), never in the ConfigMap" $name $field (lower (trimPrefix "TXLAKE_" $upper)) (lower $field)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq (upper $name) "TXLAKE_KAFKA__GROUP_INSTANCE_ID" }}
{{- fail "config: TXLAKE_KAFKA__GROUP_INSTANCE_ID would give every pod the same instance id, and two workers with one id fence each other out in turn; kafka.staticMembership sets it to each pod's name" }}
{{- end }}
{{- end }}
{{- if not (has .Values.roles (list "all" "split")) }}
{{- fail (printf "roles is %q: \"all\" (one Deployment runs every role) or \"split\" (stream landing and table derivation as two Deployments)" .Values.roles) }}
{{- end }}
{{- if eq .Values.roles "split" }}
{{- if lt (int .Values.tables.partitions) 1 }}
{{- fail "tables.partitions must be >= 1: the partition count of the deltas and table topics" }}
{{- end }}
{{- if .Values.tables.keda.enabled }}
{{- $min := include "txlake.tablesKeda.min" . | int }}
{{- $max := include "txlake.tablesKeda.max" . | int }}
{{- if gt $max (int .Values.tables.partitions) }}
{{- fail (printf "tables.keda.maxReplicaCount (%d) > tables.partitions (%d): each deltas and table partition goes to one tables worker, so replicas beyond the partition count would sit idle" $max (int .Values.tables.partitions)) }}
{{- end }}
{{- if gt $min $max }}
{{- fail (printf "tables.keda.minReplicaCount (%d) > tables.keda.maxReplicaCount (%d); with tables.keda.enabled the minimum defaults to tables.replicaCount" $min $max) }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- $min := include "txlake.keda.min" . | int }}
{{- $max := include "txlake.keda.max" . | int }}
{{- if gt $max (int .Values.kafka.partitions) }}
{{- fail (printf "keda.maxReplicaCount (%d) > kafka.partitions (%d): Kafka gives each partition to one consumer of the group, so replicas beyond the partition count would sit idle" $max (int .Values.kafka.partitions)) }}
{{- end }}
{{- if gt $min $max }}
{{- fail (printf "keda.minReplicaCount (%d) > keda.maxReplicaCount (%d); with keda.enabled the minimum defaults to replicaCount" $min $max) }}
{{- end }}
{{- end }}
{{- end }}
