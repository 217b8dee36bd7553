{{/*
A binary's Deployment, Service and PodDisruptionBudget. Args (dict):
  root      the chart's context ($)
  name      kev-producer | kev-enricher (the app.kubernetes.io/name every selector uses)
  container producer | enricher
  b         its values (.Values.producer or .Values.enricher)
  args      the binary's subcommand
  env       environment before b.env (a list)
  grace     terminationGracePeriodSeconds
  noToken   true: no ServiceAccount token mounted (the enricher talks only to Kafka)
  pdb       the PodDisruptionBudget's spec fields other than the selector (a dict)
  config    the rendered configuration file (for the checksum that rolls the pods)
*/}}
{{- define "kev.workload" -}}
{{- $root := .root -}}
{{- $b := .b -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app.kubernetes.io/name: {{ .name }}
    {{- include "kev.labels" $root | nindent 4 }}
spec:
  replicas: {{ $b.replicas }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ .name }}
        app.kubernetes.io/instance: {{ $root.Release.Name }}
      annotations:
        checksum/config: {{ .config | sha256sum }}
        {{- with $b.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ .name }}
      {{- if .noToken }}
      automountServiceAccountToken: false
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        # A Secret volume's files are root's; mounted owner-read-only (defaultMode 0400, as the
        # prod overlay and the chart mount credentials) they are readable by this user only
        # through this group, which the kubelet gives the volume with read.
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      terminationGracePeriodSeconds: {{ .grace }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $b.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $b.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $b.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $b.topologySpreadConstraints }}
      topologySpreadConstraints: {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .container }}
          image: {{ $b.image.repository }}:{{ $b.image.tag | default $root.Chart.AppVersion }}
          {{- with $b.image.pullPolicy }}
          imagePullPolicy: {{ . }}
          {{- end }}
          args: [{{ .args | quote }}]
          env:
            {{- toYaml (concat .env $b.env) | nindent 12 }}
          ports:
            - name: http
              containerPort: 8080
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
          # Ready once its dependencies answer (and, for the producer, while it leads or
          # stands by healthy); the body says what it waits on.
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
          resources:
            {{- toYaml $b.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: config
              mountPath: /etc/kev
              readOnly: true
            {{- with include "kev.secretMounts" (dict "root" $root "secret" $b.kafkaSecret) | trim }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ .name }}
        {{- with include "kev.secretVolumes" (dict "root" $root "secret" $b.kafkaSecret) | trim }}
        {{- . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app.kubernetes.io/name: {{ .name }}
    {{- include "kev.labels" $root | nindent 4 }}
spec:
  selector:
    app.kubernetes.io/name: {{ .name }}
  ports:
    - name: http
      port: 8080
      targetPort: http
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kev.labels" $root | nindent 4 }}
spec:
  {{- toYaml .pdb | nindent 2 }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
{{- end -}}
