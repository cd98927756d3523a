{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "elastivol.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release-scoped prefix of every object name. */}}
{{- define "elastivol.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "elastivol.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "elastivol.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "elastivol.selectorLabels" -}}
app.kubernetes.io/name: {{ include "elastivol.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The CSI driver name of "block" or "file"; must equal what GetPluginInfo answers. */}}
{{- define "elastivol.driverName" -}}
{{- if eq . "block" -}}block.csi.elastivol.io{{- else if eq . "file" -}}file.csi.elastivol.io{{- else -}}{{- fail (printf "unknown driver %q: use block or file" .) -}}{{- end -}}
{{- end -}}

{{/* Provider and modes ------------------------------------------------------------------- */}}

{{- define "elastivol.validate" -}}
{{- if not (has .Values.provider (list "local" "aws")) -}}
{{- fail (printf "provider must be local or aws, not %q" .Values.provider) -}}
{{- end -}}
{{- if not (or .Values.drivers.block.enabled .Values.drivers.file.enabled) -}}
{{- fail "enable at least one driver: drivers.block.enabled or drivers.file.enabled" -}}
{{- end -}}
{{- if and (eq .Values.provider "aws") (not .Values.aws.zones) -}}
{{- fail "provider=aws needs aws.zones: the availability zones the controller serves (one node DaemonSet is rendered per zone)" -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the controller sidecars run on every node next to a node-local pool (local
provider), "" when they run in the controller Deployment (aws provider).
*/}}
{{- define "elastivol.nodeLocal" -}}
{{- if eq .Values.provider "local" -}}true{{- end -}}
{{- end -}}

{{/* "true" when the csi-snapshotter runs: the snapshot CRDs exist, or it is forced. */}}
{{- define "elastivol.snapshotter" -}}
{{- if or .Values.sidecars.snapshotter.forceEnable (.Capabilities.APIVersions.Has "snapshot.storage.k8s.io/v1/VolumeSnapshotClass") -}}true{{- end -}}
{{- end -}}

{{/* "true" when the csi-snapshotter also serves VolumeGroupSnapshots: the group snapshot CRDs exist (or it is forced).
Without the CRDs the sidecar must be told so (its CSIVolumeGroupSnapshot gate is on by default since v8.6): it would
wait for the missing kinds and serve no snapshot at all. */}}
{{- define "elastivol.groupSnapshots" -}}
{{- if and (include "elastivol.snapshotter" .) (or .Values.sidecars.snapshotter.forceEnableGroupSnapshots (.Capabilities.APIVersions.Has "groupsnapshot.storage.k8s.io/v1/VolumeGroupSnapshotClass")) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the node pods of a driver share the host's network (file driver on AWS: NFS). Input: dict root, driver. */}}
{{- define "elastivol.hostNetwork" -}}
{{- if and (eq .driver "file") (eq .root.Values.provider "aws") .root.Values.drivers.file.hostNetwork -}}true{{- end -}}
{{- end -}}

{{/* "true" when a resizer runs for at least one enabled driver. */}}
{{- define "elastivol.anyResizer" -}}
{{- $any := false -}}
{{- range $d := list "block" "file" -}}
{{- $cfg := index $.Values.drivers $d -}}
{{- if and $cfg.enabled $cfg.resizer.enabled -}}{{- $any = true -}}{{- end -}}
{{- end -}}
{{- if $any -}}true{{- end -}}
{{- end -}}

{{/* "true" when at least one sidecar runs with --leader-election (and needs the leases Role). */}}
{{- define "elastivol.leaderElection" -}}
{{- if or (eq .Values.provider "aws") .Values.drivers.block.enabled (include "elastivol.anyResizer" .) -}}true{{- end -}}
{{- end -}}

{{/* Service accounts ----------------------------------------------------------------------- */}}

{{- define "elastivol.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "elastivol.fullname" .)) .Values.serviceAccount.controllerName -}}
{{- end -}}

{{- define "elastivol.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "elastivol.fullname" .)) .Values.serviceAccount.nodeName -}}
{{- end -}}

{{/* The ServiceAccount that runs the controller sidecars (provisioner, attacher, ...). */}}
{{- define "elastivol.sidecarServiceAccount" -}}
{{- if include "elastivol.nodeLocal" . -}}{{ include "elastivol.nodeServiceAccount" . }}{{- else -}}{{ include "elastivol.controllerServiceAccount" . }}{{- end -}}
{{- end -}}

{{/* Images --------------------------------------------------------------------------------- */}}

{{- define "elastivol.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{- define "elastivol.sidecarImage" -}}
{{- printf "%s:%s" .image.repository (.image.tag | toString) -}}
{{- end -}}

{{/* Container pieces ------------------------------------------------------------------------ */}}

{{/* Downward-API environment every container may use in its args as $(NAME). */}}
{{- define "elastivol.podEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* A container that needs no privilege at all (all sidecars, the controller plugin). */}}
{{- define "elastivol.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
The plugin's command line. The image's ENTRYPOINT is `elastivol serve`; these are its flags.
Input: dict root, driver, mode (controller | node | all), endpoint, zone (node and all modes).
*/}}
{{- define "elastivol.pluginArgs" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- --driver={{ .driver }}
- --mode={{ .mode }}
- --provider={{ $v.provider }}
- --endpoint={{ .endpoint }}
{{- if ne .mode "controller" }}
- --node-id=$(NODE_NAME)
- --zone={{ .zone }}
- --allowed-root={{ $v.node.kubeletPath }}
- --max-volumes-per-node={{ int $v.node.maxVolumesPerNode }}
{{- end }}
{{- if eq .mode "controller" }}
- --zones={{ join "," $v.aws.zones }}
{{- end }}
{{- if eq $v.provider "local" }}
- --pool={{ $v.local.poolPath }}
- --overcommit-ratio={{ $v.local.overcommitRatio }}
{{- if and (eq .driver "block") (ne .mode "controller") }}
- {{ ternary "--enforce-performance" "--no-enforce-performance" (eq (toString $v.local.enforcePerformance) "true") }}
{{- end }}
{{- end }}
{{- if ne .mode "node" }}
{{- with $v.clusterId }}
- --cluster-id={{ . }}
{{- end }}
{{- if $v.extraVolumeTags }}
{{- $tags := list }}
{{- range $k := keys $v.extraVolumeTags | sortAlpha }}
{{- $tags = append $tags (printf "%s=%v" $k (index $v.extraVolumeTags $k)) }}
{{- end }}
- --extra-volume-tags={{ join "," $tags }}
{{- end }}
{{- end }}
- --socket-mode=0660
- --log-level={{ $v.logLevel }}
- --log-format={{ $v.logFormat }}
{{- if $v.metrics.enabled }}
- --metrics-address=0.0.0.0:{{ .metricsPort }}
{{- end }}
{{- end -}}

{{/*
The controller sidecars of one driver. Input: dict root, driver, csiAddress, nodeLocal.
With nodeLocal the provisioner and snapshotter run per node (--node-deployment) and the
attacher and resizer elect one leader cluster-wide; otherwise all elect a leader.
*/}}
{{- define "elastivol.controllerSidecars" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $s := $v.sidecars -}}
{{- $driverCfg := index $v.drivers .driver -}}
- name: csi-provisioner
  image: {{ include "elastivol.sidecarImage" $s.provisioner }}
  imagePullPolicy: {{ $s.provisioner.image.pullPolicy }}
  args:
    - --v={{ $s.logVerbosity }}
    - --csi-address={{ .csiAddress }}
    {{- /* No --feature-gates=Topology=true: Topology is GA and on by default since v5.0, and the
    provisioner uses it exactly when the plugin reports VOLUME_ACCESSIBILITY_CONSTRAINTS (block
    does; file, a regional file system, does not). */}}
    - --extra-create-metadata
    {{- if eq .driver "block" }}
    - --default-fstype={{ $s.provisioner.defaultFsType }}
    {{- end }}
    - --timeout={{ $s.provisioner.timeout }}
    - --worker-threads={{ $s.provisioner.workerThreads }}
    - --http-endpoint=:{{ $s.provisioner.httpPort }}
    {{- if .nodeLocal }}
    - --node-deployment=true
    {{- if eq .driver "block" }}
    {{- /* Topology and capacity flags only for the block driver: the file driver has no topology and
    no GetCapacity, so they would do nothing there. */}}
    - --strict-topology=true
    - --immediate-topology=false
    - --enable-capacity
    - --capacity-ownerref-level=1
    {{- end }}
    {{- else }}
    - --leader-election
    - --leader-election-namespace=$(NAMESPACE)
    {{- end }}
    {{- range $s.provisioner.extraArgs }}
    - {{ . }}
    {{- end }}
  env:
    {{- include "elastivol.podEnv" . | nindent 4 }}
  ports:
    - name: provisioner-http
      containerPort: {{ $s.provisioner.httpPort }}
      protocol: TCP
  {{- if not .nodeLocal }}
  livenessProbe:
    httpGet:
      path: /healthz/leader-election
      port: provisioner-http
    initialDelaySeconds: 10
    timeoutSeconds: 10
    periodSeconds: 20
    failureThreshold: 3
  {{- end }}
  volumeMounts:
    - name: socket-dir
      mountPath: /csi
  securityContext:
    {{- include "elastivol.restrictedSecurityContext" . | nindent 4 }}
  {{- with $s.provisioner.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if eq .driver "block" }}
- name: csi-attacher
  image: {{ include "elastivol.sidecarImage" $s.attacher }}
  imagePullPolicy: {{ $s.attacher.image.pullPolicy }}
  args:
    - --v={{ $s.logVerbosity }}
    - --csi-address={{ .csiAddress }}
    - --timeout={{ $s.attacher.timeout }}
    - --worker-threads={{ $s.attacher.workerThreads }}
    - --http-endpoint=:{{ $s.attacher.httpPort }}
    - --leader-election
    - --leader-election-namespace=$(NAMESPACE)
    {{- range $s.attacher.extraArgs }}
    - {{ . }}
    {{- end }}
  env:
    {{- include "elastivol.podEnv" . | nindent 4 }}
  ports:
    - name: attacher-http
      containerPort: {{ $s.attacher.httpPort }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz/leader-election
      port: attacher-http
    initialDelaySeconds: 10
    timeoutSeconds: 10
    periodSeconds: 20
    failureThreshold: 3
  volumeMounts:
    - name: socket-dir
      mountPath: /csi
  securityContext:
    {{- include "elastivol.restrictedSecurityContext" . | nindent 4 }}
  {{- with $s.attacher.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if $driverCfg.resizer.enabled }}
- name: csi-resizer
  image: {{ include "elastivol.sidecarImage" $s.resizer }}
  imagePullPolicy: {{ $s.resizer.image.pullPolicy }}
  args:
    - --v={{ $s.logVerbosity }}
    - --csi-address={{ .csiAddress }}
    - --timeout={{ $s.resizer.timeout }}
    - --workers={{ $s.resizer.workers }}
    - --http-endpoint=:{{ $s.resizer.httpPort }}
    - --leader-election
    - --leader-election-namespace=$(NAMESPACE)
    {{- range $s.resizer.extraArgs }}
    - {{ . }}
    {{- end }}
  env:
    {{- include "elastivol.podEnv" . | nindent 4 }}
  ports:
    - name: resizer-http
      containerPort: {{ $s.resizer.httpPort }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz/leader-election
      port: resizer-http
    initialDelaySeconds: 10
    timeoutSeconds: 10
    periodSeconds: 20
    failureThreshold: 3
  volumeMounts:
    - name: socket-dir
      mountPath: /csi
  securityContext:
    {{- include "elastivol.restrictedSecurityContext" . | nindent 4 }}
  {{- with $s.resizer.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if include "elastivol.snapshotter" $root }}
- name: csi-snapshotter
  image: {{ include "elastivol.sidecarImage" $s.snapshotter }}
  imagePullPolicy: {{ $s.snapshotter.image.pullPolicy }}
  args:
    - --v={{ $s.logVerbosity }}
    - --csi-address={{ .csiAddress }}
    - --timeout={{ $s.snapshotter.timeout }}
    - --worker-threads={{ $s.snapshotter.workerThreads }}
    - --extra-create-metadata
    - --http-endpoint=:{{ $s.snapshotter.httpPort }}
    - --feature-gates=CSIVolumeGroupSnapshot={{ include "elastivol.groupSnapshots" $root | default "false" }}
    {{- if .nodeLocal }}
    - --node-deployment=true
    {{- else }}
    - --leader-election
    - --leader-election-namespace=$(NAMESPACE)
    {{- end }}
    {{- range $s.snapshotter.extraArgs }}
    - {{ . }}
    {{- end }}
  env:
    {{- include "elastivol.podEnv" . | nindent 4 }}
  ports:
    - name: snapshot-http
      containerPort: {{ $s.snapshotter.httpPort }}
      protocol: TCP
  {{- if not .nodeLocal }}
  livenessProbe:
    httpGet:
      path: /healthz/leader-election
      port: snapshot-http
    initialDelaySeconds: 10
    timeoutSeconds: 10
    periodSeconds: 20
    failureThreshold: 3
  {{- end }}
  volumeMounts:
    - name: socket-dir
      mountPath: /csi
  securityContext:
    {{- include "elastivol.restrictedSecurityContext" . | nindent 4 }}
  {{- with $s.snapshotter.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The livenessprobe sidecar: serves /healthz by calling Probe on the plugin's socket. */}}
{{- define "elastivol.livenessProbeSidecar" -}}
{{- $s := .root.Values.sidecars -}}
- name: liveness-probe
  image: {{ include "elastivol.sidecarImage" $s.livenessProbe }}
  imagePullPolicy: {{ $s.livenessProbe.image.pullPolicy }}
  args:
    - --v={{ $s.logVerbosity }}
    - --csi-address={{ .csiAddress }}
    - --http-endpoint=:{{ .port | default $s.livenessProbe.healthPort }}
    - --probe-timeout=3s
    {{- range $s.livenessProbe.extraArgs }}
    - {{ . }}
    {{- end }}
  volumeMounts:
    - name: socket-dir
      mountPath: /csi
  securityContext:
    {{- include "elastivol.restrictedSecurityContext" . | nindent 4 }}
  {{- with $s.livenessProbe.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The plugin container's probe: /healthz on the livenessprobe sidecar's port. */}}
{{- define "elastivol.pluginLivenessProbe" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: healthz
  initialDelaySeconds: 10
  timeoutSeconds: 5
  periodSeconds: 10
  failureThreshold: 5
{{- end -}}
