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
skaffold-check: $(VENV_STAMP) ## skaffold.yaml: v4beta14 schema, profiles, image, verify stage (and Skaffold's reading of it, once built)
	$(PYTEST) tests/skaffold/test_skaffold_schema.py tests/skaffold/test_skaffold_render.py

# Skaffold on the local cluster (`make cluster` builds it into .cluster/bin): the kube context
# activates skaffold.yaml's `local` profile, which loads each built image into the node. The
# build cache lives in .cluster/, which `make cluster-stop` removes with the node's images:
# a cache outliving them would skip the build, and with it the load, against a new cluster.
SKAFFOLD_LOCAL = KUBECONFIG=$(CURDIR)/.cluster/kubeconfig \
	PATH=$(CURDIR)/.cluster/bin:$(CURDIR)/.tools/bin:$$PATH \
	SKAFFOLD_CACHE_FILE=$(CURDIR)/.cluster/skaffold-cache .cluster/bin/skaffold

.PHONY: skaffold-prepare
skaffold-prepare: $(VENV_STAMP)
	@test -x .cluster/bin/skaffold || { echo "no .cluster/bin/skaffold: make cluster first" >&2; exit 1; }
	@scripts/helm version >/dev/null  # Skaffold calls helm from PATH: fetched into .tools/bin if need be
	@test -f build/image/base-image || scripts/build-image --stage-only  # a fresh clone (skaffold.yaml)
	@scripts/build-redis-image && $(PY) -m cluster load gatehouse-redis:7.0-bookworm
	@KUBECONFIG=$(CURDIR)/.cluster/kubeconfig .cluster/bin/kubectl apply -f k8s/namespaces.yaml

.PHONY: skaffold-run
skaffold-run: skaffold-prepare ## skaffold run into gatehouse-dev on the local cluster (as root)
	$(SKAFFOLD_LOCAL) run

.PHONY: skaffold-dev
skaffold-dev: skaffold-prepare ## skaffold dev on the local cluster: .py edits synced, port-forward to :8000
	$(SKAFFOLD_LOCAL) dev

.PHONY: skaffold-verify
skaffold-verify: skaffold-prepare ## the dev profile's verify Jobs against what skaffold-run deployed
	$(SKAFFOLD_LOCAL) build --file-output build/skaffold.json
	$(SKAFFOLD_LOCAL) verify -p dev -a build/skaffold.json

.PHONY: skaffold-test
skaffold-test: $(VENV_STAMP) ## skaffold run, verify (passing and failing) and dev, for real on the local cluster
	scripts/with-cluster $(PYTEST) tests/skaffold

.PHONY: k8s-test
k8s-test: $(VENV_STAMP) ## the cluster suite: on the local cluster (started if need be, as root), or on $$KUBECONFIG
	scripts/with-cluster $(PYTEST) tests/k8s -m k8s $(K8S_TEST_ARGS)
