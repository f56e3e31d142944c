{{/* The release's name, or <release>-openclaw when the release name lacks "openclaw". */}}
{{- define "openclaw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. Never on selectors: see openclaw.selectorLabels. */}}
{{- define "openclaw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/part-of: openclaw
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* One label: Flagger selects the primary copy by this one label, suffixed -primary. */}}
{{- define "openclaw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openclaw.fullname" . }}
{{- end -}}

{{- define "openclaw.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "openclaw.trainImage" -}}
{{- printf "%s:%s" .Values.retrain.image.repository (.Values.retrain.image.tag | default .Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "openclaw.stateClaim" -}}
{{- .Values.modelVolume.existingClaim | default (printf "%s-state" (include "openclaw.fullname" .)) -}}
{{- end -}}

{{/* The admin token: a reference to a Secret, never a value. */}}
{{- define "openclaw.adminTokenEnv" -}}
- name: OPENCLAW_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.adminToken.existingSecret }}
      key: {{ .Values.adminToken.key }}
{{- end -}}
