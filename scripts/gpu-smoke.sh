#!/usr/bin/env bash
# GPU smoke test of the local vLLM path (NOT part of CI or `make test`; needs Linux and an
# NVIDIA GPU): installs skillmix with its `vllm` extra into a venv, builds a tiny randomly
# initialised Llama model folder with a locally built tokenizer and chat template
# (scripts/gpu_smoke_model.py: no hub access needed), then runs `skillmix evaluate --backend
# vllm` on it end to end, twice: the quick form, and an experiment file with `vllm:` settings.
# It checks that each run wrote answers and a report, that the server's log is in the run
# folder, and that no vLLM process is left behind.
#
#   scripts/gpu-smoke.sh                 # everything in a fresh temporary folder
#
# Environment (all optional):
#   SMOKE_DIR     work folder (default: a new temporary folder, removed on success)
#   SMOKE_PYTHON  the Python the venv is made from (default: python3); the venv sees its
#                 site-packages, so a torch/vllm already installed there is reused
#   SMOKE_VENV    an existing venv with skillmix[vllm] installed: skip the install
#   SMOKE_MODEL   an existing model folder to serve instead of building the tiny one
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels   pip's own variables: install from a wheel folder
#                 on a machine without a package index
#
# Its steps were dry-run on a machine without a GPU against the stand-in vllm of the tests
# (tests/fake_vllm/vllm, with SMOKE_VENV, SMOKE_MODEL and a fake nvidia-smi); see the README for
# whether it has run on a GPU.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${SMOKE_DIR:-$(mktemp -d -t skillmix-gpu-smoke.XXXXXX)}
python=${SMOKE_PYTHON:-python3}
mkdir -p "$work"
log() { printf '\n== %s\n' "$*" >&2; }
fail() { printf 'gpu-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this needs a machine with an NVIDIA GPU"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader >&2

if [[ -n ${SMOKE_VENV:-} ]]; then
  venv=$SMOKE_VENV
else
  venv=$work/venv
  log "installing skillmix[vllm] into $venv (several GB: torch and vllm)"
  "$python" -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "${root}[vllm]"
fi
[[ -x $venv/bin/vllm ]] || fail "$venv/bin/vllm is missing: skillmix[vllm] is not installed there"
[[ -x $venv/bin/skillmix ]] || fail "$venv/bin/skillmix is missing"
"$venv/bin/vllm" --version >&2
"$venv/bin/skillmix" --version >&2

# No hub: everything the server loads is in the model folder.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=$work/hf-home
# skillmix finds `vllm` on PATH (else beside its Python): put the venv first.
export PATH="$venv/bin:$PATH"

if [[ -n ${SMOKE_MODEL:-} ]]; then
  model=$SMOKE_MODEL
else
  model=$work/tiny-llama
  log "building a tiny random Llama in $model"
  "$venv/bin/python" "$root/scripts/gpu_smoke_model.py" "$model"
fi

# Servers this script's runs started: none may survive a run.
leftovers() { pgrep -f -- "serve $model" || true; }
[[ -z $(leftovers) ]] || fail "a vLLM server for $model is already running: $(leftovers)"

# One finished run: a report, answers, the server log; no server left.
check_run() {
  local store=$1 run logs
  run=$(find "$store" -mindepth 1 -maxdepth 1 -type d ! -name '_*' | head -n 1)
  [[ -n $run ]] || fail "no run folder in $store"
  [[ -f $run/report/summary.json ]] || fail "$run has no report/summary.json"
  logs=$(find "$run/logs" -name 'vllm-*.log' -size +0 2>/dev/null | head -n 1)
  [[ -n $logs ]] || fail "$run has no logs/vllm-STUDENT.log"
  grep -q "serve $model" "$logs" || fail "$logs does not start with the vllm serve command"
  "$venv/bin/python" - "$run" <<'PY' || fail "$run: no answers"
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
records = [json.loads(line) for part in run.glob("generations/**/part-*.jsonl")
           for line in part.read_text().splitlines()]
ok = [r for r in records if r["status"] == "ok" and r["answer"]]
print(f"{run.name}: {len(ok)} of {len(records)} generations answered", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
  sleep 1
  [[ -z $(leftovers) ]] || fail "vLLM processes left behind: $(leftovers)"
}

log "1. the quick form: skillmix evaluate --model $model --backend vllm"
# Random weights write gibberish: a few empty answers may fail; the lifecycle is what counts.
"$venv/bin/skillmix" evaluate --model "$model" --backend vllm --k 2 -n 4 \
  --grading-rounds 1 --sampling-params max_tokens=32,temperature=0.8 \
  --store "$work/runs-quick" --vllm-health-timeout 900 --no-progress --allow-failures
check_run "$work/runs-quick"

log "2. an experiment file with vllm: settings (tensor parallel, args)"
cat >"$work/smoke.yaml" <<EOF
name: gpu-smoke
seed: 10
ks: [2, 3]
combinations: 4
students:
  - name: tiny
    backend: vllm
    model: tiny-chat
    sampling: {temperature: 0.8, max_tokens: 32}
    concurrency: 8
    vllm:
      model: $model
      tensor_parallel_size: 1
      args: ["--max-model-len", "2048", "--gpu-memory-utilization", "0.3", "--enforce-eager", "--seed", "1"]
grader:
  name: mock-grader
  backend: mock
  model: mock-grader
  rounds: 1
store: $work/runs-file
EOF
"$venv/bin/skillmix" evaluate -f "$work/smoke.yaml" --vllm-health-timeout 900 --no-progress --allow-failures
check_run "$work/runs-file"

log "3. a bound too short: exit 1 with the log's last lines, and the server stopped"
code=0
"$venv/bin/skillmix" evaluate -f "$work/smoke.yaml" --overwrite --vllm-health-timeout 1 \
  --no-progress 2>"$work/short-bound.err" || code=$?
cat "$work/short-bound.err" >&2
[[ $code -eq 1 ]] || fail "a 1 s health bound gave exit $code, not 1"
grep -q '^last lines of the vLLM log:' "$work/short-bound.err" || fail "no log lines shown"
tail -n 1 "$work/short-bound.err" | grep -q 'did not become healthy within 1 s' \
  || fail "the last line does not name the bound"
sleep 1
[[ -z $(leftovers) ]] || fail "vLLM processes left behind after the bound: $(leftovers)"

log "gpu-smoke: PASSED"
if [[ -z ${SMOKE_DIR:-} ]]; then rm -rf "$work"; fi
