#!/usr/bin/env bash
# End-to-end test on a local kind cluster (`make kind-test`): load the image that `make image`
# built with podman (SKILLMIX_IMAGE, the same image `make image-test` and the cluster tests
# run) into kind, start an in-cluster S3 (MinIO), launch a small mock-backend run with the real
# CLI, wait for it, and check the report.
#
#   bash k8s/kind-test.sh            # creates (or reuses) the cluster, deletes it at the end
#   KEEP=1 bash k8s/kind-test.sh     # keep the cluster afterwards (to debug or re-run)
#
# Needs: docker (a running daemon, cgroup v2), kind >= v0.31.0, kubectl, helm, and the
# skillmix CLI (.venv/bin/skillmix, else `skillmix` on PATH) with a python3 to check results.
# Exit codes: 0 passed, 1 failed (diagnostics in .kind-logs/), 2 missing prerequisites.
#
# Knobs (environment):
#   KEEP=1              keep the cluster (default: delete it, also after a failure)
#   KIND_NODE_IMAGE=... node image passed to `kind create cluster --image` (overrides the
#                       digest-pinned image in k8s/kind-config.yaml, e.g. for older kind)
#   SKILLMIX_IMAGE=...  podman image to load (make sets it: `make image`'s image); when it is
#                       unset or podman lacks it, the image is built with `docker build`
#   LAUNCH_TIMEOUT=900  seconds `skillmix launch --wait` may take
#   SKILLMIX=path       skillmix CLI to use; PYTHON=path  python3 for the report check
#
# Assumptions about the CLI (the contract this script relies on):
#   - `skillmix launch` prints a line `run id: <RUN_ID>` (stdout or stderr; any prefix before
#     "run id:" is tolerated, case-insensitive) and exits non-zero when the run fails;
#     with --wait it returns only after the aggregation Job ended (bounded by --timeout).
#   - The CLI reads profiles from $SKILLMIX_CONFIG, the kube context named in the profile
#     from $KUBECONFIG, and reaches S3 through SKILLMIX_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#     AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION (all exported below).
#   - `skillmix aggregate s3://skillmix-test/runs/<RUN_ID> --format json` prints one JSON
#     document {"rows": [{"student", "k", "n", "full_marks": {"mean", ...}, ...}], ...}.
#   - helm is found on PATH (.tools/bin is put first when it exists).
#
# This script never traces its commands (`set -x`): it handles the generated S3 keys, which
# are never printed; they live in the Secret `skillmix-s3` and in a private temp dir.
set -Eeuo pipefail
set +x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Fixed names: they must match k8s/kind-config.yaml, k8s/skillmix.kind.yaml, k8s/minio.yaml.
readonly CLUSTER=skillmix-test
readonly CONTEXT="kind-${CLUSTER}"
readonly NAMESPACE=skillmix
readonly IMAGE=localhost/skillmix:kind-test
readonly S3_SECRET=skillmix-s3
readonly BUCKET=skillmix-test
readonly STORE="s3://${BUCKET}/runs"
readonly HOST_S3_URL=http://127.0.0.1:30900
readonly PROFILE_FILE="${ROOT}/k8s/skillmix.kind.yaml"
readonly EXPERIMENT_FILE="${ROOT}/k8s/experiment.kind.yaml"
# What the report must hold (keep in sync with k8s/experiment.kind.yaml; a unit test checks).
readonly EXPECT_STUDENTS="strong,weak"
readonly EXPECT_KS="2,3"
readonly EXPECT_N=8
readonly STRONG_STUDENT=strong
readonly WEAK_STUDENT=weak
readonly MIN_KIND_MINOR=31 # kind v0.31.0 published the pinned node image

readonly LOG_DIR="${ROOT}/.kind-logs"
readonly STATE_DIR="${ROOT}/.kind-test"
KEEP="${KEEP:-0}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
LAUNCH_TIMEOUT="${LAUNCH_TIMEOUT:-900}"

