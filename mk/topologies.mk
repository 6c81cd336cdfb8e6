# Topology layer: the shared limit on a real Redis Cluster, Sentinel and TLS Redis, all on
# loopback (tests/topologies), and the capacity model (bench/capacity.py).
# Included by the main Makefile, which defines PY, VENV_STAMP and PYTEST.
TOPOLOGY_DEPS := redis-server redis-sentinel

.PHONY: topology-deps
topology-deps: ## Debian packages the topology tests need (redis-server, redis-sentinel)
	@scripts/ensure-system-deps $(TOPOLOGY_DEPS)

# `make test` runs tests/topologies too: it needs redis-sentinel as well.
test: topology-deps

.PHONY: test-topologies
test-topologies: $(VENV_STAMP) topology-deps ## Redis Cluster, Sentinel and TLS: failover and resharding under load
	$(PYTEST) tests/topologies

.PHONY: capacity
capacity: $(VENV_STAMP) topology-deps ## measure CPU per request; write bench/results/capacity.md and capacity.png
	$(PY) -m bench.capacity
