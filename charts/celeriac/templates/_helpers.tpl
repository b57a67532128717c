{{/* Chart name, truncated to a DNS label. */}}
{{- define "celeriac.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart> unless the release already contains it. */}}
{{- define "celeriac.fullname" -}}
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

{{/* Name of the worker Deployment and its companions. */}}
{{- define "celeriac.workerName" -}}
{{- printf "%s-worker" (include "celeriac.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "celeriac.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "celeriac.labels" -}}
helm.sh/chart: {{ include "celeriac.chart" . }}
{{ include "celeriac.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: celeriac
{{- end }}

{{/* Selector labels shared by every component. */}}
{{- define "celeriac.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celeriac.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the workers. */}}
{{- define "celeriac.workerSelectorLabels" -}}
{{ include "celeriac.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/* Name of the Secret with the broker and store URLs. */}}
{{- define "celeriac.secretName" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else }}
{{- include "celeriac.fullname" . }}
{{- end }}
{{- end }}

{{- define "celeriac.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "celeriac.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; call with (dict "root" $ "override" $daemonImage). */}}
{{- define "celeriac.image" -}}
{{- $img := .root.Values.image }}
{{- $o := .override | default dict }}
{{- $repo := $o.repository | default $img.repository }}
{{- if and (not $o.repository) $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo ($o.tag | default $img.tag | default .root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Environment shared by every celeriac container: broker, store, namespace. */}}
{{- define "celeriac.commonEnv" -}}
{{- /* Files, not variables: a file keeps the passwords out of the
process's environment block, which /proc shows for the process's life. */}}
- name: AMQP_ADDR_FILE
  value: {{ printf "/etc/celeriac/credentials/%s" .Values.credentials.amqpAddrKey | quote }}
{{- if .Values.store.enabled }}
- name: REDIS_URL_FILE
  value: {{ printf "/etc/celeriac/credentials/%s" .Values.credentials.redisUrlKey | quote }}
{{- end }}
- name: CELERIAC_NAMESPACE
  value: {{ .Values.celeriacNamespace | quote }}
{{- include "celeriac.securityEnv" . }}
{{- end }}

{{/* TLS, signing and metrics-token files as the binaries' env vars; each
file comes from a Secret mounted by celeriac.securityVolumes. */}}
{{- define "celeriac.securityEnv" -}}
{{- $b := .Values.tls.broker }}
{{- $r := .Values.tls.redis }}
{{- if $b.existingSecret }}
{{- with $b.caKey }}
- name: CELERIAC_TLS_CA
  value: {{ printf "/etc/celeriac/tls/broker/%s" . | quote }}
{{- end }}
{{- if $b.certKey }}
- name: CELERIAC_TLS_CERT
  value: {{ printf "/etc/celeriac/tls/broker/%s" $b.certKey | quote }}
- name: CELERIAC_TLS_KEY
  value: {{ printf "/etc/celeriac/tls/broker/%s" $b.keyKey | quote }}
{{- end }}
{{- end }}
{{- if and $r.existingSecret .Values.store.enabled }}
{{- with $r.caKey }}
- name: CELERIAC_REDIS_TLS_CA
  value: {{ printf "/etc/celeriac/tls/redis/%s" . | quote }}
{{- end }}
{{- if $r.certKey }}
- name: CELERIAC_REDIS_TLS_CERT
  value: {{ printf "/etc/celeriac/tls/redis/%s" $r.certKey | quote }}
- name: CELERIAC_REDIS_TLS_KEY
  value: {{ printf "/etc/celeriac/tls/redis/%s" $r.keyKey | quote }}
{{- end }}
{{- end }}
{{- if .Values.signing.existingSecret }}
- name: CELERIAC_SIGNING_KEYS
  value: {{ printf "/etc/celeriac/signing/%s" .Values.signing.key | quote }}
{{- end }}
{{- end }}

{{/* Volume mounts of the credentials and of the Secrets named in tls and
signing. */}}
{{- define "celeriac.securityVolumeMounts" -}}
- name: credentials
  mountPath: /etc/celeriac/credentials
  readOnly: true
{{- if .Values.tls.broker.existingSecret }}
- name: tls-broker
  mountPath: /etc/celeriac/tls/broker
  readOnly: true
{{- end }}
{{- if and .Values.tls.redis.existingSecret .Values.store.enabled }}
- name: tls-redis
  mountPath: /etc/celeriac/tls/redis
  readOnly: true
{{- end }}
{{- if .Values.signing.existingSecret }}
- name: signing-keys
  mountPath: /etc/celeriac/signing
  readOnly: true
{{- end }}
{{- end }}

{{/* The volumes behind celeriac.securityVolumeMounts. */}}
{{- define "celeriac.securityVolumes" -}}
- name: credentials
  secret:
    secretName: {{ include "celeriac.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.credentials.amqpAddrKey }}
        path: {{ .Values.credentials.amqpAddrKey }}
      {{- if .Values.store.enabled }}
      - key: {{ .Values.credentials.redisUrlKey }}
        path: {{ .Values.credentials.redisUrlKey }}
      {{- end }}
{{- if .Values.tls.broker.existingSecret }}
- name: tls-broker
  secret:
    secretName: {{ .Values.tls.broker.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if and .Values.tls.redis.existingSecret .Values.store.enabled }}
- name: tls-redis
  secret:
    secretName: {{ .Values.tls.redis.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.signing.existingSecret }}
- name: signing-keys
  secret:
    secretName: {{ .Values.signing.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Work queue names on the broker, one per line. */}}
{{- define "celeriac.workQueues" -}}
{{- range .Values.worker.queues }}
{{ printf "%s.q.%s" $.Values.celeriacNamespace . }}
{{- end }}
{{- end }}

{{/* Checks of values that the schema cannot express. */}}
{{- define "celeriac.validate" -}}
{{- if not .Values.worker.queues }}
{{- fail "worker.queues must name at least one queue" }}
{{- end }}
{{- if and (not .Values.credentials.existingSecret) (not .Values.credentials.amqpAddr) }}
{{- fail "the chart has no default credentials: set credentials.existingSecret (a Secret with AMQP_ADDR and REDIS_URL, recommended) or credentials.amqpAddr" }}
{{- end }}
{{- if and .Values.store.enabled (not .Values.credentials.existingSecret) (not .Values.credentials.redisUrl) }}
{{- fail "the chart has no default credentials: set credentials.redisUrl or credentials.existingSecret (or store.enabled=false)" }}
{{- end }}
{{- range $which, $t := .Values.tls }}
{{- if and $t.existingSecret $t.certKey (not $t.keyKey) }}
{{- fail (printf "tls.%s.certKey needs tls.%s.keyKey (the client certificate's private key)" $which $which) }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.prometheusNamespaceSelector) (not .Values.networkPolicy.prometheusPodSelector) }}
{{- fail "networkPolicy.enabled needs networkPolicy.prometheusNamespaceSelector or prometheusPodSelector, else nothing may scrape the workers" }}
{{- end }}
{{- if and .Values.autoscaling.keda.enabled (eq .Values.autoscaling.keda.protocol "http") (not .Values.credentials.existingSecret) (not .Values.autoscaling.keda.managementUrl) }}
{{- fail "autoscaling.keda.protocol=http needs autoscaling.keda.managementUrl or a managementUrlKey in credentials.existingSecret" }}
{{- end }}
{{- range $name, $d := .Values.daemons }}
{{- if $d.enabled }}
{{- if and $d.flows $d.existingFlowsConfigMap }}
{{- fail (printf "daemons.%s: set flows or existingFlowsConfigMap, not both" $name) }}
{{- end }}
{{- range $file, $text := $d.flows }}
{{- $flow := fromYaml $text }}
{{- if or (hasKey $flow "Error") (not $flow) }}
{{- fail (printf "daemons.%s.flows.%s must be the YAML text of a flow (a mapping): %s" $name $file ($flow.Error | default "it is empty")) }}
{{- end }}
{{- end }}
{{- if eq $name "beat" }}
{{- if not $.Values.store.enabled }}
{{- fail "daemons.beat needs store.enabled: beat replicas claim each tick in the store (REDIS_URL)" }}
{{- end }}
{{- if and (not $d.flows) (not $d.existingFlowsConfigMap) (le (len ($d.args | default list)) 1) }}
{{- fail "daemons.beat has no flows to schedule: set daemons.beat.flows, daemons.beat.existingFlowsConfigMap, or flow paths in daemons.beat.args" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap a daemon's flows are mounted from: the chart's
(daemons.<name>.flows), daemons.<name>.existingFlowsConfigMap, or empty.
Call with (dict "root" $ "name" $name "daemon" $d). */}}
{{- define "celeriac.flowsConfigMap" -}}
{{- if .daemon.existingFlowsConfigMap }}
{{- .daemon.existingFlowsConfigMap }}
{{- else if .daemon.flows }}
{{- printf "%s-%s-flows" (include "celeriac.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
