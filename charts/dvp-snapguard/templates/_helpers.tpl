{{/*
Names. The prefix is at most 40 characters so that every name built from it
("<prefix>-validating", "<prefix>-certs-<revision>", ...) stays within 63.
*/}}
{{- define "dvp-snapguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "dvp-snapguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The webhook's Service; also the name prefix `snapguard webhook-config --name` gets. */}}
{{- define "dvp-snapguard.serviceName" -}}
{{- include "dvp-snapguard.fullname" . }}
{{- end }}

{{- define "dvp-snapguard.tlsSecretName" -}}
{{- include "dvp-snapguard.fullname" . }}-tls
{{- end }}

{{- define "dvp-snapguard.validatingName" -}}
{{- include "dvp-snapguard.fullname" . }}-validating
{{- end }}

{{- define "dvp-snapguard.mutatingName" -}}
{{- include "dvp-snapguard.fullname" . }}-mutating
{{- end }}

{{- define "dvp-snapguard.leaseName" -}}
{{- default (printf "%s-reconciler" (include "dvp-snapguard.fullname" .)) .Values.reconciler.leaseName }}
{{- end }}

{{- define "dvp-snapguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; a component is added per workload. */}}
{{- define "dvp-snapguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dvp-snapguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dvp-snapguard.labels" -}}
{{ include "dvp-snapguard.selectorLabels" . }}
helm.sh/chart: {{ include "dvp-snapguard.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "webhook") */}}
{{- define "dvp-snapguard.componentLabels" -}}
{{ include "dvp-snapguard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dvp-snapguard.componentSelectorLabels" -}}
{{ include "dvp-snapguard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dvp-snapguard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The policy file, as the ConfigMap holds it and the checksum annotations hash it. */}}
{{- define "dvp-snapguard.policyFile" -}}
apiVersion: snapguard.deckhouse.io/v1
kind: Policy
rules:
  {{- toYaml .Values.policy.rules | nindent 2 }}
exemptNamespaces:
  {{- toYaml .Values.policy.exemptNamespaces | nindent 2 }}
ruleErrors: {{ .Values.policy.ruleErrors }}
{{- end }}

{{/*
Security: no root, no privilege escalation, no capabilities, a read-only root
filesystem (writes go to the /tmp emptyDir) and the runtime's default seccomp profile.
*/}}
{{- define "dvp-snapguard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "dvp-snapguard.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Where the webhook reads its certificate (`serve --cert-dir`) and its policy. */}}
{{- define "dvp-snapguard.certDir" -}}/etc/snapguard/certs{{- end }}
{{- define "dvp-snapguard.policyDir" -}}/etc/snapguard/policy{{- end }}

{{/*
The pod of `snapguard certs maintain --once` (self-managed mode), shared by the Job
that runs at every install/upgrade and by the CronJob.
*/}}
{{- define "dvp-snapguard.certsPodSpec" -}}
serviceAccountName: {{ include "dvp-snapguard.fullname" . }}-certs
restartPolicy: OnFailure
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "dvp-snapguard.podSecurityContext" . | nindent 2 }}
{{- with .Values.webhook.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.webhook.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: certs
    image: {{ include "dvp-snapguard.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["snapguard"]
    args:
      - certs
      - maintain
      - --once
      - --secret
      - {{ include "dvp-snapguard.tlsSecretName" . }}
      - --namespace
      - {{ .Release.Namespace }}
      - --service
      - {{ include "dvp-snapguard.serviceName" . }}
      - --validating-webhook
      - {{ include "dvp-snapguard.validatingName" . }}
      - --mutating-webhook
      - {{ include "dvp-snapguard.mutatingName" . }}
      - --renew-before
      - {{ .Values.certificates.selfManaged.renewBefore | quote }}
    env:
      - name: TMPDIR
        value: /tmp
    resources:
      {{- toYaml .Values.certificates.selfManaged.resources | nindent 6 }}
    securityContext:
      {{- include "dvp-snapguard.containerSecurityContext" . | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
volumes:
  # Memory-backed: the CA key passes through here while certificates are made, and
  # must not reach the node's disk (the Secret is its only home).
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: 16Mi
{{- end }}
