# tcr-addon developer commands. `make setup` then `make test`; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Bytecode is written (in __pycache__, which git and the images' build contexts leave out): an
# environment with PYTHONDONTWRITEBYTECODE set would recompile every module of ours, and pytest
# rewrite every test's asserts, in each process: about a third of the unit tier's CPU time.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup test test-unit test-matrix test-long lint demo demo-down e2e e2e-kind kind-image images package publish bench bench-quick clean
HARNESS := PYTHONPATH=scripts $(PY) -m

setup: $(STAMP) ## Install everything the tests need: .venv, Debian packages, Go-built tools, the images' base.
	@$(PYTHON) scripts/tools install
	@PYTHONPATH=scripts $(PY) -m harness.images base
	@PYTHONPATH=scripts $(PY) -c 'from harness import oci; print("[setup] pause binary:", oci.pause_binary())'

$(STAMP): requirements-dev.txt controller/pyproject.toml hosts-updater/pyproject.toml
	@echo "[setup] creating $(VENV) with pinned Python packages …"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	@$(PIP) install --quiet --disable-pip-version-check -e controller -e hosts-updater
	@touch $(STAMP)

test: ## The whole suite: the unit tier first, then the cluster tier on the newest Kubernetes with Helm 4, then the compatibility suite and the node promise on the oldest with Helm 3.
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-unit
	@$(PY) -m pytest -m "cluster and not long and not kind"
	@$(HARNESS) harness.matrix run --oldest-node

# One worker per core and one more: some tests wait (a server's deadline, a drain) and the extra
# worker runs others meanwhile. A file's tests stay on one worker (shared renders, one checkov run).
test-unit: ## The unit tier: every test that needs no control plane, node or Docker engine (no cluster is started; one worker per core, plus one).
	@$(PY) -m pytest -m "not cluster and not long" -n $$(( $$(nproc) + 1 )) --dist loadfile

test-matrix: setup ## The compatibility suite on every pinned Kubernetes minor under Helm 3 and 4, the node promise on the oldest and newest, the e2e journey on kind; writes docs/support/ and the README tables.
	@$(HARNESS) harness.matrix run --record

test-long: ## The long runs: the properties with >= 10,000 examples each (hypothesis profile "long"), the long crash and rebuild tests.
	@$(PY) -m pytest -m "long or many_examples" --hypothesis-profile=long

lint: ## ruff and mypy over every Python file we ship.
	@$(VENV)/bin/ruff check scripts controller hosts-updater tests bench
	@$(VENV)/bin/mypy scripts/harness scripts/values_wizard scripts/migration controller/tcr_assistant hosts-updater/hosts_updater bench
	@# Each test suite has its own conftest module: one mypy run per suite.
	@$(VENV)/bin/mypy --no-error-summary tests/conftest.py tests/support.py
	@for suite in $(filter-out tests/__pycache__/,$(wildcard tests/*/)); do $(VENV)/bin/mypy --no-error-summary "$$suite" || exit 1; done

demo: setup ## See it work without a cluster: local control plane, chart, controller, a few namespaces.
	@$(HARNESS) harness.demo

demo-down: ## Stop what `make demo` started (uninstall first, so nothing is left behind).
	@$(HARNESS) harness.demo down

e2e: ## The e2e suite alone (local control plane, controller as a host process).
	@$(PY) -m pytest tests/e2e

e2e-kind: setup ## The e2e journey on a real kind cluster: with Docker as usual, else offline on our node image (root; the host checked unchanged).
	@$(HARNESS) harness.e2e_kind $(ARGS)

kind-image: setup ## The kind node image for the pinned Kubernetes, built offline with unmodified kind (root; cached by its inputs' hash).
	@$(HARNESS) harness.kind_image $(ARGS)

images: $(STAMP) ## Build both images offline with a real Docker engine (root; cached) and load them into a running node.
	@PYTHONPATH=scripts $(PY) -m harness.images build --load

package: $(STAMP) ## dist/: the chart archive (version from Chart.yaml) and both images for its appVersion (root).
	@PYTHONPATH=scripts $(PY) -m harness.release package

publish: $(STAMP) ## make publish REGISTRY=host[:port]/path [CA_DIR=dir-with-ca.crt] [AUTHFILE=auth.json]: push all three.
	@test -n "$(REGISTRY)" || { echo "usage: make publish REGISTRY=host[:port]/path" >&2; exit 2; }
	@PYTHONPATH=scripts $(PY) -m harness.release publish --registry "$(REGISTRY)" \
		$(if $(CA_DIR),--ca-dir "$(CA_DIR)") $(if $(AUTHFILE),--authfile "$(AUTHFILE)")

bench: setup ## Benchmarks (BENCHMARKS.md): own local control plane, N = 100 / 1,000 / 10,000, 6-8 minutes.
	@PYTHONPATH=scripts $(PY) -m bench.run

bench-quick: setup ## Benchmark smoke: N = 40, about 1 minute (also run by `make test`).
	@PYTHONPATH=scripts $(PY) -m bench.run --quick

clean: ## Remove the virtualenv, local state and compiled bytecode (the tool cache stays: scripts/tools path).
	-@scripts/cluster down >/dev/null 2>&1 || true
	rm -rf $(VENV) .local
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
