# Cluster layer: the probe against a live service, skaffold.yaml against its schema, and the
# cluster suite against the current kube context. Included by the main Makefile (PY, PYTEST,
# VENV_STAMP). Pass suite options through K8S_TEST_ARGS, e.g.
#   make k8s-test K8S_TEST_ARGS='--image gatehouse-api:dev --ingress-url http://ingress-nginx-controller.ingress-nginx.svc'
K8S_TEST_ARGS ?=

.PHONY: test-probe
test-probe: $(VENV_STAMP) ## the probe (python -m gatehouse.probe) against a real local service
	$(PYTEST) tests/probe

.PHONY: skaffold-check
skaffold-check: $(VENV_STAMP) ## skaffold.yaml: v4beta14 schema, profiles, image, verify stage
	$(PYTEST) tests/skaffold

.PHONY: k8s-test
k8s-test: $(VENV_STAMP) ## the cluster suite against the current kube context (K8S_TEST_ARGS=...)
	$(PYTEST) tests/k8s -m k8s $(K8S_TEST_ARGS)
