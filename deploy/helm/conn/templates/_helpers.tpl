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

{{/* The Secret of one service. Args: (list $ "executor") */}}
{{- define "conn.serviceSecretName" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $cfg := index $root.Values.services $svc -}}
{{- default (printf "%s-%s" (include "conn.fullname" $root) $svc) $cfg.existingSecret -}}
{{- end -}}

{{- define "conn.signingSecretName" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $cfg := index $root.Values.services $svc -}}
{{- default (printf "%s-%s-signing" (include "conn.fullname" $root) $svc) $cfg.signing.existingSecret -}}
{{- end -}}

{{/*
The secret keys each service may see (least privilege, issue "trust boundary" item 6): the
single source for both the chart's Secrets and the env that reads them.
*/}}
{{- define "conn.secretKeys" -}}
{{- $svc := . -}}
{{- $keys := list "KAFKA_SASL_USERNAME" "KAFKA_SASL_PASSWORD" -}}
{{- if has $svc (list "directive-api" "executor" "packager") -}}
{{- $keys = append $keys "DATABASE_URL" -}}
{{- end -}}
{{- if eq $svc "directive-api" -}}
{{- $keys = append $keys "CONN_PAGERDUTY_WEBHOOK_SECRET" -}}
{{- else if eq $svc "executor" -}}
{{- /* CONN_PROMETHEUS_TOKEN: its gathers read the metrics backend too (read-only) */ -}}
{{- $keys = concat $keys (list "CONN_UNLEASH_TOKEN" "CONN_KUBERNETES_TOKEN" "CONN_RECORD_WEBHOOK_HEADERS" "CONN_SIMULATOR_TOKEN" "CONN_PROMETHEUS_TOKEN") -}}
{{- else if eq $svc "verifier" -}}
{{- $keys = concat $keys (list "CONN_UNLEASH_TOKEN" "CONN_PROMETHEUS_TOKEN" "CONN_SIMULATOR_TOKEN") -}}
{{- end -}}
{{- join "," $keys -}}
{{- end -}}

{{/* The value of one secret key for one service (empty: not set). Args: (list $ svc key) */}}
{{- define "conn.secretValue" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $key := index . 2 -}}
{{- $s := $root.Values.secrets -}}
{{- $cfg := index $root.Values.services $svc -}}
{{- if eq $key "KAFKA_SASL_USERNAME" -}}{{ $cfg.kafkaSasl.username }}
{{- else if eq $key "KAFKA_SASL_PASSWORD" -}}{{ $cfg.kafkaSasl.password }}
{{- else if eq $key "DATABASE_URL" -}}{{ $root.Values.postgresql.url }}
{{- else if eq $key "CONN_PAGERDUTY_WEBHOOK_SECRET" -}}{{ $s.pagerdutyWebhookSecret }}
{{- else if eq $key "CONN_UNLEASH_TOKEN" -}}{{ ternary $s.verifierUnleashToken $s.unleashToken (eq $svc "verifier") }}
{{- else if eq $key "CONN_KUBERNETES_TOKEN" -}}{{ $s.kubernetesToken }}
{{- else if eq $key "CONN_RECORD_WEBHOOK_HEADERS" -}}{{ $s.recordWebhookHeaders }}
{{- else if eq $key "CONN_SIMULATOR_TOKEN" -}}{{ $s.simulatorToken }}
{{- else if eq $key "CONN_PROMETHEUS_TOKEN" -}}{{ $s.prometheusToken }}
{{- end -}}
{{- end -}}

