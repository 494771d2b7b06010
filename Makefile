# tcr-addon developer commands. `make setup` then `make test`; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup test test-long lint unit demo bench bench-quick e2e-kind clean

setup: $(STAMP) ## Install everything the tests need: .venv with pinned packages, Go-built tools.
	@$(PYTHON) scripts/tools install

$(STAMP): requirements-dev.txt controller/pyproject.toml hosts-updater/pyproject.toml
	@echo "[setup] creating $(VENV) with pinned Python packages …"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	@$(PIP) install --quiet --disable-pip-version-check -e controller -e hosts-updater
	@touch $(STAMP)

test: ## The whole suite: lint, type checks, unit, property and integration tests on a local control plane.
	@$(MAKE) --no-print-directory lint
	@$(PY) -m pytest -m "not long"

test-long: ## The long property runs (>= 10,000 examples each).
	@$(PY) -m pytest -m long

lint: ## ruff and mypy over every Python file we ship.
	@$(VENV)/bin/ruff check scripts controller hosts-updater tests
	@$(VENV)/bin/mypy scripts/harness controller/tcr_assistant hosts-updater/hosts_updater

clean: ## Remove the virtualenv and local state (the tool cache stays: scripts/tools path).
	-@scripts/cluster down >/dev/null 2>&1 || true
	rm -rf $(VENV) .local
