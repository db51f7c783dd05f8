# skillmix developer commands. `make test` is what CI runs (via .ci/run).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(CURDIR)/.tools/bin:$(BIN):$(PATH)
# Compatibility tests against the reference release run when this folder exists.
SKILLMIX_REFERENCE_DIR ?= $(wildcard $(CURDIR)/../shared/reference)
export SKILLMIX_REFERENCE_DIR
# pytest-xdist workers: the main suite is CPU-bound (2 cores); the cluster tests mostly wait on
# controllers and pods, so each of their workers runs its own control plane.
TEST_WORKERS ?= 2
CLUSTER_TEST_WORKERS ?= 3
# The image that `make image` builds (podman, scripts/build-image.sh) and the tests run.
IMAGE ?= localhost/skillmix:dev
export SKILLMIX_IMAGE := $(IMAGE)

.PHONY: install tools browser image-tools image image-test lock test lint format demo demo-tasks benchmarks benchmarks-smoke kind-test cluster-test cluster-up cluster-down clean help

help:
	@echo "make install     create .venv and install skillmix with dev extras"
	@echo "make tools       install helm and kubectl into .tools/bin"
	@echo "make browser     Debian's chromium + chromium-driver for tests/browser (apt-get, as root)"
	@echo "make image-tools podman, runc and mmdebstrap (apt-get, as root; make image runs it)"
	@echo "make image       build docker/Dockerfile with podman (installs podman, runc, mmdebstrap as root)"
	@echo "make image-test  run the built image as a pod would (uid 10001, read-only root, no network)"
	@echo "make lock        re-pin the image's dependencies (docker/requirements*.lock)"
	@echo "make test        ruff, mypy and the whole test suite"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make demo        a full local run on the built-in mock backend"
	@echo "make demo-tasks  two mock models on MATH500 (fixture rows), side by side"
	@echo "make benchmarks  run benchmarks/ and print their JSON"
	@echo "make benchmarks-smoke every benchmark at a tiny size (~30 s; make test runs it)"
	@echo "make cluster-test the Kubernetes tests on a real control plane (make test runs it last)"
	@echo "make cluster-up  start that control plane for you (kubeconfig + profile printed)"
	@echo "make cluster-down stop it"
	@echo "make kind-test   end-to-end on a local kind cluster (needs Docker)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

tools: install
	PYTHON=$(PY) ./scripts/install-tools.sh
	./scripts/install-control-plane.sh
	./scripts/install-kueue.sh

browser:
	./scripts/install-browser.sh

image-tools:
	./scripts/install-image-tools.sh

image:
	IMAGE=$(IMAGE) ./scripts/build-image.sh

image-test: install image
	$(PY) -m pytest tests/image -p no:cacheprovider

LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	--custom-compile-command "make lock" --quiet
lock: install
	$(PY) -m pip install --quiet "uv>=0.5"
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o docker/requirements.lock
	$(BIN)/uv pip compile docker/requirements-build.in $(LOCK_FLAGS) -o docker/requirements-build.lock

test: install tools
	$(BIN)/ruff check skillmix tests benchmarks
	$(BIN)/ruff format --check skillmix tests benchmarks
	$(BIN)/mypy
	$(PY) -m pytest --ignore=tests/cluster --ignore=tests/image -n $(TEST_WORKERS)
	$(MAKE) --no-print-directory benchmarks-smoke
	$(MAKE) --no-print-directory image-test
	$(MAKE) --no-print-directory cluster-test

lint: install
	$(BIN)/ruff check skillmix tests benchmarks
	$(BIN)/ruff format --check skillmix tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff format skillmix tests benchmarks
	$(BIN)/ruff check --fix skillmix tests benchmarks

demo: install
	$(BIN)/skillmix evaluate -f examples/quickstart.yaml --resume

# two mock models (right 80% and 50% of the time) on the fixture MATH500 rows, then the board;
# then SKILL-MIX and two tasks in one run from one experiment file (examples/leaderboard.yaml)
DEMO_TASKS_DIR ?= results/demo-tasks
demo-tasks: install
	for q in 0.8 0.5; do \
	  $(BIN)/skillmix evaluate --task math500 --dataset-file tests/data/tasks/math500.jsonl \
	    --model mock-q$$q --backend mock --backend-args quality=$$q \
	    --sampling-params temperature=0.7 --n 4 --result-dir $(DEMO_TASKS_DIR) --resume || exit 1; \
	done
	$(BIN)/skillmix leaderboard $(DEMO_TASKS_DIR) --out $(DEMO_TASKS_DIR)
	$(BIN)/skillmix evaluate -f examples/leaderboard.yaml --resume

benchmarks: install
	$(PY) benchmarks/run_all.py

# bench_launch needs the control plane (tools); fails when any benchmark fails
benchmarks-smoke: install tools
	$(PY) benchmarks/run_all.py --smoke

# image: one cluster test runs a whole launch from `make image`'s image (tests/cluster/test_image_on_cluster.py)
# --timeout 600: a whole launch waits up to 480 s of its own on a loaded 2-core machine; the
# suite-wide 300 s would cut it first (tests that want less say so with a marker)
cluster-test: install tools image
	$(PY) -m pytest tests/cluster -n $(CLUSTER_TEST_WORKERS) --dist loadgroup --timeout 600

cluster-up: install tools
	$(PY) -m tests.cluster up

cluster-down:
	$(PY) -m tests.cluster down

kind-test: install tools image
	bash k8s/kind-test.sh

clean:
	rm -rf $(VENV) .tools .cluster .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
