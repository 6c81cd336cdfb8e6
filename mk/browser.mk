# Browser layer: Debian's Chromium, driven by Playwright, against a real gatehouse
# process and two page origins on loopback (one allowed, one refused).
# Included by the main Makefile, which defines PYTEST and VENV_STAMP.

.PHONY: test-browser
test-browser: $(VENV_STAMP) ## real-browser tests (Debian's chromium); screenshots in tests/artefacts/browser/
	@scripts/ensure-system-deps chromium
	$(PYTEST) tests/browser
