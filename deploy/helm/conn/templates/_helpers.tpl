{{/* Names and labels. */}}
{{- define "conn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "conn.fullname" -}}
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

{{- define "conn.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "conn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: conn
{{- end -}}

{{- define "conn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The per-service image: <repository>-<service>:<tag> or @<digest>. Args: (list $ "executor") */}}
{{- define "conn.image" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $img := $root.Values.image -}}
{{- if $img.digest -}}
{{- printf "%s-%s@%s" $img.repository $svc $img.digest -}}
{{- else -}}
{{- printf "%s-%s:%s" $img.repository $svc (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "conn.secretName" -}}
{{- default (include "conn.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "conn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-executor" (include "conn.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the executor may act in: values of adapters.kubernetes.namespaces + extras. */}}
{{- define "conn.targetNamespaces" -}}
{{- $ns := list -}}
{{- range $region, $n := .Values.adapters.kubernetes.namespaces -}}
{{- $ns = append $ns $n -}}
{{- end -}}
{{- range .Values.rbac.extraNamespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- $ns | uniq | sortAlpha | join "," -}}
{{- end -}}

{{/*
Render-time guards. Included by every template that depends on them, so `helm template`
and `helm install` both fail with a clear message instead of rendering a broken release.
*/}}
{{- define "conn.validate" -}}
{{- $k := .Values.kafka -}}
{{- if not $k.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required (the external Kafka cluster, e.g. kafka-0.kafka:9093,kafka-1.kafka:9093)" -}}
{{- end -}}
{{- $protocols := list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL" -}}
{{- if not (has $k.securityProtocol $protocols) -}}
{{- fail (printf "kafka.securityProtocol must be one of %s, got %q" (join ", " $protocols) $k.securityProtocol) -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) (not $k.sasl.mechanism) -}}
{{- fail (printf "kafka.sasl.mechanism is required with kafka.securityProtocol=%s (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $k.securityProtocol) -}}
{{- end -}}
{{- if and $k.sasl.mechanism (not (has $k.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512"))) -}}
{{- fail (printf "kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q" $k.sasl.mechanism) -}}
{{- end -}}
{{- $parts := int $k.topics.eventsPartitions -}}
{{- if lt $parts 1 -}}
{{- fail "kafka.topics.eventsPartitions must be >= 1" -}}
{{- end -}}
{{- if lt (int $k.topics.replicationFactor) 1 -}}
{{- fail "kafka.topics.replicationFactor must be >= 1" -}}
{{- end -}}
{{- range $name, $svc := .Values.services -}}
{{- if and $svc.enabled $svc.consumesEvents (gt (int $svc.replicas) $parts) -}}
{{- fail (printf "services.%s.replicas=%d exceeds kafka.topics.eventsPartitions=%d: each replica is a consumer in one group on conn.events, so replicas beyond the partition count sit idle; raise the partition count at first install or lower the replicas" $name (int $svc.replicas) $parts) -}}
{{- end -}}
{{- end -}}
{{- $api := index .Values.services "directive-api" -}}
{{- if and $api.enabled (eq .Values.api.env "production") (not .Values.secrets.existingSecret) -}}
{{- if not .Values.secrets.pagerdutyWebhookSecret -}}
{{- fail "secrets.pagerdutyWebhookSecret is required with api.env=production (the directive-api refuses placeholder secrets), or use secrets.existingSecret" -}}
{{- end -}}
{{- if and (not .Values.secrets.apiTokens) (not .Values.api.jwks.url) -}}
{{- fail "the directive-api needs credentials: set secrets.apiTokens (a tokens file of sha256 hashes) or api.jwks.url, or use secrets.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.postgresql.url) -}}
{{- fail "postgresql.url is required (DATABASE_URL), or set secrets.existingSecret to a Secret holding DATABASE_URL" -}}
{{- end -}}
{{- end -}}

{{/* Kafka connection env shared by the services and the topics Job (non-secret part). */}}
{{- define "conn.kafkaCaEnv" -}}
{{- if .Values.kafka.tls.caSecret.name }}
- name: KAFKA_SSL_CAFILE
  value: /etc/conn/kafka-ca/{{ .Values.kafka.tls.caSecret.key }}
{{- end }}
{{- end -}}

{{- define "conn.kafkaCaVolumeMount" -}}
{{- if .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/conn/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "conn.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret.name }}
    items:
      - key: {{ .Values.kafka.tls.caSecret.key }}
        path: {{ .Values.kafka.tls.caSecret.key }}
{{- end }}
{{- end -}}

{{/* Secret-backed env, by key name; every key but DATABASE_URL is optional. */}}
{{- define "conn.secretEnv" -}}
{{- $secret := include "conn.secretName" . -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: DATABASE_URL}
{{- range $key := list "KAFKA_SASL_USERNAME" "KAFKA_SASL_PASSWORD" "CONN_UNLEASH_TOKEN" "CONN_PROMETHEUS_TOKEN" "CONN_KUBERNETES_TOKEN" "CONN_SIMULATOR_TOKEN" "CONN_RECORD_WEBHOOK_HEADERS" "CONN_PAGERDUTY_WEBHOOK_SECRET" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $key }}, optional: true}
{{- end }}
{{- end -}}
