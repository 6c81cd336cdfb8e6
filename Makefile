# Gatehouse: every target a short verb; CI runs `make lint test` through .ci/run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY := .venv/bin/python
VENV_STAMP := .venv/.synced
PYTEST := $(PY) -m pytest
# Loopback by default: `make run` is for the developer's own browser.
APP_HOST ?= 127.0.0.1
APP_PORT ?= 8000

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV_STAMP): pyproject.toml uv.lock scripts/bootstrap-python
	@scripts/bootstrap-python
	@touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## the virtualenv, synced from uv.lock

.PHONY: system-deps
system-deps: ## Debian packages the tests need (redis-server), when missing and possible
	@scripts/ensure-system-deps redis-server redis-sentinel wrk nginx-light chromium gcc

.PHONY: run
run: $(VENV_STAMP) ## serve the API on 127.0.0.1:8000 with the embedded defaults (memory limits)
	APP_HOST=$(APP_HOST) APP_PORT=$(APP_PORT) $(PY) -m gatehouse

.PHONY: cors-check
cors-check: $(VENV_STAMP) ## what a browser gets under a namespace's values: make cors-check ARGS="--values k8s/values-staging.yaml --origin https://app.staging.gatehouse.example --method PUT"
	$(PY) -m gatehouse.cors_check $(ARGS)

.PHONY: lint
lint: $(VENV_STAMP) ## ruff (lint + format check) and mypy --strict on the service
	$(PY) -m ruff check services tests bench stack cluster scripts/build-compiled
	$(PY) -m ruff format --check services tests bench stack cluster scripts/build-compiled
	$(PY) -m mypy

.PHONY: format
format: $(VENV_STAMP) ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix services tests bench stack cluster scripts/build-compiled
	$(PY) -m ruff format services tests bench stack cluster scripts/build-compiled

.PHONY: test-unit
test-unit: $(VENV_STAMP) ## in-process tests, nothing else needed
	$(PYTEST) tests/unit

.PHONY: compiled
compiled: $(VENV_STAMP) ## the per-request modules compiled with mypyc -> build/compiled/ (the image ships them)
	$(PY) scripts/build-compiled

.PHONY: test-compiled
test-compiled: $(VENV_STAMP) ## the compiled build: its modules native, the unit suite against it
	$(PYTEST) tests/compiled

.PHONY: test-service
test-service: $(VENV_STAMP) system-deps ## real uvicorn processes and a real redis-server
	$(PYTEST) tests/service

.PHONY: test
# The layers that need no cluster run first, with none running: its control loops (kube-router
# rewrites iptables every second or so) take a share of a 2-core machine that timing tests
# would feel. Then the cluster suites, on it. Both run; either failing fails the target.
test: $(VENV_STAMP) system-deps ## set up everything and run every layer, the cluster suite on the local cluster (as root)
	status=0; \
	$(PYTEST) tests --ignore=tests/k8s --ignore=tests/skaffold || status=1; \
	scripts/with-cluster $(PYTEST) tests/k8s tests/skaffold || status=1; \
	exit $$status

.PHONY: bench
bench: $(VENV_STAMP) system-deps ## one interleaved run: bare, floor, peer stack, lesson, Gatehouse; throughput, memory, open-loop latency, instructions -> bench/results/
	@scripts/ensure-system-deps wrk valgrind
	$(PY) -m bench.run

.PHONY: bench-profile
bench-profile: $(VENV_STAMP) system-deps ## where a request's time goes: server CPU, layers (valgrind), py-spy -> bench/results/profile.md
	@scripts/ensure-system-deps wrk valgrind
	$(PY) -m bench.profile

.PHONY: bench-cache-misses
bench-cache-misses: $(VENV_STAMP) system-deps ## instructions and simulated cache misses per request: bare, floor, Gatehouse (valgrind) -> bench/results/cache_misses.md
	@scripts/ensure-system-deps valgrind
	$(PY) -m bench.cache_misses

.PHONY: bench-algorithms
bench-algorithms: $(VENV_STAMP) system-deps ## what each rate-limit algorithm costs Redis per check, x fixed -> bench/results/algorithms.md
	$(PY) -m bench.algorithms

.PHONY: bench-smoke
bench-smoke: $(VENV_STAMP) system-deps ## a seconds-long benchmark run, as CI does (no timing asserted)
	$(PYTEST) tests/bench

include $(wildcard mk/*.mk)