if [[ -d "${ROOT}/.tools/bin" ]]; then
  PATH="${ROOT}/.tools/bin:${PATH}"
fi
export PATH

log() { printf '[kind-test] %s\n' "$*" >&2; }

# `timeout` bounds the steps that have no timeout of their own (coreutils; gtimeout on macOS).
TIMEOUT_BIN="$(command -v timeout || command -v gtimeout || true)"
bounded() {
  local seconds="$1"
  shift
  if [[ -n "$TIMEOUT_BIN" ]]; then
    "$TIMEOUT_BIN" "$seconds" "$@"
  else
    "$@"
  fi
}

# ----------------------------------------------------------------------------------------
# Prerequisites (exit 2 naming what is missing)
# ----------------------------------------------------------------------------------------
missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
SKILLMIX="${SKILLMIX:-}"
if [[ -z "$SKILLMIX" ]]; then
  if [[ -x "${ROOT}/.venv/bin/skillmix" ]]; then
    SKILLMIX="${ROOT}/.venv/bin/skillmix"
  elif command -v skillmix >/dev/null 2>&1; then
    SKILLMIX="$(command -v skillmix)"
  else
    missing+=("skillmix (run \`make install\`)")
  fi
fi
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "${ROOT}/.venv/bin/python" ]]; then
    PYTHON="${ROOT}/.venv/bin/python"
  elif command -v python3 >/dev/null 2>&1; then
    PYTHON="$(command -v python3)"
  else
    missing+=("python3")
  fi
fi
if [[ ! "$LAUNCH_TIMEOUT" =~ ^[0-9]+$ ]]; then
  echo "kind-test: LAUNCH_TIMEOUT must be a number of seconds (got: ${LAUNCH_TIMEOUT})" >&2
  exit 2
