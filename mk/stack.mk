# Stack layer: the chart rendered for local environments (scripts/helm template), run on
# loopback without Kubernetes: Redis, the Deployment's replicas, nginx as the ingress.
# Included by the main Makefile, which defines PY, VENV_STAMP and PYTEST.
STACK_DEPS := nginx-light redis-server
# make stack STACK_ENVS=local STACK_SET='config.rateLimit.search=5/minute'
STACK_ENVS ?=
STACK_SET ?=

.PHONY: stack-deps
stack-deps: ## Debian packages the stack needs (nginx-light, redis-server), when missing and possible
	@scripts/ensure-system-deps $(STACK_DEPS)

# `make test` runs tests/stack too: it needs nginx as well as redis-server.
test: stack-deps

.PHONY: stack
stack: $(VENV_STAMP) stack-deps ## run the rendered local + local-b environments on loopback until Ctrl-C
	@$(PY) -m stack up $(foreach env,$(STACK_ENVS),--env $(env)) $(foreach set,$(STACK_SET),--set $(set))

.PHONY: test-stack
test-stack: $(VENV_STAMP) stack-deps ## end-to-end tests through nginx against the rendered stack
	$(PYTEST) tests/stack
