{{/*
Labels on every object: the base's part-of label (the ServiceMonitor selects the Services by
it) and Helm's own. Selectors use app.kubernetes.io/name only, as deploy/base does: the
prometheus rules and dashboard select on those names, and a Deployment's selector cannot
change once made.
*/}}
{{- define "kev.labels" -}}
app.kubernetes.io/part-of: kev
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The `kafka` settings of a binary, as JSON; args: dict "root" $ "secret" <its kafkaSecret>.
Mounted Secrets become file paths the binaries read (never values in the ConfigMap).
*/}}
{{- define "kev.kafkaSettings" -}}
{{- $v := .root.Values -}}
{{- $props := deepCopy $v.kafka.properties -}}
{{- if $v.kafka.caSecret -}}
{{- $_ := set $props "ssl.ca.location" "/var/run/secrets/kev/kafka-ca/ca.crt" -}}
{{- end -}}
{{- $kafka := dict "bootstrap_servers" $v.kafka.bootstrapServers -}}
{{- if $props -}}
{{- $_ := set $kafka "properties" $props -}}
{{- end -}}
{{- if .secret -}}
{{- $_ := set $kafka "secret_properties_dir" "/var/run/secrets/kev/kafka" -}}
{{- end -}}
{{- toJson $kafka -}}
{{- end -}}

{{/* The `registry` settings both binaries share, as JSON. */}}
{{- define "kev.registrySettings" -}}
{{- $r := .Values.registry -}}
{{- $registry := dict "url" $r.url -}}
{{- if $r.username -}}
{{- $_ := set $registry "username" $r.username -}}
{{- end -}}
{{- if $r.passwordSecret -}}
{{- $_ := set $registry "password_file" "/var/run/secrets/kev/registry/password" -}}
{{- end -}}
{{- if and $r.useKafkaCa .Values.kafka.caSecret -}}
{{- $_ := set $registry "ca_file" "/var/run/secrets/kev/kafka-ca/ca.crt" -}}
{{- end -}}
{{- toJson $registry -}}
{{- end -}}

{{/*
The producer's configuration file (README, "Configuration"): the chart's values, then
producer.config merged over them.
*/}}
{{- define "kev.producerConfig" -}}
{{- $v := .Values -}}
{{- $cfg := dict
  "cluster_id" $v.clusterId
  "kafka" (include "kev.kafkaSettings" (dict "root" . "secret" $v.producer.kafkaSecret) | fromJson)
  "registry" (include "kev.registrySettings" . | fromJson)
  "topic" (dict "name" $v.topics.raw "partitions" $v.topics.partitions "replication" $v.topics.replication)
  "leader_election" (dict "enabled" true "lease_name" $v.producer.leaseName)
  "http" (dict "listen" "0.0.0.0:8080")
  "log_json" $v.logJson -}}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.producer.config)) -}}
{{- end -}}

{{/* The enricher's configuration file: the chart's values, then enricher.config over them. */}}
{{- define "kev.enricherConfig" -}}
{{- $v := .Values -}}
{{- $cfg := dict
  "group_id" $v.enricher.groupId
  "kafka" (include "kev.kafkaSettings" (dict "root" . "secret" $v.enricher.kafkaSecret) | fromJson)
  "registry" (include "kev.registrySettings" . | fromJson)
  "topics" (dict "raw" $v.topics.raw "partitions" $v.topics.partitions "replication" $v.topics.replication)
  "http" (dict "listen" "0.0.0.0:8080")
  "log_json" $v.logJson -}}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.enricher.config)) -}}
{{- end -}}

{{/*
The Secret volumes of a binary; args: dict "root" $ "secret" <its kafkaSecret>. Each is
optional: a Secret not created yet leaves its directory empty, and the binary waits for it,
not ready, naming the missing file on /readyz and in its log (rather than the pod sitting in
ContainerCreating with the reason only in an Event).
*/}}
{{- define "kev.secretVolumes" -}}
{{- $v := .root.Values -}}
{{- if $v.kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $v.kafka.caSecret }}
    optional: true
{{- end }}
{{- if $v.registry.passwordSecret }}
- name: registry-credentials
  secret:
    secretName: {{ $v.registry.passwordSecret }}
    defaultMode: 256  # 0400: read by the owner only
    optional: true
{{- end }}
{{- if .secret }}
- name: kafka-credentials
  secret:
    secretName: {{ .secret }}
    defaultMode: 256  # 0400: read by the owner only
    optional: true
{{- end }}
{{- end -}}

{{/* The mounts of those volumes; same args. */}}
{{- define "kev.secretMounts" -}}
{{- $v := .root.Values -}}
{{- if .secret }}
- name: kafka-credentials
  mountPath: /var/run/secrets/kev/kafka
  readOnly: true
{{- end }}
{{- if $v.kafka.caSecret }}
- name: kafka-ca
  mountPath: /var/run/secrets/kev/kafka-ca
  readOnly: true
{{- end }}
{{- if $v.registry.passwordSecret }}
- name: registry-credentials
  mountPath: /var/run/secrets/kev/registry
  readOnly: true
{{- end }}
{{- end -}}

