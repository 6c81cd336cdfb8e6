# Image layer: the API image, built hermetically from uv.lock, and its tests.
# Included by the main Makefile, which defines PY, VENV_STAMP and PYTEST.
# IMAGE is the public name (`gatehouse-api:dev`); BASE_IMAGE picks another base.
IMAGE ?= gatehouse-api:dev
export IMAGE

.PHONY: image
image: $(VENV_STAMP) ## build the API image IMAGE (default gatehouse-api:dev) with its SBOM; starts dockerd if needed
	@scripts/build-image

.PHONY: test-image
test-image: $(VENV_STAMP) ## image tests: build, run it as the chart does (read-only, no caps, any uid), SIGTERM drain
	$(PYTEST) tests/image

.PHONY: image-sbom
image-sbom: ## print the SBOM baked into IMAGE (CycloneDX JSON)
	@docker run --rm --network none --entrypoint cat $(IMAGE) /usr/share/doc/gatehouse/sbom.cdx.json

.PHONY: docker-engine-stop
docker-engine-stop: ## stop the dockerd that scripts/docker-engine started (never another one)
	@scripts/docker-engine stop
