# Cluster layer: the local single-node cluster (python -m cluster), the probe against a live
# service, skaffold.yaml against its schema, and the cluster suite. Included by the main
# Makefile (PY, PYTEST, VENV_STAMP). Pass suite options through K8S_TEST_ARGS, e.g.
#   make k8s-test K8S_TEST_ARGS='--image gatehouse-api:dev --no-netpol'
K8S_TEST_ARGS ?=

.PHONY: cluster
cluster: $(VENV_STAMP) ## build (once) and start the local cluster; writes .cluster/kubeconfig
	@scripts/ensure-system-deps iptables ipset conntrack runc openssl
	$(PY) -m cluster up

.PHONY: cluster-stop
cluster-stop: $(VENV_STAMP) ## stop what `make cluster` started and remove its state (logs stay)
	$(PY) -m cluster down

.PHONY: cluster-status
cluster-status: $(VENV_STAMP) ## which of the cluster's daemons run
	@$(PY) -m cluster status

.PHONY: test-probe
test-probe: $(VENV_STAMP) ## the probe (python -m gatehouse.probe) against a real local service
	$(PYTEST) tests/probe

.PHONY: skaffold-check
skaffold-check: $(VENV_STAMP) ## skaffold.yaml: v4beta14 schema, profiles, image, verify stage
	$(PYTEST) tests/skaffold

.PHONY: k8s-test
k8s-test: $(VENV_STAMP) ## the cluster suite: on the local cluster (started if need be, as root), or on $$KUBECONFIG
	scripts/with-cluster $(PYTEST) tests/k8s -m k8s $(K8S_TEST_ARGS)
