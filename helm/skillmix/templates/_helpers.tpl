{{/*
Helpers of the skillmix chart. Every helper is prefixed with `skillmix.`; each comment says
what it takes and how to call it. Helpers that take several arguments take a dict that always
carries the root context as "root".
*/}}

{{/*
skillmix.name: the chart name, truncated to 63 characters (a label value).
Usage: {{ include "skillmix.name" . }}
*/}}
{{- define "skillmix.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
skillmix.fullname: the release name, truncated to 63 characters, no trailing dash.
Usage: {{ include "skillmix.fullname" . }}
*/}}
{{- define "skillmix.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
skillmix.chart: "name-version" for the helm.sh/chart label.
Usage: {{ include "skillmix.chart" . }}
*/}}
{{- define "skillmix.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
skillmix.runId: run.id, or fail when it is missing.
Usage: {{ include "skillmix.runId" . }}
*/}}
{{- define "skillmix.runId" -}}
{{- required "run.id is required: the run id ({name}-{hash}) that labels every object as skillmix.io/run" .Values.run.id -}}
{{- end -}}

{{/*
skillmix.runUri: run.uri, or fail when it is missing.
Usage: {{ include "skillmix.runUri" . }}
*/}}
{{- define "skillmix.runUri" -}}
{{- required "run.uri is required: the URI of the run folder in the artifact store (s3://bucket/prefix/{run id})" .Values.run.uri -}}
{{- end -}}

{{/*
skillmix.selectorLabels: the labels that identify this release's objects (no user labels).
Usage: {{ include "skillmix.selectorLabels" . | nindent 4 }}
*/}}
{{- define "skillmix.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skillmix.name" . | quote }}
app.kubernetes.io/instance: {{ include "skillmix.fullname" . | quote }}
{{- end -}}