{{- define "conn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-executor" (include "conn.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "conn.verifierServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-verifier" (include "conn.fullname" .)) .Values.serviceAccount.verifierName -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.verifierName -}}
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
{{- if or (hasKey $k.sasl "username") (hasKey $k.sasl "password") (hasKey (.Values.secrets | default dict) "existingSecret") -}}
{{- fail "kafka.sasl.username/password and secrets.existingSecret are gone: every service has its own Kafka principal and Secret (services.<name>.kafkaSasl, services.<name>.existingSecret); see deploy/OPERATIONS.md" -}}
{{- end -}}
{{- range $name, $svc := .Values.services -}}
{{- if and $svc.enabled (hasPrefix "SASL_" $k.securityProtocol) (not $svc.existingSecret) (not (and $svc.kafkaSasl.username $svc.kafkaSasl.password)) -}}
{{- fail (printf "services.%s.kafkaSasl.username and .password are required with kafka.securityProtocol=%s (each service is its own Kafka principal), or set services.%s.existingSecret" $name $k.securityProtocol $name) -}}
{{- end -}}
{{- if and $svc.enabled $.Values.signing.enabled (not $svc.signing.existingSecret) (not (and $svc.signing.privateKey $svc.signing.keyId)) -}}
{{- fail (printf "services.%s.signing.privateKey and .keyId are required with signing.enabled (each service signs its events with its own Ed25519 key; `conn keys` generates them), or set services.%s.signing.existingSecret and .keyId" $name $name) -}}
{{- end -}}
{{- if and $svc.enabled $.Values.signing.enabled (not $svc.signing.keyId) -}}
{{- fail (printf "services.%s.signing.keyId is required with signing.enabled" $name) -}}
{{- end -}}
{{- end -}}
{{- $jobSasl := $k.topics.job.kafkaSasl -}}
{{- if and $k.topics.create (hasPrefix "SASL_" $k.securityProtocol) (not $jobSasl.existingSecret) (not (and $jobSasl.username $jobSasl.password)) -}}
{{- fail (printf "kafka.topics.job.kafkaSasl.username and .password (or .existingSecret) are required with kafka.securityProtocol=%s: the topics Job is its own Kafka principal" $k.securityProtocol) -}}
{{- end -}}
{{- if and .Values.signing.enabled (not .Values.signing.keyring) -}}
{{- fail "signing.keyring is required with signing.enabled (the keyring every service verifies against: public keys, principals, permitted event types)" -}}
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
{{- if and $api.enabled (eq .Values.api.env "production") (not $api.existingSecret) -}}
{{- if not .Values.secrets.pagerdutyWebhookSecret -}}
{{- fail "secrets.pagerdutyWebhookSecret is required with api.env=production (the directive-api refuses placeholder secrets), or use services.directive-api.existingSecret" -}}
{{- end -}}
{{- if and (not .Values.secrets.apiTokens) (not .Values.api.jwks.url) -}}
{{- fail "the directive-api needs credentials: set secrets.apiTokens (a tokens file of sha256 hashes) or api.jwks.url, or use services.directive-api.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- range $name := list "directive-api" "executor" "packager" -}}
{{- $svc := index $.Values.services $name -}}
{{- if and $svc.enabled (not $svc.existingSecret) (not $.Values.postgresql.url) -}}
{{- fail (printf "postgresql.url is required (DATABASE_URL of %s), or set services.%s.existingSecret to a Secret holding DATABASE_URL" $name $name) -}}
{{- end -}}
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

{{/* Secret-backed env of one service: only the keys it may see. Args: (list $ "executor") */}}
{{- define "conn.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $secret := include "conn.serviceSecretName" (list $root $svc) -}}
{{- $names := $root.Values.envNames -}}
{{- range $key := splitList "," (include "conn.secretKeys" $svc) }}
{{- $env := $key -}}
{{- if eq $key "KAFKA_SASL_USERNAME" }}{{ $env = $names.kafkaSaslUsername }}{{ end -}}
{{- if eq $key "KAFKA_SASL_PASSWORD" }}{{ $env = $names.kafkaSaslPassword }}{{ end }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $key }}{{ if ne $key "DATABASE_URL" }}, optional: true{{ end }}}
{{- end }}
{{- end -}}
