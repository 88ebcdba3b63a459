# `make test` and `make serve` work on a fresh machine with only Python >= 3.11 and make:
# they create .venv, install segdash (editable, with the test extra) and every plugin under
# plugins/, and, for the browser tests, Debian's Chromium when no Chromium is found.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segdash-installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PORT ?= 5006

.PHONY: install test serve browser lint bench bench-batch bench-browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml $(PLUGINS)
	$(PY) -m pip install --quiet -e ".[test]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

install: $(STAMP)

# Playwright cannot download its own browser here; the tests use Debian's Chromium.
browser:
	@if [ -z "$$SEGDASH_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1; then \
		echo "Installing Chromium with apt for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

serve: $(STAMP)
	$(VENV)/bin/segdash serve --port $(PORT)

lint: $(STAMP)
	$(PY) -m ruff check segdash tests plugins

# segdash vs the scikit-image reference, side by side; `make bench BENCH_ARGS=--quick`
# for 512² and 1024² only (docs/performance.md).
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# segdash apply on an 8192 x 8192 RGB image: peak memory and megapixels/s (local, LocalCluster)
bench-batch: $(STAMP)
	$(PY) benchmarks/batch_memory.py

# mouse-up -> overlay drawn in Chromium on the served page, 1024² RGB, and where the time goes
bench-browser: $(STAMP) browser
	$(PY) benchmarks/latency_browser.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV)