{{/*
skillmix.labels: the common labels of every object (selector labels included).
Usage: {{ include "skillmix.labels" . | nindent 4 }}
*/}}
{{- define "skillmix.labels" -}}
helm.sh/chart: {{ include "skillmix.chart" . | quote }}
{{ include "skillmix.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | toString | trunc 63 | quote }}
app.kubernetes.io/managed-by: skillmix
app.kubernetes.io/part-of: skillmix
skillmix.io/run: {{ include "skillmix.runId" . | quote }}
{{- end -}}

{{/*
skillmix.jobLabels: the profile's labels (pods.labels: team, cost centre...; on a pod template
merged under the student's podLabels, given as "podLabels"), the common labels plus component,
phase, attempt and, when given, the unit (student, k, round). Used on Jobs and their pod
templates.
Usage: {{ include "skillmix.jobLabels" (dict "root" $ "component" "generation" "phase" "generate"
         "student" $student "k" $k "round" $round) | nindent 4 }}
*/}}
{{- define "skillmix.jobLabels" -}}
{{- $user := merge (deepCopy (.podLabels | default dict)) (deepCopy ((.root.Values.pods | default dict).labels | default dict)) -}}
{{ include "skillmix.labels" .root }}
app.kubernetes.io/component: {{ .component | quote }}
skillmix.io/phase: {{ .phase | quote }}
{{- if hasKey . "student" }}
skillmix.io/student: {{ .student | toString | quote }}
{{- end }}
{{- if hasKey . "k" }}
skillmix.io/k: {{ .k | int | toString | quote }}
{{- end }}
{{- if hasKey . "round" }}
skillmix.io/round: {{ .round | int | toString | quote }}
{{- end }}
{{- if hasKey . "task" }}
skillmix.io/task: {{ .task | toString | quote }}
{{- end }}
skillmix.io/attempt: {{ .root.Values.run.attempt | int | toString | quote }}
{{- range $key := keys $user | sortAlpha }}
{{ $key }}: {{ get $user $key | toString | quote }}
{{- end }}
{{- end -}}

{{/*
skillmix.serviceAccountName: the pods' ServiceAccount, serviceAccount.name (one per profile,
shared by runs), "skillmix" when empty.
Usage: {{ include "skillmix.serviceAccountName" . }}
*/}}
{{- define "skillmix.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default "skillmix" -}}
{{- end -}}

{{/*
skillmix.imageRef: "repository:tag", or "repository@sha256:..." when the tag is a digest.
Usage: {{ include "skillmix.imageRef" (dict "repository" "vllm/vllm-openai" "tag" "v0.11.0") }}
*/}}
{{- define "skillmix.imageRef" -}}
{{- $tag := .tag | toString -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
skillmix.image: the skillmix image (client, task runner, mock server); the tag defaults to the
chart appVersion.
Usage: {{ include "skillmix.image" . }}
*/}}
{{- define "skillmix.image" -}}
{{- $repository := required "image.repository is required (the skillmix image)" .Values.image.repository -}}
{{- include "skillmix.imageRef" (dict "repository" $repository "tag" (.Values.image.tag | default .Chart.AppVersion)) -}}
{{- end -}}

{{/*
skillmix.vllmImage: the vLLM server image.
Usage: {{ include "skillmix.vllmImage" . }}
*/}}
{{- define "skillmix.vllmImage" -}}
{{- $repository := required "vllm.image.repository is required (the vLLM server image)" .Values.vllm.image.repository -}}
{{- $tag := required "vllm.image.tag is required (pin the vLLM release)" .Values.vllm.image.tag -}}
{{- include "skillmix.imageRef" (dict "repository" $repository "tag" $tag) -}}
{{- end -}}

{{/*
skillmix.jobName: the name of one Job of the run:
  {run short}-{gen|grd|agg|coo}[-{student}][-k{k}][-r{round}]-a{attempt}
lower-cased, characters outside [a-z0-9-] replaced by "-", at most 56 characters (Indexed Jobs
append "-<index>" to pod hostnames, which must stay within 63). The run short form is the run id
itself, or its first 11 characters + its last 8 (the hash of `{name}-{hash}`) when longer than
20. When the name is too long, or the student name had to be changed (case, "." or "_"), it is
cut to 47 characters and suffixed with "-" + the first 8 hex digits of the sha256 of the exact
unit (run id, phase, student, k, round, attempt), so names stay unique and stable.
Usage: {{ include "skillmix.jobName" (dict "root" $ "phase" "generate" "student" "llama" "k" 2
         "round" 1) }}   (phase: generate | grade | aggregate | coordinate; student/k/round optional)
*/}}
{{- define "skillmix.jobName" -}}
{{- $root := .root -}}
{{- $abbrevs := dict "generate" "gen" "grade" "grd" "aggregate" "agg" "coordinate" "coo" -}}
{{- if not (hasKey $abbrevs .phase) -}}
{{- fail (printf "skillmix.jobName: unknown phase %q (allowed: generate|grade|aggregate|coordinate)" (toString .phase)) -}}
{{- end -}}
{{- $runId := include "skillmix.runId" $root | toString -}}
{{- $attempt := $root.Values.run.attempt | int -}}
{{- $runShort := regexReplaceAll "[^a-z0-9-]" (lower $runId) "-" -}}
{{- if gt (len $runShort) 20 -}}
{{- $runShort = printf "%s-%s" (regexReplaceAll "-+$" (trunc 11 $runShort) "") (trunc -8 $runShort) -}}
{{- end -}}
{{- $parts := list $runShort (get $abbrevs .phase) -}}
{{- $unit := list $runId .phase -}}
{{- $lossy := false -}}
{{- if hasKey . "student" -}}
{{- $student := .student | toString -}}
{{- $clean := regexReplaceAll "[^a-z0-9-]" (lower $student) "-" -}}
{{- $lossy = ne $clean $student -}}
{{- $parts = append $parts $clean -}}
{{- $unit = append $unit $student -}}
{{- end -}}
{{- if hasKey . "k" -}}
{{- $parts = append $parts (printf "k%d" (.k | int)) -}}
{{- $unit = append $unit (printf "k%d" (.k | int)) -}}
{{- end -}}
{{- if hasKey . "round" -}}
{{- $parts = append $parts (printf "r%d" (.round | int)) -}}
{{- $unit = append $unit (printf "r%d" (.round | int)) -}}
{{- end -}}
{{- if hasKey . "task" -}}
{{- $task := .task | toString -}}
{{- $cleanTask := regexReplaceAll "[^a-z0-9-]" (lower $task) "-" -}}
{{- $lossy = or $lossy (ne $cleanTask $task) -}}
{{- $parts = append $parts (printf "t-%s" $cleanTask) -}}
{{- $unit = append $unit (printf "t-%s" $task) -}}
{{- end -}}
{{- $parts = append $parts (printf "a%d" $attempt) -}}
{{- $unit = append $unit (printf "a%d" $attempt) -}}
{{- $name := join "-" (compact $parts) -}}
{{- if or $lossy (gt (len $name) 56) -}}
{{- $hash := join "/" $unit | sha256sum | trunc 8 -}}
{{- $name = printf "%s-%s" (regexReplaceAll "-+$" (trunc 47 $name) "") $hash -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/*
skillmix.clientSecurityContext: the restricted security context of every container running the
skillmix image (client, wait, mock sidecar).
Usage: securityContext: {{- include "skillmix.clientSecurityContext" . | nindent 10 }}
*/}}
{{- define "skillmix.clientSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
skillmix.podSecurityContext: the pod-level security context (no runAsNonRoot: the vLLM sidecar
runs as root; each skillmix container sets it itself). fsGroup: the group that owns the pod's
volumes, so the mounted caches are writable by the non-root user (the skillmix user's group
10001, or the vLLM user's for vLLM pods); OnRootMismatch keeps a large model cache from being
walked at every start.
Usage: securityContext: {{- include "skillmix.podSecurityContext" (dict "fsGroup" 10001) | nindent 8 }}
*/}}
{{- define "skillmix.podSecurityContext" -}}
fsGroup: {{ .fsGroup | default 10001 | int64 }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
skillmix.storeEnv: the environment of every container that uses the artifact store (clients,
wait, coordinator): HOME, SKILLMIX_RUN, the store settings and the store credentials (only as
secretKeyRef). Model sidecars never get it.
Usage: env: {{- include "skillmix.storeEnv" . | nindent 12 }}
*/}}
{{- define "skillmix.storeEnv" -}}
- name: HOME
  value: /tmp
- name: SKILLMIX_RUN
  value: {{ include "skillmix.runUri" . | toJson }}
{{- with .Values.store.endpointUrl }}
- name: SKILLMIX_S3_ENDPOINT_URL
  value: {{ . | toJson }}
{{- end }}
{{- with .Values.store.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | toJson }}
{{- end }}
{{- with .Values.store.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . | toJson }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | toJson }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end -}}

{{/*
skillmix.clientEnv: the environment of a client container: skillmix.storeEnv, the pod's name
(downward API: the client uploads its log under it) and the apiKeys entries meant for it, as
secretKeyRef: "for" is "grader" (grading clients), a student name (that student's generation
clients) or "" (no key). An entry naming neither grader nor students goes to every client.
Usage: env: {{- include "skillmix.clientEnv" (dict "root" $ "for" "grader") | nindent 12 }}
*/}}
{{- define "skillmix.clientEnv" -}}
{{- $root := .root -}}
{{- $for := .for | default "" | toString -}}
{{ include "skillmix.storeEnv" $root }}
- name: SKILLMIX_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if .modelKey }}
{{ include "skillmix.modelKeyEnv" (dict "root" $root "env" "SKILLMIX_DUMMY_API_KEY") }}
{{- end }}
{{- $seen := dict -}}
{{- range $i, $ref := $root.Values.apiKeys }}
{{- $env := required (printf "apiKeys[%d].env is required (the environment variable name)" $i) $ref.env }}
{{- $secret := required (printf "apiKeys[%d].secretName is required (the Secret holding %s)" $i $env) $ref.secretName }}
{{- if hasKey $seen $env }}
{{- fail (printf "apiKeys[%d].env: %s is listed twice" $i $env) }}
{{- end }}
{{- $_ := set $seen $env true }}
{{- $scoped := or (hasKey $ref "grader") (hasKey $ref "students") -}}
{{- $mine := or (not $scoped) (and (eq $for "grader") $ref.grader) (and (ne $for "") (ne $for "grader") (has $for ($ref.students | default list))) -}}
{{- if and $mine (ne $for "") }}
- name: {{ $env | toJson }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret | toJson }}
      key: {{ $ref.key | default $env | toJson }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
skillmix.modelKeyEnv: the environment variable "env" holding the run's model-server key (the
per-attempt Secret modelKey.secretName that `skillmix launch` creates with a random key, never
rendered): a per-model server requires it, and only the run's clients get it.
Usage: {{ include "skillmix.modelKeyEnv" (dict "root" $ "env" "VLLM_API_KEY") }}
*/}}
{{- define "skillmix.modelKeyEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ required "modelKey.secretName is required for a key-protected model server" .root.Values.modelKey.secretName | toJson }}
      key: {{ .root.Values.modelKey.key | default "api-key" | toJson }}
{{- end -}}

{{/*
skillmix.tmpMount / skillmix.tmpVolume: the writable /tmp of skillmix containers (their root
filesystem is read-only).
Usage: volumeMounts: {{- include "skillmix.tmpMount" . | nindent 12 }}
       volumes: {{- include "skillmix.tmpVolume" . | nindent 8 }}
*/}}
{{- define "skillmix.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "skillmix.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/*
skillmix.waitContainer: the regular init container "wait" that blocks until a phase's manifests
exist, with small fixed resources. args: its full argument list (`task wait --run ...`, from the
values: skillmix builds it from the plan).
Usage: {{- include "skillmix.waitContainer" (dict "root" $ "args" $unit.waitArgs) | nindent 8 }}
*/}}
{{- define "skillmix.waitContainer" -}}
{{- $root := .root -}}
- name: wait
  image: {{ include "skillmix.image" $root | toJson }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["skillmix"]
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "skillmix.storeEnv" $root | nindent 4 }}
  resources:
    requests:
      cpu: 50m
      memory: 128Mi
    limits:
      memory: 256Mi
  securityContext:
    {{- include "skillmix.clientSecurityContext" $root | nindent 4 }}
  volumeMounts:
    {{- include "skillmix.tmpMount" $root | nindent 4 }}
{{- end -}}

{{/*
skillmix.clientContainer: the main container "client" running `skillmix <args>` (args: the
`task generate|grade|aggregate ...` list from the values, built by skillmix from the plan);
"for" picks its API keys (see skillmix.clientEnv: "grader", a student name, or "" for none).
A failed client's last log lines (its one-line error names the reason) become its termination
message (FallbackToLogsOnError), so the pod's status says why without its logs.
Usage: {{- include "skillmix.clientContainer" (dict "root" $ "args" $unit.args "for" "grader") | nindent 8 }}
*/}}
{{- define "skillmix.clientContainer" -}}
{{- $root := .root -}}
- name: client
  image: {{ include "skillmix.image" $root | toJson }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["skillmix"]
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "skillmix.clientEnv" (dict "root" $root "for" (.for | default "") "modelKey" .modelKey) | nindent 4 }}
  terminationMessagePolicy: FallbackToLogsOnError
  {{- with $root.Values.client.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  resources: {}
  {{- end }}
  securityContext:
    {{- include "skillmix.clientSecurityContext" $root | nindent 4 }}
  volumeMounts:
    {{- include "skillmix.tmpMount" $root | nindent 4 }}
{{- end -}}

{{/*
skillmix.modelSidecar: the model server as a native sidecar (an init container named "model"
with restartPolicy Always and a readinessProbe on /health). No startupProbe on purpose: it would
hold the client back until the model is healthy, and a model that never is would be restarted
forever with the pod never failing. The client waits for /health under the model-load budget
itself (`--model-load-timeout`) and exits 3, which the podFailurePolicy turns into FailJob. No
store credentials and no API keys reach it.
  backend "vllm": vLLM with GPUs (spec: a students entry).
  backend "mock": `skillmix mock-server` from the skillmix image (spec: servedModelName and
  optional quality).
  key: the values path of spec, for error messages ("students.llama", "grader").
Usage: {{- include "skillmix.modelSidecar" (dict "root" $ "backend" "vllm"
         "key" (printf "students.%s" $student) "spec" $spec) | nindent 8 }}
*/}}
{{/*
skillmix.loopbackProbe: a readiness probe of a model server that listens on 127.0.0.1 only
(the kubelet's httpGet would go to the pod IP): GET /health from inside the container, with
the image's python3 (the vLLM and skillmix images have it). Takes the port.
Usage: readinessProbe: {{- include "skillmix.loopbackProbe" 8000 | nindent 4 }}
*/}}
{{- define "skillmix.loopbackProbe" -}}
exec:
  command:
    - python3
    - -c
    - {{ printf "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/health', timeout=4)" (. | int) | quote }}
periodSeconds: 10
failureThreshold: 3
timeoutSeconds: 5
{{- end -}}

{{- define "skillmix.modelSidecar" -}}
{{- $root := .root -}}
{{- $spec := .spec -}}
{{- $port := $root.Values.vllm.port | int -}}
{{- if eq .backend "vllm" -}}
{{- $model := required (printf "%s.model is required for backend vllm (the Hugging Face id or path)" .key) $spec.model -}}
{{- $served := $spec.servedModelName | default $model -}}
{{- $tp := $spec.tensorParallelSize | default 1 | int -}}
{{- $gpus := $spec.gpus | default $tp | int -}}
{{- $gpuName := $spec.gpuResource | default (required "gpu.resourceName is required (e.g. nvidia.com/gpu)" $root.Values.gpu.resourceName) -}}
{{- $resources := deepCopy ($spec.resources | default $root.Values.vllm.resources | default dict) -}}
{{- $requests := deepCopy (get $resources "requests" | default dict) -}}
{{- $limits := deepCopy (get $resources "limits" | default dict) -}}
{{- $_ := set $requests $gpuName $gpus -}}
{{- $_ := set $limits $gpuName $gpus -}}
{{- $_ := set $resources "requests" $requests -}}
{{- $_ := set $resources "limits" $limits -}}
{{- /* loopback only: the client is in the same pod, nothing else may use the run's GPUs */ -}}
{{- $args := list "--model" $model "--served-model-name" $served "--tensor-parallel-size" (toString $tp) "--host" "127.0.0.1" "--port" (toString $port) -}}
{{- range $spec.extraArgs }}
{{- $args = append $args (toString .) -}}
{{- end -}}
{{- $repository := required "vllm.image.repository is required (the vLLM server image)" $root.Values.vllm.image.repository -}}
{{- $tag := $spec.imageTag | default (required "vllm.image.tag is required (pin the vLLM release)" $root.Values.vllm.image.tag) -}}
- name: model
  image: {{ include "skillmix.imageRef" (dict "repository" $repository "tag" $tag) | toJson }}
  imagePullPolicy: {{ $root.Values.vllm.image.pullPolicy }}
  restartPolicy: Always
  {{- /*
  vLLM's output also goes to the model log (the model-log volume, read-only in the client),
  from which the client tells a transient failure to start (the Hub's 429 or 5xx) from a
  permanent one (gated, not found, out of memory): each start empties the file and names
  itself on its first line, then tee copies the output into it, at most 4 MiB a start (the
  ulimit binds the copying cat alone; `tee -p` outlives it). exec keeps vLLM the container's
  main process (signals, exit code). The image needs bash and GNU coreutils (vllm/vllm-openai
  has them); without the file the client waits out the load budget as before.
  */}}
  command:
    - /bin/bash
    - -c
    - >-
      echo "skillmix: model server start $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" > "$SKILLMIX_MODEL_LOG";
      exec python3 -m vllm.entrypoints.openai.api_server "$@"
      > >(tee -p >(trap '' XFSZ; ulimit -f 4096; exec cat >> "$SKILLMIX_MODEL_LOG")) 2>&1
    - vllm
  args:
    {{- toYaml $args | nindent 4 }}
  env:
    - name: SKILLMIX_MODEL_LOG
      value: /var/run/skillmix-model/model.log
    {{- /* a non-root uid has no home: caches (Triton, torch.compile, vLLM) go to /tmp */}}
    - name: HOME
      value: /tmp
    - name: USER
      value: vllm
    - name: XDG_CACHE_HOME
      value: /tmp/.cache
    {{- if .modelKey }}
    {{- include "skillmix.modelKeyEnv" (dict "root" $root "env" "VLLM_API_KEY") | nindent 4 }}
    {{- end }}
    {{- if not $root.Values.vllm.usageStats }}
    # no usage statistics leave the cluster (vLLM's and the libraries' telemetry)
    - name: VLLM_NO_USAGE_STATS
      value: "1"
    - name: DO_NOT_TRACK
      value: "1"
    {{- end }}
    - name: HF_HOME
      value: {{ $root.Values.modelCache.mountPath | toJson }}
    {{- if and $root.Values.modelCache.enabled $root.Values.modelCache.offline }}
    - name: HF_HUB_OFFLINE
      value: "1"
    {{- end }}
    {{- with $root.Values.hfToken.secretName }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ . | toJson }}
          key: {{ $root.Values.hfToken.key | default "HF_TOKEN" | toJson }}
    {{- end }}
    {{- range $name, $value := $spec.env }}
    - name: {{ $name | toJson }}
      value: {{ $value | toString | toJson }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ $port }}
      protocol: TCP
  readinessProbe:
    {{- include "skillmix.loopbackProbe" $port | nindent 4 }}
  resources:
    {{- toYaml $resources | nindent 4 }}
  securityContext:
    {{- toYaml ($spec.securityContext | default $root.Values.vllm.securityContext) | nindent 4 }}
  volumeMounts:
    - name: dshm
      mountPath: /dev/shm
    - name: model-cache
      mountPath: {{ $root.Values.modelCache.mountPath | toJson }}
    - name: vllm-tmp
      mountPath: /tmp
    - name: model-log
      mountPath: /var/run/skillmix-model
{{- else if eq .backend "mock" -}}
{{- $served := required (printf "%s.servedModelName is required for backend mock (the model name the client sends)" .key) $spec.servedModelName -}}
{{- $model := $served -}}
{{- if hasKey $spec "quality" -}}
{{- if not (kindIs "invalid" $spec.quality) -}}
{{- $model = printf "%s=%v" $served $spec.quality -}}
{{- end -}}
{{- end -}}
- name: model
  image: {{ include "skillmix.image" $root | toJson }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  restartPolicy: Always
  command: ["skillmix"]
  args:
    {{- toYaml (list "mock-server" "--host" "127.0.0.1" "--port" (toString $port) "--seed" (toString ($root.Values.run.seed | int64)) "--model" $model) | nindent 4 }}
  env:
    - name: HOME
      value: /tmp
    {{- if .modelKey }}
    {{- include "skillmix.modelKeyEnv" (dict "root" $root "env" "SKILLMIX_MOCK_API_KEY") | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ $port }}
      protocol: TCP
  readinessProbe:
    {{- include "skillmix.loopbackProbe" $port | nindent 4 }}
  {{- with $root.Values.mock.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  resources: {}
  {{- end }}
  securityContext:
    {{- include "skillmix.clientSecurityContext" $root | nindent 4 }}
  volumeMounts:
    {{- include "skillmix.tmpMount" $root | nindent 4 }}
{{- else -}}
{{- fail (printf "skillmix.modelSidecar: unknown backend %q (allowed: vllm|mock)" (toString .backend)) -}}
{{- end -}}
{{- end -}}

{{/*
skillmix.jobSpec: the common Job spec fields:
- suspend: when "gated" (the coordinator releases it once its inputs exist: a suspended Job has
  no pods and no running activeDeadlineSeconds timer) or with Kueue (Kueue admits it);
- backoffLimit, or with "indexed" backoffLimitPerIndex (one flaky shard does not spend every
  shard's retries);
- activeDeadlineSeconds: "seconds" when given (a generation Job's, from the plan's estimate),
  else jobs.activeDeadlineSeconds.<deadline>. Its timer runs only while the Job is neither
  suspended nor waiting for Kueue's admission, so queueing never counts;
- ttlSecondsAfterFinished;
- the podFailurePolicy: the client's exit code 2 (bad input) or 3 (model server never healthy)
  FailJob; 4 (the client's time limit) FailIndex in Indexed Jobs, else FailJob; exit code 2 of
  the "wait" init container (when "wait") FailJob; with "terminated", the client's 143 (ended
  by SIGTERM: its pod was deleted or evicted) Ignore; disruptions Ignore.
Usage: spec: {{- include "skillmix.jobSpec" (dict "root" $ "deadline" "generation" "seconds" 900
         "wait" false "gated" false "indexed" false) | nindent 2 }}
*/}}
{{- define "skillmix.jobSpec" -}}
{{- $root := .root -}}
{{- $deadline := .seconds | default (get $root.Values.jobs.activeDeadlineSeconds .deadline) -}}
{{- if not $deadline -}}
{{- fail (printf "jobs.activeDeadlineSeconds.%s is required (seconds, >= 1)" .deadline) -}}
{{- end -}}
{{- if or .gated $root.Values.kueue.queueName -}}
suspend: true
{{ end -}}
{{ if .indexed -}}
backoffLimitPerIndex: {{ $root.Values.jobs.backoffLimit | int }}
{{- else -}}
backoffLimit: {{ $root.Values.jobs.backoffLimit | int }}
{{- end }}
activeDeadlineSeconds: {{ $deadline | int64 }}
ttlSecondsAfterFinished: {{ $root.Values.jobs.ttlSecondsAfterFinished | int64 }}
podFailurePolicy:
  rules:
    {{- if .terminated }}
    - action: Ignore
      onExitCodes:
        containerName: client
        operator: In
        values: [143]
    {{- end }}
    - action: FailJob
      onExitCodes:
        containerName: client
        operator: In
        values: [2, 3]
    - action: {{ if .indexed }}FailIndex{{ else }}FailJob{{ end }}
      onExitCodes:
        containerName: client
        operator: In
        values: [4]
    {{- if .wait }}
    - action: FailJob
      onExitCodes:
        containerName: wait
        operator: In
        values: [2]
    {{- end }}
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
{{- end -}}

{{/*
skillmix.gateMetadata: a gated Job's annotations for the coordinator: how it is held
(skillmix.io/hold, coordinator.hold: "suspend" without Kueue, "gate" with Kueue's
AdmissionGatedBy gate, whose annotation it then carries, "defer" with Kueue otherwise: the
launch does not create it, the coordinator does on release), the pool it counts in, that
pool's size and the Job's weight in it (GPUs for the "gpu" pool, else 1); nothing when not
gated. Place it under metadata.
Usage: {{- include "skillmix.gateMetadata" (dict "root" $ "gated" true "pool" "grade" "size" 4 "weight" 1) | nindent 2 }}
*/}}
{{- define "skillmix.gateMetadata" -}}
{{- if .gated -}}
{{- $hold := .root.Values.coordinator.hold | default "suspend" -}}
{{- if not (has $hold (list "suspend" "gate" "defer")) -}}
{{- fail (printf "coordinator.hold: unknown %q (allowed: suspend|gate|defer)" (toString $hold)) -}}
{{- end -}}
{{- if and (ne $hold "suspend") (not .root.Values.kueue.queueName) -}}
{{- fail (printf "coordinator.hold %s needs kueue.queueName (the Kueue LocalQueue)" $hold) -}}
{{- end -}}
annotations:
  skillmix.io/hold: {{ $hold | quote }}
  skillmix.io/pool: {{ .pool | toString | quote }}
  skillmix.io/pool-size: {{ .size | default 0 | int | toString | quote }}
  skillmix.io/pool-weight: {{ .weight | default 1 | int | toString | quote }}
  {{- if eq $hold "gate" }}
  kueue.x-k8s.io/admission-gated-by: skillmix.io/coordinator
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
skillmix.jobMetadataLabels: the Job's labels: skillmix.jobLabels, skillmix.io/gated for a gated
Job ("gated" in the dict), and with Kueue (kueue.queueName) the queue label and the
WorkloadPriorityClass ("priorityClass" in the dict, else kueue.priorityClass). The pod template
gets skillmix.jobLabels.
Usage: labels: {{- include "skillmix.jobMetadataLabels" $ctx | nindent 4 }}
*/}}
{{- define "skillmix.jobMetadataLabels" -}}
{{ include "skillmix.jobLabels" (omit . "podLabels") }}
{{- if .gated }}
skillmix.io/gated: "true"
{{- end }}
{{- with .root.Values.kueue.queueName }}
kueue.x-k8s.io/queue-name: {{ . | quote }}
{{- end }}
{{- with .priorityClass | default .root.Values.kueue.priorityClass }}
kueue.x-k8s.io/priority-class: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
skillmix.podSpec: the common pod spec fields: restartPolicy Never, no service links, no
ServiceAccount token, the ServiceAccount, the PriorityClass ("priorityClassName", else
pods.priorityClassName), image pull secrets, the pod security context (fsGroup: "fsGroup", else
the skillmix user's group).
Usage: spec: {{- include "skillmix.podSpec" (dict "root" $ "fsGroup" 1000) | nindent 6 }}
*/}}
{{- define "skillmix.podSpec" -}}
{{- $root := .root -}}
restartPolicy: Never
enableServiceLinks: false
automountServiceAccountToken: false
serviceAccountName: {{ include "skillmix.serviceAccountName" $root | toJson }}
{{- with .priorityClassName | default (($root.Values.pods | default dict).priorityClassName) }}
priorityClassName: {{ . | toJson }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | toJson }}
  {{- end }}
{{- end }}
securityContext:
  {{- include "skillmix.podSecurityContext" (dict "fsGroup" .fsGroup) | nindent 2 }}
{{- end -}}

