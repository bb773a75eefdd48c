{{/* Names ---------------------------------------------------------------------------- */}}
{{- define "streamer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamer.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "connect") */}}
{{- define "streamer.componentName" -}}
{{- printf "%s-%s" (include "streamer.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels -------------------------------------------------------------------------- */}}
{{- define "streamer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamer.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "streamer.labels" -}}
helm.sh/chart: {{ include "streamer.chart" .root }}
{{ include "streamer.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: streamer
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image ---------------------------------------------------------------------------- */}}
{{- define "streamer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The ServiceAccount name of a component; call with (dict "root" $ "component" "router") */}}
{{- define "streamer.serviceAccountName" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.serviceAccount.create -}}
{{- default (include "streamer.componentName" .) $values.serviceAccount.name -}}
{{- else -}}
{{- default "default" $values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Config ---------------------------------------------------------------------------- */}}
{{- define "streamer.dynamodbEndpoint" -}}
{{- if .Values.config.dynamodbEndpoint -}}
{{- .Values.config.dynamodbEndpoint -}}
{{- else if .Values.dynamodbLocal.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "streamer.componentName" (dict "root" . "component" "dynamodb")) .Release.Namespace (int .Values.dynamodbLocal.port) -}}
{{- end -}}
{{- end -}}

{{- define "streamer.routerAddress" -}}
{{- printf "%s.%s.svc:%d" (include "streamer.componentName" (dict "root" . "component" "router")) .Release.Namespace (int .Values.router.grpcPort) -}}
{{- end -}}

{{- /* The processors' headless Service: its name resolves to every ready processor pod. */ -}}
{{- define "streamer.processorOfferAddress" -}}
{{- printf "%s-offers.%s.svc:%d" (include "streamer.componentName" (dict "root" . "component" "processor")) .Release.Namespace (int .Values.processor.grpcPort) -}}
{{- end -}}

{{- define "streamer.jwtSecretName" -}}
{{- default (include "streamer.componentName" (dict "root" . "component" "jwt")) .Values.jwt.existingSecret -}}
{{- end -}}

{{- define "streamer.awsSecretName" -}}
{{- default (include "streamer.componentName" (dict "root" . "component" "aws")) .Values.aws.existingSecret -}}
{{- end -}}

{{- define "streamer.hasAwsSecret" -}}
{{- if or .Values.aws.existingSecret (and .Values.aws.accessKeyId .Values.aws.secretAccessKey) -}}true{{- end -}}
{{- end -}}

{{- define "streamer.hasJwtSecret" -}}
{{- if or .Values.jwt.existingSecret .Values.jwt.secret .Values.jwt.publicKey -}}true{{- end -}}
{{- end -}}

{{/* Whether the Prometheus Operator's API is there (or forced on); call with the setting. */}}
{{- define "streamer.monitoringEnabled" -}}
{{- $setting := .setting | toString -}}
{{- if eq $setting "true" -}}true
{{- else if and (eq $setting "auto") (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}true
{{- end -}}
{{- end -}}

{{/* Pod-level pieces ------------------------------------------------------------------ */}}
{{/* Environment every service shares; call with (dict "root" $ "component" "connect" "httpPort" 9090) */}}
{{- define "streamer.commonEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: STREAMER_HTTP_PORT
  value: {{ .httpPort | quote }}
{{- if .root.Values.tls.enabled }}
- name: STREAMER_TLS_CERT_FILE
  value: /etc/streamer/tls/tls.crt
- name: STREAMER_TLS_KEY_FILE
  value: /etc/streamer/tls/tls.key
- name: STREAMER_TLS_CA_FILE
  value: /etc/streamer/tls/ca.crt
{{- end }}
{{- range $name, $value := (index .root.Values .component).extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "streamer.envFrom" -}}
- configMapRef:
    name: {{ include "streamer.fullname" . }}
{{- if include "streamer.hasAwsSecret" . }}
- secretRef:
    name: {{ include "streamer.awsSecretName" . }}
{{- end }}
{{- end -}}

{{/* Restart pods when the shared configuration or the secrets the chart writes change. */}}
{{- define "streamer.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end -}}

{{- define "streamer.httpProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "streamer.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and .Values.tls.enabled (ne .component "operator") }}
- name: tls
  mountPath: /etc/streamer/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "streamer.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and .Values.tls.enabled (ne .component "operator") }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Scheduling knobs of a component; call with its values. */}}
{{- define "streamer.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy peer: the pods of one component of this release. */}}
{{- define "streamer.peer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ .root.Release.Name }}
      app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Scope ------------------------------------------------------------------------------ */}}
{{- /* Namespaces the operator manages, as a JSON list; [] means every namespace. */ -}}
{{- define "streamer.operatorNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson .Values.operator.watchNamespaces -}}
{{- else if .Values.operator.clusterWide -}}
[]
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- /* The namespace router and processor read StreamerHandlers from; empty means all. */ -}}
{{- define "streamer.handlerNamespace" -}}
{{- if .Values.config.handlerNamespace -}}
{{- .Values.config.handlerNamespace -}}
{{- else if and .Values.operator.enabled (not .Values.operator.clusterWide) (not .Values.operator.watchNamespaces) -}}
{{- .Release.Namespace -}}
{{- else if and .Values.operator.enabled (eq (len .Values.operator.watchNamespaces) 1) -}}
{{- first .Values.operator.watchNamespaces -}}
{{- end -}}
{{- end -}}

{{- /* Secrets of the release no handler may use, as namespace/name, comma-separated. */ -}}
{{- define "streamer.reservedSecrets" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list (include "streamer.jwtSecretName" .) (include "streamer.awsSecretName" .) -}}
{{- if .Values.tls.existingSecret -}}{{- $names = append $names .Values.tls.existingSecret -}}{{- end -}}
{{- if .Values.callers.serviceToken.existingSecret -}}{{- $names = append $names .Values.callers.serviceToken.existingSecret -}}{{- end -}}
{{- $out := list -}}
{{- range $names -}}{{- $out = append $out (printf "%s/%s" $ns .) -}}{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{- /* ServiceAccounts of the release no handler may run as, as namespace/name. */ -}}
{{- define "streamer.reservedServiceAccounts" -}}
{{- $out := list -}}
{{- range $component := list "connect" "router" "processor" "operator" -}}
{{- $out = append $out (printf "%s/%s" $.Release.Namespace (include "streamer.serviceAccountName" (dict "root" $ "component" $component))) -}}
{{- end -}}
{{- join "," (without $out (printf "%s/default" $.Release.Namespace)) -}}
{{- end -}}

{{- /* A glob list as CEL regexes (a JSON list of ^...$ patterns). */ -}}
{{- define "streamer.globRegexes" -}}
{{- $out := list -}}
{{- range . -}}
{{- $re := regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" "." -}}
{{- $out = append $out (printf "^%s$" $re) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The service token secret (connect signs its Route calls, router verifies backends' tokens). */}}
{{- define "streamer.serviceTokenEnv" -}}
{{- with .Values.callers.serviceToken.existingSecret }}
- name: STREAMER_SERVICE_TOKEN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.callers.serviceToken.secretKey }}
{{- end }}
{{- end -}}
