# Chart layer: helm lint for the defaults and every environment, then the offline chart
# tests (render, Kubernetes schemas, values schema refusals, restricted pods, checkov).
# Included by the main Makefile, which defines PY and VENV_STAMP.
HELM := scripts/helm
CHART_DIR := charts/gatehouse
CHART_ENVS := $(wildcard k8s/values-*.yaml)

.PHONY: chart-lint
chart-lint: $(VENV_STAMP) ## helm lint --strict: chart defaults and every k8s/values-*.yaml
	$(HELM) lint --strict $(CHART_DIR)
	@set -e; for values in $(CHART_ENVS); do \
		echo "$(HELM) lint --strict $(CHART_DIR) -f $$values"; \
		$(HELM) lint --strict --quiet $(CHART_DIR) -f $$values; \
	done

.PHONY: test-chart
test-chart: $(VENV_STAMP) ## chart tests: lint, render, schemas, restricted pods, checkov (no cluster)
	$(PY) -m pytest tests/chart

.PHONY: chart-render
chart-render: ## print the chart rendered for ENV (dev, staging, prod, local, local-b)
	@$(HELM) template gatehouse $(CHART_DIR) --namespace gatehouse-$(ENV) -f k8s/values-$(ENV).yaml
