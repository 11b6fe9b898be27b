# Conn — every entry point a newcomer or CI needs. See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m conn_localstack.cli

KUBE := $(PY) -m conn_localstack.kube
COMMA := ,

.PHONY: help setup up down status logs test test-unit lint fmt schemas demo console-screenshot bench bench-quick bench-table chaos clean
.PHONY: mutation mutation-score
.PHONY: kube-up kube-down kube-status

# `make logs kafka`, `make up packager`, `make down kafka`: the words after up/down/logs
# name components of the local stack, not make targets.
ifneq ($(filter $(firstword $(MAKECMDGOALS)),up down logs),)
  COMPONENTS := $(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS))
  ifneq ($(COMPONENTS),)
    $(eval $(COMPONENTS):;@:)
  endif
endif

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## Create .venv, install pinned deps, fetch Kafka (Maven), ensure PostgreSQL 15 (idempotent)
	@bash deploy/local/setup.sh

up: ## Start the local stack under its supervisor (or only: make up <component>...; CONN_KUBE=1: also Kubernetes)
	@$(STACK) up $(COMPONENTS)
	@if [ -n "$$CONN_KUBE" ] && [ -z "$(COMPONENTS)" ]; then $(KUBE) up; fi

down: ## Stop what `make up` started: the supervisor and its children (or: make down <component>...)
	@if [ -z "$(COMPONENTS)" ]; then $(KUBE) down; fi
	@$(STACK) down $(COMPONENTS)

kube-up: ## Start the local Kubernetes control plane (etcd, API server, controllers, KWOK node)
	@$(KUBE) up

kube-down: ## Stop the local Kubernetes control plane
	@$(KUBE) down

kube-status: ## Show the local Kubernetes control plane
	@$(KUBE) status

status: ## Per component: state, pid, healthy, restarts, last exit
	@$(STACK) status

logs: ## Follow a component's log: make logs [component] (default: all)
	@$(STACK) logs $(COMPONENTS)

# Production packages checked by mypy --strict (cross-package through mypy_path in pyproject).
TYPED := schemas/conn_schemas core/conn_core runtime/conn_runtime adapters/conn_adapters \
  readmodel/conn_readmodel cli/conn_cli simulator/conn_simulator \
  services/verifier/conn_verifier services/directive-api/conn_api \
  services/packager/conn_packager services/executor/conn_executor deploy/local/conn_localstack

lint: ## ruff check, ruff format --check, mypy --strict on the production packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict $(TYPED)

fmt: ## Format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

schemas: ## Regenerate schemas/json from the pydantic models
	$(PY) -m conn_schemas.generate

test: lint ## Lint, then every test (unit, property, integration against real services)
	$(VENV)/bin/pytest

test-unit: ## Every test without I/O (no broker, database, stack or started process): -m "not integration"
	$(VENV)/bin/pytest -m "not integration"

demo: setup ## The guided-remediation demo on the local stack
	$(PY) -m conn_demo

console-screenshot: ## Regenerate docs/console.png from a real run, on the console tests' private stack
	$(VENV)/bin/pytest tests/console/readme_screenshot.py -p no:cacheprovider

# BENCH=fastpath,capacity,... narrows a run; BENCH_REPS (default 3) sets the repetitions.
BENCH_NAMES = $(subst $(COMMA), ,$(BENCH))
bench: ## Benchmarks (median of 3, same-run baselines, load recorded); writes bench/results/*.json and the README table
	$(PY) -m bench --reps $(or $(BENCH_REPS),3) $(BENCH_NAMES)
	$(PY) -m bench.table --write

bench-quick: ## Small counts, 1 repetition: checks the harness (never published)
	$(PY) -m bench --quick --reps 1 $(BENCH_NAMES)
	$(PY) -m bench.table --write

bench-table: ## Regenerate the README's performance table from bench/results/
	$(PY) -m bench.table --write

# MODULES=rules,fold,... narrows a run; MUTATION_JOBS (default 2) sets mutmut's workers.
mutation: ## Mutation testing of the pure core and codec over the unit tier (slow; not in `make test`)
	@$(PY) tests/mutation/mutation.py run $(subst $(COMMA), ,$(MODULES)); rc=$$?; \
	  $(PY) tests/mutation/mutation.py report; exit $$rc

mutation-score: ## Per-module kill score (killed/total) of the last `make mutation`
	@$(PY) tests/mutation/mutation.py score $(subst $(COMMA), ,$(MODULES))

chaos: ## Full fault suite
	$(VENV)/bin/pytest tests/chaos -m slow

clean: down ## Stop the stack and delete local data
	rm -rf .local