fi
if ((${#missing[@]} > 0)); then
  printf 'kind-test: missing prerequisites: %s\n' "${missing[*]}" >&2
  printf 'kind-test: install them and put them on PATH (helm and kubectl: make tools; kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation)\n' >&2
  exit 2
fi
if ! bounded 60 docker info >/dev/null 2>&1; then
  echo "kind-test: docker is installed but its daemon is not reachable (is Docker running? can this user use it?)" >&2
  exit 2
fi
kind_version="$(kind version 2>/dev/null || true)"
kind_major="$(sed -n 's/^kind v\([0-9][0-9]*\)\.\([0-9][0-9]*\)\..*$/\1/p' <<<"$kind_version")"
kind_minor="$(sed -n 's/^kind v\([0-9][0-9]*\)\.\([0-9][0-9]*\)\..*$/\2/p' <<<"$kind_version")"
if [[ -z "$KIND_NODE_IMAGE" ]]; then
  if [[ -z "$kind_major" || ( "$kind_major" -eq 0 && "$kind_minor" -lt "$MIN_KIND_MINOR" ) ]]; then
    echo "kind-test: kind >= v0.${MIN_KIND_MINOR}.0 is needed for the node image in k8s/kind-config.yaml (found: ${kind_version:-unknown})" >&2
    echo "kind-test: upgrade kind, or set KIND_NODE_IMAGE to an image from your kind release's notes" >&2
    exit 2
  fi
  if [[ "$(bounded 60 docker info --format '{{.CgroupVersion}}' 2>/dev/null || true)" == "1" ]]; then
    echo "kind-test: this Docker host uses cgroup v1; Kubernetes 1.35 node images need cgroup v2" >&2
    echo "kind-test: use a cgroup v2 host, or set KIND_NODE_IMAGE to a Kubernetes <= 1.34 image of your kind release" >&2
    exit 2
  fi
fi

# kubectl on the test cluster; kq adds a per-request timeout for one-shot reads (not for
# `wait`/`rollout status`, which carry their own --timeout).
kc() { kubectl --context "$CONTEXT" "$@"; }
kq() { kubectl --context "$CONTEXT" --request-timeout=60s "$@"; }

rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR" "$STATE_DIR"
# Our own kubeconfig: the user's ~/.kube/config and current context are left alone.
export KUBECONFIG="${STATE_DIR}/kubeconfig"
SECRETS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/skillmix-kind.XXXXXX")"
chmod 700 "$SECRETS_DIR"

# ----------------------------------------------------------------------------------------
# Failure diagnostics and cleanup
# ----------------------------------------------------------------------------------------
cluster_exists() {
  local clusters
  clusters="$(bounded 60 kind get clusters 2>/dev/null || true)"
  grep -qx "$CLUSTER" <<<"$clusters"
}

DUMPED=0
dump_diagnostics() {
  [[ "$DUMPED" == 1 ]] && return 0
  DUMPED=1
  set +e
  trap - ERR
  log "collecting diagnostics into ${LOG_DIR}/"
  mkdir -p "$LOG_DIR/pods"
  if ! cluster_exists; then
    log "cluster ${CLUSTER} does not exist: nothing to collect from it"
    return 0
  fi
  kq get pods,jobs,events -n "$NAMESPACE" -o wide >"$LOG_DIR/get.txt" 2>&1
  kq get events -n "$NAMESPACE" --sort-by=.lastTimestamp >"$LOG_DIR/events.txt" 2>&1
  kq describe jobs -n "$NAMESPACE" >"$LOG_DIR/describe-jobs.txt" 2>&1
  kq describe pods -n "$NAMESPACE" >"$LOG_DIR/describe-pods.txt" 2>&1
  echo "----- kubectl get pods,jobs,events -n ${NAMESPACE} -o wide" >&2
  cat "$LOG_DIR/get.txt" >&2
  echo "----- kubectl describe jobs -n ${NAMESPACE}" >&2
  cat "$LOG_DIR/describe-jobs.txt" >&2
  local pod name
  for pod in $(kq get pods -n "$NAMESPACE" -o name 2>/dev/null); do
    name="${pod#pod/}"
    kq logs -n "$NAMESPACE" "$pod" --all-containers --prefix --timestamps \
      >"$LOG_DIR/pods/${name}.log" 2>&1
    kq logs -n "$NAMESPACE" "$pod" --all-containers --prefix --timestamps --previous \
      >"$LOG_DIR/pods/${name}.previous.log" 2>/dev/null || rm -f "$LOG_DIR/pods/${name}.previous.log"
    echo "----- logs of ${pod} (last 40 lines; all in .kind-logs/pods/${name}.log)" >&2
    tail -n 40 "$LOG_DIR/pods/${name}.log" >&2
  done
  bounded 300 kind export logs "$LOG_DIR/kind" --name "$CLUSTER" >/dev/null 2>&1 ||
    log "kind export logs failed"
  log "diagnostics written to ${LOG_DIR}/"
  return 0
}

fail() {
  log "FAILED: $*"
  dump_diagnostics
  exit 1
}

on_error() {
  local rc="$1" cmd="$2" where="" i
  if [[ "$BASHPID" != "$$" ]]; then
    # In a subshell (pipeline, command substitution): let the main shell report it.
    exit "$rc"
  fi
  trap - ERR
  for ((i = 1; i < ${#FUNCNAME[@]}; i++)); do
    where+="${where:+ <- }${FUNCNAME[$i]}:${BASH_LINENO[$((i - 1))]}"
  done
  log "FAILED (exit ${rc}) at ${where}: ${cmd}"
  dump_diagnostics
  exit 1
}

cleanup() {
  local rc=$?
  set +e
  trap - ERR
  rm -rf "$SECRETS_DIR"
  if [[ "$KEEP" == 1 ]]; then
    if cluster_exists; then
      log "KEEP=1: cluster ${CLUSTER} kept; use it with: export KUBECONFIG=${KUBECONFIG}"
      log "delete it later with: kind delete cluster --name ${CLUSTER} --kubeconfig ${KUBECONFIG}"
    fi
  elif cluster_exists; then
    log "deleting cluster ${CLUSTER} (KEEP=1 keeps it)"
    bounded 300 kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1 ||
      log "could not delete cluster ${CLUSTER}: run kind delete cluster --name ${CLUSTER}"
  fi
  if ((rc == 0)); then
    log "PASSED"
  else
    log "exit ${rc}; logs in ${LOG_DIR}/"
  fi
  exit "$rc"
}

trap 'on_error $? "$BASH_COMMAND"' ERR
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------------------
# 1. Cluster
# ----------------------------------------------------------------------------------------
if cluster_exists; then
  log "reusing kind cluster ${CLUSTER}"
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
  log "creating kind cluster ${CLUSTER}"
  create_args=(create cluster --name "$CLUSTER" --config "${ROOT}/k8s/kind-config.yaml"
    --kubeconfig "$KUBECONFIG" --wait 180s)
  if [[ -n "$KIND_NODE_IMAGE" ]]; then
    create_args+=(--image "$KIND_NODE_IMAGE")
  fi
  bounded 900 kind "${create_args[@]}"
fi
kc wait --for=condition=Ready node --all --timeout=180s

# ----------------------------------------------------------------------------------------
# 2. Image
# ----------------------------------------------------------------------------------------
SOURCE_IMAGE="${SKILLMIX_IMAGE:-}"
if [[ -n "$SOURCE_IMAGE" ]] && "${ROOT}/scripts/podman.sh" image exists "$SOURCE_IMAGE" 2>/dev/null; then
  # `make image`'s image, exactly: saved by podman, loaded by kind (no Docker build)
  log "loading ${SOURCE_IMAGE} (make image) into ${CLUSTER} as ${IMAGE}"
  bounded 120 "${ROOT}/scripts/podman.sh" tag "$SOURCE_IMAGE" "$IMAGE"
  rm -f "${STATE_DIR}/image.tar"
  bounded 600 "${ROOT}/scripts/podman.sh" save --quiet --format docker-archive -o "${STATE_DIR}/image.tar" "$IMAGE"
  bounded 600 kind load image-archive "${STATE_DIR}/image.tar" --name "$CLUSTER"
  rm -f "${STATE_DIR}/image.tar"
else
  log "building ${IMAGE} with docker (SKILLMIX_IMAGE unset or not in podman's storage)"
  bounded 1800 docker build -f "${ROOT}/docker/Dockerfile" -t "$IMAGE" \
    --build-arg VERSION=kind-test "$ROOT"
  log "loading ${IMAGE} into ${CLUSTER}"
  # With Docker's containerd image store (default since Docker 29) `kind load docker-image`
  # can fail with "content digest ... not found" (kind issue #3795); kind's documented
  # workaround is a single-platform `docker image save --platform` + `kind load image-archive`.
  if ! bounded 600 kind load docker-image "$IMAGE" --name "$CLUSTER"; then
    log "kind load docker-image failed; retrying with a single-platform image archive"
    server_arch="$(bounded 60 docker version --format '{{.Server.Arch}}')"
    bounded 600 docker image save --platform "linux/${server_arch}" -o "${STATE_DIR}/image.tar" "$IMAGE"
    bounded 600 kind load image-archive "${STATE_DIR}/image.tar" --name "$CLUSTER"
    rm -f "${STATE_DIR}/image.tar"
  fi
fi

# ----------------------------------------------------------------------------------------
# 3. Namespace, S3 credentials, MinIO, bucket
# ----------------------------------------------------------------------------------------
if ! kq get namespace "$NAMESPACE" >/dev/null 2>&1; then
  kc create namespace "$NAMESPACE"
fi
# the run's coordinator releases the held-back Jobs: its Role (the file's namespace is ours)
kc apply -n "$NAMESPACE" -f "${ROOT}/k8s/rbac-coordinator.yaml"

b64decode() { "$PYTHON" -c 'import base64, sys; sys.stdout.write(base64.b64decode(sys.stdin.read()).decode())'; }
old_umask="$(umask)"
umask 077
if kq get secret "$S3_SECRET" -n "$NAMESPACE" >/dev/null 2>&1; then
    # A reused cluster: MinIO already runs with these keys, so keep them.
  log "reusing Secret ${S3_SECRET}"
  for key in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    kq get secret "$S3_SECRET" -n "$NAMESPACE" -o "jsonpath={.data.${key}}" | b64decode \
      >"${SECRETS_DIR}/${key}"
  done
else
  log "creating Secret ${S3_SECRET} with random keys"
  "$PYTHON" -c 'import secrets, sys; sys.stdout.write("skillmix" + secrets.token_hex(8))' \
    >"${SECRETS_DIR}/AWS_ACCESS_KEY_ID"
  "$PYTHON" -c 'import secrets, sys; sys.stdout.write(secrets.token_hex(24))' \
    >"${SECRETS_DIR}/AWS_SECRET_ACCESS_KEY"
  kq create secret generic "$S3_SECRET" -n "$NAMESPACE" \
    --from-file=AWS_ACCESS_KEY_ID="${SECRETS_DIR}/AWS_ACCESS_KEY_ID" \
    --from-file=AWS_SECRET_ACCESS_KEY="${SECRETS_DIR}/AWS_SECRET_ACCESS_KEY" >/dev/null
fi
umask "$old_umask"
[[ -s "${SECRETS_DIR}/AWS_ACCESS_KEY_ID" && -s "${SECRETS_DIR}/AWS_SECRET_ACCESS_KEY" ]] ||
  fail "Secret ${S3_SECRET} has no usable AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"

log "starting MinIO"
kc apply -n "$NAMESPACE" -f "${ROOT}/k8s/minio.yaml"
kc rollout status deployment/minio -n "$NAMESPACE" --timeout=300s

# Wait for the bucket Job to complete, failing fast if it fails (kubectl wait can only wait
# for one condition).
wait_job() {
  local job="$1" seconds="$2" deadline conditions
  deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    conditions="$(kq get "job/${job}" -n "$NAMESPACE" \
      -o 'jsonpath={range .status.conditions[*]}{.type}={.status}{"\n"}{end}' 2>/dev/null || true)"
    if grep -qx 'Complete=True' <<<"$conditions"; then
      return 0
    fi
    if grep -qx 'Failed=True' <<<"$conditions"; then
      fail "Job ${job} failed"
    fi
    sleep 3
  done
  fail "Job ${job} did not complete within ${seconds}s"
}
wait_job minio-create-bucket 300

# The host side of the NodePort mapping (k8s/kind-config.yaml extraPortMappings).
log "waiting for MinIO at ${HOST_S3_URL}"
bounded 150 "$PYTHON" - "$HOST_S3_URL" <<'PY' || fail "MinIO is not reachable from the host at ${HOST_S3_URL}"
import sys
import time
import urllib.request

url = sys.argv[1] + "/minio/health/ready"
deadline = time.monotonic() + 120
error = "not ready"
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                sys.exit(0)
            error = f"HTTP {response.status}"
    except OSError as exc:
        error = str(exc)
    if time.monotonic() > deadline:
        sys.exit(f"{url}: {error}")
    time.sleep(2)
PY

# ----------------------------------------------------------------------------------------
# 4. Launch the run with the real CLI and wait for it
# ----------------------------------------------------------------------------------------
AWS_ACCESS_KEY_ID="$(cat "${SECRETS_DIR}/AWS_ACCESS_KEY_ID")"
AWS_SECRET_ACCESS_KEY="$(cat "${SECRETS_DIR}/AWS_SECRET_ACCESS_KEY")"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=us-east-1
export SKILLMIX_S3_ENDPOINT_URL="$HOST_S3_URL"
export SKILLMIX_CONFIG="$PROFILE_FILE"
# Anything from the caller's AWS setup would fight the MinIO keys.
unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE AWS_REGION AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3

log "launching k8s/experiment.kind.yaml on cluster profile 'kind' (timeout ${LAUNCH_TIMEOUT}s)"
launch_rc=0
bounded $((LAUNCH_TIMEOUT + 120)) "$SKILLMIX" launch -f "$EXPERIMENT_FILE" --cluster kind \
  --wait --timeout "$LAUNCH_TIMEOUT" 2>&1 | tee "$LOG_DIR/launch.log" || launch_rc=$?
RUN_ID="$(grep -io 'run id:[[:space:]]*[A-Za-z0-9._-][A-Za-z0-9._-]*' "$LOG_DIR/launch.log" |
  tail -n 1 | sed 's/^[^:]*:[[:space:]]*//' || true)"
if ((launch_rc != 0)); then
  fail "skillmix launch exited ${launch_rc}${RUN_ID:+ (run ${RUN_ID})}; see ${LOG_DIR}/launch.log"
fi
[[ -n "$RUN_ID" ]] || fail "no 'run id: <id>' line in the output of skillmix launch"
log "run ${RUN_ID} finished"

# ----------------------------------------------------------------------------------------
# 5. Check the report
# ----------------------------------------------------------------------------------------
bounded 300 "$SKILLMIX" aggregate "${STORE}/${RUN_ID}" --format json >"$LOG_DIR/aggregate.json" ||
  fail "skillmix aggregate ${STORE}/${RUN_ID} failed"
"$PYTHON" - "$LOG_DIR/aggregate.json" "$EXPECT_STUDENTS" "$EXPECT_KS" "$EXPECT_N" \
  "$STRONG_STUDENT" "$WEAK_STUDENT" <<'PY' || fail "the report of run ${RUN_ID} is not as expected"
import json
import math
import sys

path, students, ks, n, strong, weak = sys.argv[1:]
students = students.split(",")
ks = [int(k) for k in ks.split(",")]
n = int(n)
metrics = ("full_marks", "all_skills", "skill_fraction")
errors = []

with open(path, encoding="utf-8") as f:
    report = json.load(f)
rows = report.get("rows")
if not isinstance(rows, list):
    sys.exit(f"{path}: no 'rows' list in the aggregate output")

seen = {}
for row in rows:
    key = (row.get("student"), row.get("k"))
    if key in seen:
        errors.append(f"duplicate row for student={key[0]} k={key[1]}")
    seen[key] = row
expected = {(s, k) for s in students for k in ks}
if set(seen) != expected:
    errors.append(f"rows for {sorted(seen)}, expected one per (student, k) in {sorted(expected)}")

for (student, k), row in sorted(seen.items()):
    if row.get("n") != n:
        errors.append(f"{student} k={k}: n={row.get('n')}, expected {n}")
    for name in metrics:
        value = (row.get(name) or {}).get("mean")
        if not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
            errors.append(f"{student} k={k}: {name} mean {value!r} is not in [0, 1]")
    print(
        f"  {student:>8} k={k} n={row.get('n')} "
        + " ".join(f"{m}={(row.get(m) or {}).get('mean')}" for m in metrics)
    )


def full_marks(student):
    values = [(seen.get((student, k)) or {}).get("full_marks", {}).get("mean") for k in ks]
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else float("nan")


fm_strong, fm_weak = full_marks(strong), full_marks(weak)
print(f"  Full Marks averaged over k: {strong}={fm_strong:.3f} {weak}={fm_weak:.3f}")
if not fm_strong >= fm_weak:
    errors.append(f"{strong} ({fm_strong:.3f}) scored below {weak} ({fm_weak:.3f}) on Full Marks")

for error in errors:
    print(f"report check: {error}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

log "report of ${STORE}/${RUN_ID} checked"