{{/*
skillmix.gpuScheduling: runtimeClassName, nodeSelector, tolerations and affinity of a student's
generation pods: each the student's own (spec: its students entry) when set, else, for GPU
(vLLM) pods ("gpu" true), the global gpu.* value; other pods get none.
Usage: {{- include "skillmix.gpuScheduling" (dict "root" $ "spec" $spec "gpu" true) | nindent 6 }}
*/}}
{{- define "skillmix.gpuScheduling" -}}
{{- $gpu := .root.Values.gpu -}}
{{- $fallback := dict -}}
{{- if .gpu -}}
{{- $fallback = dict "runtimeClassName" $gpu.runtimeClassName "nodeSelector" $gpu.nodeSelector "tolerations" $gpu.tolerations "affinity" $gpu.affinity -}}
{{- end -}}
{{- $spec := .spec | default dict -}}
{{- $chosen := dict -}}
{{- range $key := list "runtimeClassName" "nodeSelector" "tolerations" "affinity" -}}
{{- $_ := set $chosen $key (ternary (get $spec $key) (get $fallback $key) (hasKey $spec $key)) -}}
{{- end -}}
{{- with $chosen.runtimeClassName }}
runtimeClassName: {{ . | toJson }}
{{- end }}
{{- with $chosen.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $chosen.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $chosen.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
skillmix.vllmVolumes: the volumes of a vLLM pod: /dev/shm (the student's shmSize, else
vllm.shmSize), the model cache at HF_HOME (the PVC of modelCache when enabled, else an emptyDir
limited to the student's modelVolumeSize) and the vLLM container's writable /tmp.
Usage: {{- include "skillmix.vllmVolumes" (dict "root" $ "spec" $spec) | nindent 8 }}
*/}}
{{- define "skillmix.vllmVolumes" -}}
{{- $root := .root -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .spec.shmSize | default $root.Values.vllm.shmSize | toString | toJson }}
{{- if $root.Values.modelCache.enabled }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ required "modelCache.claimName is required when modelCache.enabled is true (an existing PVC)" $root.Values.modelCache.claimName | toJson }}
{{- else }}
- name: model-cache
  {{- with .spec.modelVolumeSize }}
  emptyDir:
    sizeLimit: {{ . | toString | toJson }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
- name: vllm-tmp
  emptyDir: {}
{{- /* the model log: vLLM's output of its current start (at most 4 MiB), for the client */}}
- name: model-log
  emptyDir: {}
{{- end -}}

{{/*
skillmix.checkUnit: validates one {student, k, round} unit of generation/grading and returns
nothing; fails naming the key.
Usage: {{- include "skillmix.checkUnit" (dict "list" "generation" "index" $i "unit" $unit) }}
*/}}
{{- define "skillmix.checkUnit" -}}
{{- $where := printf "%s[%d]" .list (.index | int) -}}
{{- if not (kindIs "map" .unit) -}}
{{- fail (printf "%s must be a map {student, k, round}" $where) -}}
{{- end -}}
{{- $_ := required (printf "%s.student is required (a key of students)" $where) .unit.student -}}
{{- $_ := required (printf "%s.k is required (an integer >= 1)" $where) .unit.k -}}
{{- $_ := required (printf "%s.round is required (an integer >= 1)" $where) .unit.round -}}
{{- end -}}

{{/*
skillmix.checkArgs: validates a container's argument list from the values (a non-empty list of
strings: skillmix builds every `skillmix task ...` command from its plan) and returns nothing;
fails naming the key ("where").
Usage: {{- include "skillmix.checkArgs" (dict "where" "aggregation.args" "args" .Values.aggregation.args) }}
*/}}
{{- define "skillmix.checkArgs" -}}
{{- if not (and (kindIs "slice" .args) .args) -}}
{{- $_ := required (printf "%s is required: the container's arguments (`task ...`), as `skillmix launch` or `skillmix render` writes them" .where) "" -}}
{{- end -}}
{{- range $j, $arg := .args -}}
{{- if not (kindIs "string" $arg) -}}
{{- fail (printf "%s[%d] must be a string (got %v)" $.where $j $arg) -}}
{{- end -}}
{{- end -}}
{{- end -}}
