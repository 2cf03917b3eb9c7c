{{/*
One worker Deployment. Parameters: root (the chart context), name, component (the pod label that
selects it: "worker" for the main one, "tables" for the table side when roles=split), role
(txlake worker --role), replicas, autoscaled (KEDA owns the replica count), resources.
*/}}
{{- define "txlake.deployment" }}
{{- $root := .root }}
{{- $component := .component }}
{{- $claim := include "txlake.lakeClaimName" $root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "txlake.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  {{- /*
  Replicas: Kafka assigns each partition of a topic to exactly one consumer of the group
  (TXLAKE_KAFKA__GROUP_ID), so pods beyond the partition count of the busiest topic
  (kafka.partitions) receive no partitions and sit idle. Scale partitions first, then replicas.
  With KEDA the ScaledObject owns the count, so the field is left out (a fixed value here would
  be reset on every upgrade).
  */}}
  {{- if not .autoscaled }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- toYaml $root.Values.strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "txlake.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "txlake.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Roll the pods when the settings or the chart-managed secret change.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if not $root.Values.existingSecret }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "txlake.serviceAccountName" $root }}
      # The worker never calls the Kubernetes API.
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      # SIGTERM -> txlake lands the batch in flight, commits and leaves the group; a sink may be
      # retrying (backoff up to 30 s), so give it time before SIGKILL (which is safe, only slower:
      # the batch is replayed).
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: txlake
          image: {{ include "txlake.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          # --role: what this Deployment runs (docs/kubernetes.md, "Two Deployments").
          args: ["worker", "--role", {{ .role | quote }}]
          ports:
            - name: http
              containerPort: {{ $root.Values.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "txlake.fullname" $root }}
          # Set by the chart (they follow the volumes and ports below); they win over envFrom.
          env:
            - name: TXLAKE_WEB__PORT
              value: {{ $root.Values.port | quote }}
            - name: TXLAKE_DATADIR
              value: /tmp/txlake
            - name: TXLAKE_SECRETS_DIR
              value: /run/secrets/txlake
            {{- if $root.Values.kafka.staticMembership }}
            # Static group membership: the pod name is unique and survives container restarts.
            - name: TXLAKE_KAFKA__GROUP_INSTANCE_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- end }}
            {{- if $root.Values.lake.s3.uri }}
            # The lake is in S3: the root is the URI (credentials: IRSA / the AWS chain, or the
            # Secret's lake__s3_access_key_id and lake__s3_secret_access_key).
            - name: TXLAKE_LAKE__ROOT
              value: {{ $root.Values.lake.s3.uri | quote }}
            {{- with $root.Values.lake.s3.endpointUrl }}
            - name: TXLAKE_LAKE__S3_ENDPOINT_URL
              value: {{ . | quote }}
            {{- end }}
            {{- with $root.Values.lake.s3.region }}
            - name: TXLAKE_LAKE__S3_REGION
              value: {{ . | quote }}
            {{- end }}
            {{- else if $claim }}
            - name: TXLAKE_LAKE__ROOT
              value: {{ $root.Values.lake.mountPath | quote }}
            {{- end }}
          startupProbe:
            httpGet:
              path: {{ $root.Values.probes.startup.path }}
              port: http
            initialDelaySeconds: {{ $root.Values.probes.startup.initialDelaySeconds }}
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.startup.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: {{ $root.Values.probes.liveness.path }}
              port: http
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: {{ $root.Values.probes.readiness.path }}
              port: http
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
            successThreshold: {{ $root.Values.probes.readiness.successThreshold }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: secrets
              mountPath: /run/secrets/txlake
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if $claim }}
            - name: lake
              mountPath: {{ $root.Values.lake.mountPath }}
            {{- end }}
      volumes:
        # Every key of the Secret becomes a file: mysql__password, anonymization__key, web__api_token, ...
        - name: secrets
          secret:
            secretName: {{ include "txlake.secretName" $root }}
            defaultMode: 0440
        # The root filesystem is read-only: Faust's datadir (/tmp/txlake) and temp files live here.
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- if $claim }}
        # The lake, shared by every pod (ReadWriteMany): partitions and their ledgers move between
        # pods on each rebalance.
        - name: lake
          persistentVolumeClaim:
            claimName: {{ $claim }}
        {{- end }}
      {{- if $root.Values.affinity }}
      affinity:
        {{- toYaml $root.Values.affinity | nindent 8 }}
      {{- else if $root.Values.podAntiAffinity }}
      affinity:
        podAntiAffinity:
          {{- if eq $root.Values.podAntiAffinity "hard" }}
          requiredDuringSchedulingIgnoredDuringExecution:
            - topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  {{- include "txlake.componentSelectorLabels" (dict "root" $root "component" $component) | nindent 18 }}
          {{- else }}
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "txlake.componentSelectorLabels" (dict "root" $root "component" $component) | nindent 20 }}
          {{- end }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
