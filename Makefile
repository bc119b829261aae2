# Two commands for a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint container-test clean vendor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed markers: reinstall when the packaging or the C engine's source changes
# (installing builds the extension in place; without a compiler it is skipped).
C_SOURCES := setup.py kastore/_ckastore.c kastore/include/kastore.c kastore/include/kastore.h

$(VENV)/.run-installed: pyproject.toml $(C_SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(C_SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/python -m app

# The browser tests drive Debian's Chromium through playwright; no browser is downloaded.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The PostgreSQL index's tests start Debian's server (initdb, pg_ctl) in a temporary folder.
INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) /usr/lib/postgresql/bin/initdb)
$(INITDB):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql

test: $(VENV)/.test-installed $(CHROMIUM) $(INITDB)
	$(BIN)/python -m pytest

# The reference kastore, installed aside (not into the venv) as the codec's baseline.
REFERENCE := .bench/reference
$(REFERENCE)/kastore: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --target $(REFERENCE) kastore==0.3.6

bench: $(VENV)/.test-installed $(REFERENCE)/kastore $(CHROMIUM) $(INITDB)
	$(BIN)/python benchmarks/codec_bench.py --reference $(REFERENCE)
	$(BIN)/python benchmarks/service_bench.py
	$(BIN)/python benchmarks/ui_bench.py
	$(BIN)/python benchmarks/http_bench.py
	$(BIN)/python benchmarks/compression_bench.py
	$(BIN)/python benchmarks/scale_bench.py

# The web UI's plotting library, vendored from npm with its licence: fetched again
# (needs npm), its package checked against the sha256 it was vendored from, and the
# copied files against app/static/vendor.sha256.
UPLOT_VERSION := 1.6.32
UPLOT_SHA256 := 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
vendor:
	set -e; work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	(cd "$$work" && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null); \
	echo "$(UPLOT_SHA256)  $$work/uplot-$(UPLOT_VERSION).tgz" | sha256sum --check --quiet; \
	tar -xzf "$$work/uplot-$(UPLOT_VERSION).tgz" -C "$$work"; \
	cp "$$work/package/dist/uPlot.iife.min.js" "$$work/package/dist/uPlot.min.css" app/static/; \
	cp "$$work/package/LICENSE" app/static/uPlot.LICENSE; \
	cd app/static && sha256sum --check vendor.sha256

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

container-test:
	bash tests/container/run.sh

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
