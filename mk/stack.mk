# Stack layer: the chart rendered for local environments (scripts/helm template), run on
# loopback without Kubernetes: Redis, the Deployment's replicas, nginx as the ingress.
# Included by the main Makefile, which defines PY, VENV_STAMP and PYTEST (and mk/image.mk
# the `image` target and IMAGE).
STACK_DEPS := nginx-light redis-server
# make stack STACK_ENVS=local STACK_SET='config.rateLimit.search=5/minute'
STACK_ENVS ?=
STACK_SET ?=
# make stack STACK_RUNTIME=container: the API replicas as containers of IMAGE (built by
# scripts/build-image when missing), with the rendered security context; Redis and nginx
# stay local processes.
STACK_RUNTIME ?= process

.PHONY: stack-deps
stack-deps: ## Debian packages the stack needs (nginx-light, redis-server), when missing and possible
	@scripts/ensure-system-deps $(STACK_DEPS)

# `make test` runs tests/stack too: it needs nginx as well as redis-server.
test: stack-deps

.PHONY: stack
stack: $(VENV_STAMP) stack-deps ## run the rendered local + local-b environments on loopback until Ctrl-C (STACK_RUNTIME=container: API pods as containers)
	@$(PY) -m stack up --runtime $(STACK_RUNTIME) $(foreach env,$(STACK_ENVS),--env $(env)) $(foreach set,$(STACK_SET),--set $(set))

.PHONY: test-stack
test-stack: $(VENV_STAMP) stack-deps ## end-to-end tests through nginx against the rendered stack
	$(PYTEST) tests/stack

.PHONY: test-stack-container
test-stack-container: $(VENV_STAMP) stack-deps image ## the same end-to-end tests, the API replicas as containers of IMAGE
	STACK_RUNTIME=container $(PYTEST) tests/stack
